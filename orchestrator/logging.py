"""structlog set-up: JSON lines for journald/files, a readable console in a TTY, secrets masked.

Redaction follows the one policy of :mod:`orchestrator.redaction` (secret keys, registered
secret values, secret-shaped text such as push URLs), applied before rendering.

Exceptions are rendered to text *before* redaction so a secret inside a traceback is masked too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

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

__all__ = [
    "MASK",
    "_trie_regex",
    "configure",
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
