"""structlog set-up: JSON lines for journald/files, a readable console in a TTY, secrets masked.

Redaction follows the one policy of :mod:`orchestrator.redaction` (secret keys, registered
secret values, secret-shaped text such as push URLs), applied before rendering.

Exceptions are rendered to text *before* redaction so a secret inside a traceback is masked too.

Bounded output (a flood must not fill the disk, whatever a caller sends):

* every string field longer than ``field_max_chars`` is cut, *after* redaction (a cut secret
  would no longer match its mask), with a ``…[+N chars]`` marker; a rendered exception gets
  four times as much;
* :class:`RepeatLimiter`: warnings and errors of one kind (the event name; for stdlib records
  the message with digits folded) pass ``repeat_burst`` times per ``repeat_interval_s``, the
  rest are counted and dropped; the next line of that kind says how many were dropped
  (``repeats_suppressed``), and :func:`flush_repeats` (a daemon task calls it) writes one
  ``log_repeats_suppressed`` line per kind whose flood stopped. 20,000 idle sockets once
  wrote 45 MB of identical error lines in 35 s.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from orchestrator.bounds import cap_text

# The policy itself (which keys, which values, which shapes) lives in orchestrator.redaction,
# shared with MQTT, HTTP and the store; these names stay importable from here.
from orchestrator.redaction import (
    MASK,
    _trie_regex,
    is_secret_key,
    mask_text,
    register_secret,
    register_secrets,
)
from orchestrator.redaction import redact as _redact

FIELD_MAX_CHARS = 4096
"""Default cap on one logged string field (``configure(field_max_chars=)``)."""
REPEAT_INTERVAL_S = 10.0
REPEAT_BURST = 20

__all__ = [
    "MASK",
    "FieldTruncator",
    "RepeatLimiter",
    "_trie_regex",
    "configure",
    "flush_repeats",
    "is_secret_key",
    "mask_text",
    "redact",
    "redact_processor",
    "register_secret",
    "register_secrets",
]


def redact(value: Any, key: str | None = None) -> Any:
    """Return ``value`` with secret keys and secret values masked (recursively), as text."""
    return _redact(value, key, stringify=True)


def redact_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    out: MutableMapping[str, Any] = {}
    for k, v in event_dict.items():
        out[k] = v if k == "event" and not isinstance(v, str) else redact(v, k)
    if isinstance(out.get("event"), str):
        out["event"] = mask_text(out["event"])
    return dict(out)


class FieldTruncator:
    """Cuts long string fields (nested ones too) to ``max_chars`` and long lists/mappings to
    ``max_items`` entries, with a marker."""

    def __init__(self, max_chars: int = FIELD_MAX_CHARS, max_items: int = 100) -> None:
        self.max_chars = max_chars
        self.max_items = max_items  # a list of 10,000 short names is as long as one long string

    def _cut(self, value: Any, limit: int, depth: int) -> Any:
        if isinstance(value, str):
            return cap_text(value, limit)
        if depth <= 0:
            return value
        items = self.max_items
        if isinstance(value, Mapping):
            out = {k: self._cut(v, limit, depth - 1) for k, v in list(value.items())[:items]}
            if len(value) > items:
                out["…"] = f"[+{len(value) - items} keys]"
            return out
        if isinstance(value, list | tuple):
            cut = [self._cut(v, limit, depth - 1) for v in list(value)[:items]]
            if len(value) > items:
                cut.append(f"…[+{len(value) - items} items]")
            return cut
        return value

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if self.max_chars <= 0:
            return event_dict
        for k, v in event_dict.items():
            if isinstance(v, str | Mapping | list | tuple):
                limit = self.max_chars * 4 if k == "exception" else self.max_chars
                event_dict[k] = self._cut(v, limit, 4)
        return event_dict


@dataclass(slots=True)
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0


_DIGITS = re.compile(r"\d+")
_SUMMARY_EVENT = "log_repeats_suppressed"


class RepeatLimiter(logging.Filter):
    """Rate-limits repeated warning/error lines per kind (see the module docstring).

    A filter on our handler, so it sees structlog events (``record.msg`` is the event dict)
    and stdlib records (uvicorn, asyncio) alike, after redaction and before rendering.
    """

    def __init__(
        self,
        interval_s: float = REPEAT_INTERVAL_S,
        burst: int = REPEAT_BURST,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1000,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.burst = burst
        self._clock = clock
        self._max_kinds = max_kinds
        self._windows: dict[tuple[int, str], _Window] = {}
        self._lock = threading.Lock()

    def _kind(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if isinstance(msg, dict):
            event = msg.get("event")
            return f"{record.name}:{event}" if isinstance(event, str) else record.name
        try:
            text = record.getMessage()
        except Exception:  # a broken %-format must not break logging
            text = str(msg)
        return f"{record.name}:{_DIGITS.sub('#', text[:120])}"

    def filter(self, record: logging.LogRecord) -> bool:
        if self.burst <= 0 or record.levelno < logging.WARNING:
            return True
        if isinstance(record.msg, dict) and record.msg.get("event") == _SUMMARY_EVENT:
            return True
        key = (record.levelno, self._kind(record))
        now = self._clock()
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                if len(self._windows) >= self._max_kinds:
                    self._evict(now)
                if len(self._windows) >= self._max_kinds:  # kinds invented per line share one
                    key = (record.levelno, "(too many kinds)")
                    w = self._windows.get(key)
                if w is None:
                    w = self._windows[key] = _Window(now)
            reported = 0
            if now - w.start >= self.interval_s:
                reported, w.start, w.passed, w.suppressed = w.suppressed, now, 0, 0
            if w.passed >= self.burst:
                w.suppressed += 1
                return False
            w.passed += 1
        if reported:
            self._annotate(record, reported)
        return True

    def _evict(self, now: float) -> None:
        for key, w in list(self._windows.items()):
            if now - w.start >= self.interval_s and not w.suppressed:
                del self._windows[key]

    def _annotate(self, record: logging.LogRecord, count: int) -> None:
        if isinstance(record.msg, dict):
            record.msg["repeats_suppressed"] = count
            record.msg["repeats_interval_s"] = self.interval_s
        else:
            record.msg = f"{record.getMessage()} [{count} similar lines suppressed]"
            record.args = ()

    def due(self) -> list[tuple[str, str, int]]:
        """(level, kind, count) of every finished window with suppressed lines; resets them."""
        now = self._clock()
        out: list[tuple[str, str, int]] = []
        with self._lock:
            for (level, kind), w in list(self._windows.items()):
                if now - w.start < self.interval_s:
                    continue
                if w.suppressed:
                    out.append((logging.getLevelName(level).lower(), kind, w.suppressed))
                del self._windows[(level, kind)]
        return out


_limiter: RepeatLimiter | None = None


def flush_repeats() -> int:
    """Write one summary line per kind whose suppressed lines were not reported yet."""
    limiter = _limiter
    if limiter is None:
        return 0
    due = limiter.due()
    logger = structlog.get_logger(__name__)
    for level, kind, count in due:
        logger.warning(
            _SUMMARY_EVENT, kind=kind, level_of=level, suppressed=count,
            interval_s=limiter.interval_s,
        )  # fmt: skip
    return len(due)


def _shared_processors(truncate: Processor | None = None) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # render exceptions to text first …
        redact_processor,  # … so that secrets inside them are masked too
        truncate or FieldTruncator(),  # after redaction: a cut secret would escape its mask
    ]


class _BrokerGoneIsAWarning(logging.Filter):
    """paho logs a broker that went away ("failed to receive on socket: ... reset by peer") at
    ERROR; our MQTT link reconnects by itself and logs the disconnect as a warning, so an
    ordinary broker restart must not put error lines in front of the operator (the short soak
    counted one as an unexpected error). Other MQTT library errors keep their level."""

    _GONE = ("failed to receive on socket", "failed to send on socket")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith(self._GONE):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: Any = None,
    *,
    field_max_chars: int = FIELD_MAX_CHARS,
    repeat_interval_s: float = REPEAT_INTERVAL_S,
    repeat_burst: int = REPEAT_BURST,
) -> None:
    """Configure structlog (and route stdlib logging through it). Idempotent.

    ``field_max_chars`` caps each string field; ``repeat_burst`` warning/error lines of one
    kind pass per ``repeat_interval_s`` (0 = no limit), see :class:`RepeatLimiter`."""
    global _limiter
    out = stream if stream is not None else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and hasattr(out, "isatty") and out.isatty())
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=False)
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_liveorch", False):
            root.removeHandler(h)
    handler._liveorch = True  # type: ignore[attr-defined]
    _limiter = RepeatLimiter(repeat_interval_s, repeat_burst)
    handler.addFilter(_limiter)
    truncate = FieldTruncator(field_max_chars)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Third-party loggers speak through stdlib; keep them quieter than ours.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "apscheduler", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    mqtt_lib = logging.getLogger("mqtt")  # aiomqtt's (and paho's) default logger
    if not any(isinstance(f, _BrokerGoneIsAWarning) for f in mqtt_lib.filters):
        mqtt_lib.addFilter(_BrokerGoneIsAWarning())
    # Route stdlib records (uvicorn, apscheduler) through the same redaction.
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=renderer,
        foreign_pre_chain=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            truncate,
        ],
        pass_foreign_args=False,
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(truncate),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(formatter)
