"""structlog set-up: JSON lines for journald/files, a readable console in a TTY, secrets masked.

Redaction works in two ways, both before rendering:

* by key: any field whose name looks secret (``sk``, ``password``, ``stream_key``, ``token``,
  ``hwSecret`` …) is replaced by ``"***"`` wherever it appears, nested dicts and lists included;
* by value: every secret string registered with :func:`register_secret` (the loaded AK/SK,
  stream keys, callback keys, MQTT password, tokens) is replaced by ``"***"`` inside any string,
  including rendered exception text.

Exceptions are rendered to text *before* redaction so a secret inside a traceback is masked too.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

MASK = "***"

_SECRET_KEY = re.compile(
    r"(^|_|-)(sk|ak|secret|password|passwd|token|stream_?key|key|authorization|"
    r"hwsecret|x-hw-mss-secret|x-auth-token|x-subject-token|credential|signature)s?($|_|-)",
    re.IGNORECASE,
)
# Keys that contain "key" but are not secrets.
_NOT_SECRET_KEYS = frozenset({"dedupe_key", "window_key", "sort_key", "key_id", "keys_loaded"})

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask this exact string wherever it appears in a log line from now on."""
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
    return key.lower() not in _NOT_SECRET_KEYS and bool(_SECRET_KEY.search(key))


def mask_text(text: str) -> str:
    pat = _pattern
    return pat.sub(MASK, text) if pat is not None else text


def redact(value: Any, key: str | None = None) -> Any:
    """Return ``value`` with secret keys and registered secret values masked (recursively)."""
    if key is not None and is_secret_key(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_text(str(value))


def redact_processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    out: MutableMapping[str, Any] = {}
    for k, v in event_dict.items():
        out[k] = v if k == "event" and not isinstance(v, str) else redact(v, k)
    if isinstance(out.get("event"), str):
        out["event"] = mask_text(out["event"])
    return dict(out)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,  # render exceptions to text first …
        redact_processor,  # … so that secrets inside them are masked too
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
) -> None:
    """Configure structlog (and route stdlib logging through it). Idempotent."""
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
        ],
        pass_foreign_args=False,
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(formatter)
