"""The one redaction policy: what of a value may leave the process (logs, MQTT, HTTP, store).

Every exit uses :func:`redact` (structured data) or :func:`mask_text` (free text), so a secret
masked in the log is masked on MQTT, in ``/rooms`` and in a stored ``last_error`` too. A
cloud error message is free text the daemon does not control: it may quote the request it
refused, stream key included.

* by key: any field whose name looks secret (``sk``, ``password``, ``stream_key``,
  ``callbackKey``, ``token``, ``authorization``, ``signature``, ``cookie`` …) has its value
  replaced by ``"***"`` wherever it appears, nested dicts and lists included;
* by value: every secret registered with :func:`register_secret` (the loaded AK/SK, stream
  keys, callback keys, MQTT password, tokens) is replaced by ``"***"`` inside any string;
* by shape, inside free text: the stream key part of a push URL (``rtmp://host/app/<key>``,
  its query), the password of a URL's userinfo, ``stream_key=…``/``"token": "…"`` pairs and
  ``Bearer …`` credentials.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from datetime import date, time, timedelta
from enum import Enum
from typing import Any

from pydantic import SecretStr

__all__ = [
    "MASK",
    "is_secret_key",
    "mask_text",
    "redact",
    "register_secret",
    "register_secrets",
]

MASK = "***"

_NAMES = (  # names of fields that hold secrets
    r"sk|ak|secret|password|passwd|passphrase|token|stream_?key|key|apikey|authorization|"
    r"cookie|hwsecret|x-hw-mss-secret|x-auth-token|x-subject-token|credential|signature"
)
_SECRET_KEY = re.compile(rf"(^|[_\-.])({_NAMES})s?($|[_\-.])", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Keys that contain "key" but are not secrets.
_NOT_SECRET_KEYS = frozenset(
    {"dedupe_key", "window_key", "sort_key", "key_id", "keys_loaded", "reply_key"}
)

# --- shapes inside free text --------------------------------------------------------------
# A push URL: everything after the host's last "/" is (or may be) the stream key.
_STREAM_URL = re.compile(
    r"(?P<head>\b(?:rtmps?|rtmpt|srt|rtsp)://[^\s/\"'<>?#]+)(?P<path>/[^\s\"'<>?#]*)?"
    r"(?P<query>\?[^\s\"'<>#]*)?",
    re.IGNORECASE,
)
# userinfo of any URL: scheme://user:password@host
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^\s/:@\"'<>]*):[^\s/@\"'<>]+@", re.I)
# "stream_key": "v", stream_key=v, token: v, Signature=v (a secret-looking name, then a value)
_PAIR = re.compile(
    # not after "." or "/": a file name such as room.r2.stream_key followed by ": reason" is
    # a path in a message, not a key = value pair
    rf"(?<![./])(?P<name>\b(?:[a-z0-9]+[_\-])*(?:{_NAMES})s?)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>[^\s\"',;&}\]]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask this exact string wherever it appears from now on (logs, MQTT, HTTP, store)."""
    register_secrets((value,))


def register_secrets(values: Iterable[str | None]) -> None:
    """Register many at once: the pattern is compiled once per call, not once per value
    (per value made startup O(n^2): 2,000 rooms' stream keys took over a minute)."""
    global _pattern
    new = {v for v in values if v and len(v) >= 4}  # shorter: masking would destroy text
    with _lock:
        if new <= _secrets:
            return
        _secrets.update(new)
        _pattern = re.compile(_trie_regex(_secrets))


def _trie_regex(words: Iterable[str]) -> str:
    """One regex matching any of ``words``, longest first, factored as a prefix trie.

    A flat ``a|b|c…`` alternation makes ``re`` try every secret at every position of every
    logged string: with 4,000 secrets (2,000 rooms) that was ~280 us per 100-character string,
    several ms per log line. The trie fails after a character or two instead.
    """
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # end of a word

    def build(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:  # a word ends here but longer ones go on: greedy optional = longest match
            body = "(?:" + body + ")?"
        return body

    return build(trie)


def is_secret_key(key: str) -> bool:
    """Does a field of this name hold a secret? (``streamKey`` and ``stream_key`` alike.)"""
    if key.lower() in _NOT_SECRET_KEYS:
        return False
    return bool(_SECRET_KEY.search(_CAMEL.sub("_", key)))


def _stream_url(m: re.Match[str]) -> str:
    path = m.group("path") or ""
    if path.strip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0] + "/" + MASK
    return m.group("head") + path + ("?" + MASK if m.group("query") else "")


def _pair(m: re.Match[str]) -> str:
    name = m.group("name")
    if not is_secret_key(name) or m.group("value") == MASK:
        return m.group(0)
    return name + m.group("sep") + MASK


# Cheap substring tests (C speed) decide which of the shape regexes can match at all: this
# runs on every string of every log line, and most strings hold none of these.
_PAIR_HINT = re.compile("key|token|pass|secret|auth|sign|cookie|credential|sk|ak")


def mask_text(text: str) -> str:
    """``text`` with registered secrets and secret-shaped parts replaced by ``"***"``."""
    pat = _pattern
    if pat is not None:
        text = pat.sub(MASK, text)
    low = text.lower()
    if "://" in text:
        if "@" in text:
            text = _URL_USERINFO.sub(r"\1:" + MASK + "@", text)
        if "rtmp" in low or "srt://" in low or "rtsp://" in low:
            text = _STREAM_URL.sub(_stream_url, text)
    if "bearer " in low or "basic " in low:  # before the pairs: "Authorization: Bearer <token>"
        text = _BEARER.sub(lambda m: m.group(1) + " " + MASK, text)
    if ("=" in text or ":" in text) and _PAIR_HINT.search(low):
        text = _PAIR.sub(_pair, text)
    return text


def redact(value: Any, key: str | None = None, *, stringify: bool = False) -> Any:
    """``value`` with secret keys and secrets inside text masked (recursively).

    JSON-able structures keep their shape: numbers, datetimes and enums are returned as they
    are (``stringify``, the log renderer's choice, turns datetimes and enums into text too);
    any other object becomes its masked text.
    """
    if key is not None and is_secret_key(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k), stringify=stringify) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, stringify=stringify) for v in value]
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, bytes | bytearray):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    if value is None or isinstance(value, bool | int | float):
        return value
    if not stringify and isinstance(value, date | time | timedelta | Enum):
        return value  # rendered by the caller's JSON encoder; nothing secret in them
    return mask_text(str(value))
