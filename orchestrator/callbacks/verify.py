"""MSS_A / MSS_A_HEAD callback authentication (metastudio-api.md §6.3). Pure: ``now`` is passed in.

The service signs ``hwSecret = hex(HMAC-SHA256(key, URI(callback_url) + hwTime))`` with
``hwTime = hex(unix seconds)``. ``MSS_A`` appends ``hwSecret``/``hwTime`` to the callback URL's
query; ``MSS_A_HEAD`` sends them as ``x-hw-mss-secret``/``x-hw-mss-time`` headers.

Choices made here (the docs leave them open, see §13):

* ``URI`` is configurable: ``path`` = the path component only (the default, CDN "type-A" style),
  ``full`` = the whole callback URL as configured, *without* the ``hwSecret``/``hwTime`` that
  MSS_A appends.
* ``hwTime`` may use upper- or lower-case hex digits (1‥16 of them, no ``0x``, no sign): we parse
  it for the freshness check but sign the string *exactly as received*, because that is what the
  sender signed. ``hwSecret`` must be 64 hex digits; it is lower-cased and compared with our
  (lower-case) hex digest by :func:`hmac.compare_digest`.
* Freshness: ``|now - hwTime| <= tolerance_s`` (default 300 s) refuses replays of old captures
  and callbacks signed by a badly skewed clock; a time more than ``max_future_s`` ahead of now
  (default 30 s of clock skew) is refused too: an accepted future time would order the job's
  genuine callbacks behind it.
* Key rotation: every non-empty key in ``keys`` (current, previous) is tried; all are computed so
  the time taken does not reveal which key matched.

What this does NOT cover: the body. A valid signature only proves that someone holding the key
produced *this URI at this time*; the event inside the body could have been swapped by anyone who
captured a request within the tolerance. That is why callbacks are hints only: the room re-reads
the job through the signed API before it acts on them (DESIGN.md, principle 1).

Every :class:`CallbackAuthError` carries a short ``reason`` that is safe to log: never a key, a
received signature or the expected one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from orchestrator.errors import OrchestratorError

__all__ = [
    "AUTH_PARAMS",
    "AuthType",
    "CallbackAuthError",
    "UriMode",
    "auth_values",
    "callback_uri",
    "mss_signature",
    "parse_hw_time",
    "strip_auth_params",
    "verify_callback",
]

AuthType = Literal["NONE", "MSS_A", "MSS_A_HEAD"]
UriMode = Literal["path", "full"]

AUTH_PARAMS = ("hwSecret", "hwTime")
HEADER_SECRET = "x-hw-mss-secret"  # noqa: S105 - a header name, not a secret
HEADER_TIME = "x-hw-mss-time"

_HEX_TIME = re.compile(r"[0-9a-fA-F]{1,16}")
_HEX_SIG = re.compile(r"[0-9a-fA-F]{64}")

HeaderSource = Mapping[str, str] | Iterable[tuple[str, str]]


class CallbackAuthError(OrchestratorError):
    """A callback failed authentication. ``reason`` is a stable snake_case code, safe to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"callback authentication failed: {reason}")


def mss_signature(key: str, uri: str, hw_time: str) -> str:
    """Lower-case hex HMAC-SHA256 keyed with ``key`` (UTF-8) over ``uri + hw_time``."""
    msg = (uri + hw_time).encode("utf-8")
    return hmac.new(key.encode("utf-8"), msg, hashlib.sha256).hexdigest()


