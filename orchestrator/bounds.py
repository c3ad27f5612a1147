"""Bounds for values that come from outside: metric labels, stored free text, log fields.

Anything a caller (a callback sender, the cloud, an MQTT client) chooses must not decide how
much memory, disk or log we spend. Three tools, pure and cheap:

* :class:`LabelSet`: a metric label value is one of a known set, else ``"other"``; values
  that are not known in advance (cloud error codes) are admitted up to a fixed number of
  distinct ones, then ``"other"``, so one label never grows past a few dozen series;
* :func:`cap_text`: a string cut to a length, with a marker saying how much was cut;
* :func:`cap_json`: a JSON value kept under a byte budget: long strings cut first, then long
  lists and mappings, then everything but a marker — the result is always valid JSON.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["OTHER", "TRUNCATED_KEY", "LabelSet", "cap_json", "cap_text", "json_size"]

OTHER = "other"
TRUNCATED_KEY = "_truncated_from_bytes"
"""Set in a mapping that :func:`cap_json` had to shrink: the original size in bytes."""

_LABEL_SAFE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class LabelSet:
    """Maps outside values onto a bounded set of metric label values.

    ``known`` values always pass. With ``learn`` > 0, up to that many other distinct values
    that look like identifiers (``[A-Za-z0-9_.:-]``, at most 64 chars) are admitted the first
    time they are seen (cloud error codes are not all known in advance); every other value is
    ``"other"``. Thread-safe (prometheus_client may be called from threads).
    """

    def __init__(self, known: Iterable[str], *, learn: int = 0) -> None:
        self._known = frozenset(known)
        self._learn = learn
        self._learned: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = value if isinstance(value, str) else str(value)
        if text in self._known or text in self._learned:
            return text
        if self._learn <= 0 or not _LABEL_SAFE.match(text):
            return OTHER
        with self._lock:
            if len(self._learned) < self._learn:
                self._learned.add(text)
                return text
        return OTHER


def cap_text(text: str, max_chars: int) -> str:
    """``text`` cut to about ``max_chars`` characters, ending in ``…[+N chars]`` when cut."""
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}…[+{len(text) - max_chars} chars]"


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what a JSON column roughly stores)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return 1 << 62  # not serialisable as-is: treat as too large, cap_json rebuilds it
    return len(text.encode("utf-8", "surrogatepass"))


def _shrink(
    value: Any, str_max: int, items_max: int, depth: int, first: frozenset[str] = frozenset()
) -> Any:
    if isinstance(value, str):
        return cap_text(value, str_max)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth <= 0:
        return cap_text(str(value), str_max) if not isinstance(value, Mapping | list) else None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        items = sorted(value.items(), key=lambda kv: kv[0] not in first)  # stable
        for k, v in items[:items_max]:
            out[cap_text(str(k), 64)] = _shrink(v, str_max, items_max, depth - 1, first)
        return out
    if isinstance(value, list | tuple):
        return [_shrink(v, str_max, items_max, depth - 1, first) for v in list(value)[:items_max]]
    return cap_text(str(value), str_max)


def cap_json(value: Any, max_bytes: int, *, first: Iterable[str] = ()) -> Any:
    """``value`` unchanged if its JSON fits ``max_bytes``, else a smaller copy that does.

    A shrunk mapping carries :data:`TRUNCATED_KEY` (the original size). When entries must go,
    keys named in ``first`` (at any depth) are kept before the others, which keep their
    order. ``max_bytes`` <= 0: no cap.
    """
    keep = frozenset(first)
    if max_bytes <= 0:
        return value
    size = json_size(value)
    if size <= max_bytes:
        return value
    for str_max, items_max, depth in ((1024, 64, 6), (256, 32, 4), (64, 16, 3), (32, 8, 2)):
        small = _shrink(value, str_max, items_max, depth, keep)
        if isinstance(small, dict):
            small = {TRUNCATED_KEY: size, **small}
        if json_size(small) <= max_bytes:
            return small
    return {TRUNCATED_KEY: size} if isinstance(value, Mapping) else None