def _split_query(raw_query: str) -> list[tuple[str, str, str]]:
    """(decoded name, decoded value, raw component) for each ``&``-separated query component."""
    out: list[tuple[str, str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        out.append((unquote_plus(name), unquote_plus(value), part))
    return out


def strip_auth_params(raw_query: str) -> str:
    """The query without ``hwSecret``/``hwTime``; other components keep their order and encoding."""
    return "&".join(raw for name, _, raw in _split_query(raw_query) if name not in AUTH_PARAMS)


def callback_uri(url_or_path: str, mode: UriMode) -> str:
    """The ``URI(callback_url)`` that is signed.

    ``path``: the path component (``/`` when empty); a bare path is accepted as is.
    ``full``: the URL with ``hwSecret``/``hwTime`` removed from its query (no dangling ``?``).
    """
    if mode == "path" and url_or_path.startswith("/"):  # already a path (maybe "//x")
        return url_or_path.partition("?")[0].partition("#")[0]
    parts = urlsplit(url_or_path)
    if mode == "path":
        return parts.path or "/"
    if mode == "full":
        return urlunsplit(parts._replace(query=strip_auth_params(parts.query)))
    raise ValueError(f"unknown uri mode {mode!r}")


def parse_hw_time(hw_time: str) -> int:
    """Unix seconds from ``hwTime`` (1-16 hex digits, either case)."""
    if not _HEX_TIME.fullmatch(hw_time):
        raise CallbackAuthError("bad_time_format")
    return int(hw_time, 16)


def _header_lists(headers: HeaderSource) -> dict[str, list[str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, list[str]] = {}
    for name, value in items:
        out.setdefault(name.lower(), []).append(value)
    return out


def _single(values: list[str] | None, what: str) -> str:
    if not values:
        raise CallbackAuthError(f"missing_{what}")
    if len(values) > 1:
        raise CallbackAuthError(f"duplicate_{what}")
    value = values[0].strip()
    if not value:
        raise CallbackAuthError(f"missing_{what}")
    return value


def auth_values(auth_type: str, raw_query: str, headers: HeaderSource) -> tuple[str, str]:
    """(hwSecret, hwTime) from where ``auth_type`` puts them; refuses missing or repeated ones."""
    if auth_type == "MSS_A":
        found: dict[str, list[str]] = {}
        for name, value, _ in _split_query(raw_query):
            if name in AUTH_PARAMS:
                found.setdefault(name, []).append(value)
        return _single(found.get("hwSecret"), "signature"), _single(found.get("hwTime"), "time")
    if auth_type == "MSS_A_HEAD":
        h = _header_lists(headers)
        return _single(h.get(HEADER_SECRET), "signature"), _single(h.get(HEADER_TIME), "time")
    raise CallbackAuthError("auth_type_unsupported")


def _as_unix(now: float | datetime) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


def verify_callback(
    *,
    auth_type: str,
    path: str,
    raw_query: str,
    headers: HeaderSource,
    keys: Sequence[str],
    uri_mode: UriMode,
    full_url: str | None,
    now: float | datetime,
    tolerance_s: float = 300.0,
    allow_none: bool = False,
    max_future_s: float | None = None,
) -> None:
    """Return when the callback is authentic; raise :class:`CallbackAuthError` otherwise.

    ``path``/``raw_query`` are the request's own; ``full_url`` is the callback URL as configured
    (the one MetaStudio was told), needed only for ``uri_mode="full"``. ``keys`` are tried in
    order (current, previous); empty entries are ignored.
    """
    if auth_type == "NONE":
        if not allow_none:
            raise CallbackAuthError("auth_none_not_allowed")
        return
    if auth_type not in ("MSS_A", "MSS_A_HEAD"):
        raise CallbackAuthError("auth_type_unsupported")
    secret, hw_time = auth_values(auth_type, raw_query, headers)
    if not _HEX_SIG.fullmatch(secret):
        raise CallbackAuthError("bad_signature_format")
    t = parse_hw_time(hw_time)
    if abs(_as_unix(now) - t) > tolerance_s:
        raise CallbackAuthError("time_out_of_tolerance")
    if max_future_s is not None and t - _as_unix(now) > max_future_s:
        raise CallbackAuthError("time_in_future")
    usable = [k for k in keys if k]
    if not usable:
        raise CallbackAuthError("no_key_configured")
    if uri_mode == "full":
        if not full_url:
            raise CallbackAuthError("full_url_unknown")
        uri = callback_uri(full_url, "full")
    else:
        uri = callback_uri(path, "path")
    received = secret.lower().encode("ascii")
    matched = False
    for key in usable:
        expected = mss_signature(key, uri, hw_time).encode("ascii")
        matched |= hmac.compare_digest(expected, received)
    if not matched:
        raise CallbackAuthError("signature_mismatch")
