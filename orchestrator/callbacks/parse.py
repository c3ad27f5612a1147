"""Callback body → typed :class:`CallbackEvent` (metastudio-api.md §6.2). Pure.

The body is ``{"event_type": str, "message": str}`` where ``message`` is itself a JSON-encoded
object (double-encoded). Unknown event types and unknown keys are kept (``raw``,
``unknown_fields``), never fatal: the service may add fields at any time. Wrong shapes raise
:class:`CallbackParseError` with a stable ``reason``.

``stream_key`` inside an RTMP message is a secret: it is replaced by ``"***"`` in ``raw`` so it
never reaches a log line or the inbox table.

Dedupe key and event time
-------------------------
The payload carries no event time, so :func:`event_time` uses ``hwTime`` (the service's signing
time, authenticated) when present, else the receive time truncated to the second.
:func:`dedupe_key` is ``v1|job|type|discriminator|unix-seconds`` with the discriminator being the
RTMP state (+ a hash of the output URL: a job may push to several outputs), the script
``scene#sequence`` or the ``reply_id``. Consequences, chosen deliberately:

* a byte-identical redelivery (HTTP retry re-sending the same signed request, an MQTT QoS 1
  redelivery from the relay, an attacker replaying a capture) collapses in the durable inbox;
* genuine repeated transitions CONNECTED→DISCONNECTED→CONNECTED stay distinct because they differ
  in state from their neighbours and in time from each other;
* a *re-signed* retry (new ``hwTime``) does not collapse here: the receiver additionally
  suppresses an event equal to the last one applied for the same job/stream within a retry window
  (see ``receiver.StreamTracker``), which is harmless for state reports (same state twice is a
  no-op) and exactly what a retry is;
* the same state twice within one second for one output (a sub-second flap) collapses: the room's
  poll/re-read covers that corner.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.errors import OrchestratorError
from orchestrator.redaction import MASK

__all__ = [
    "EVENT_REPLY",
    "EVENT_RTMP",
    "EVENT_SCRIPT",
    "KNOWN_FIELDS",
    "RTMP_STATES",
    "CallbackEvent",
    "CallbackParseError",
    "dedupe_key",
    "discriminator",
    "event_from_message",
    "event_time",
    "parse_body",
    "peek_ids",
]

EVENT_RTMP = "RTMP_STREAM_STATE_CHANGE"
EVENT_SCRIPT = "SHOOT_SCRIPT_SWITCH"
EVENT_REPLY = "REPLY_COMMAND_FINISH"
RTMP_STATES = frozenset({"CONNECTING", "CONNECTED", "DISCONNECTED", "RECONNECTING", "END"})
REDACTED = MASK  # the one redaction policy's mask (orchestrator.redaction)

KNOWN_FIELDS: Mapping[str, frozenset[str]] = {
    EVENT_RTMP: frozenset({"room_id", "job_id", "output_url", "stream_key", "state"}),
    EVENT_SCRIPT: frozenset(
        {
            "room_id",
            "job_id",
            "scene_script_name",
            "shoot_script_sequence_no",
            "shoot_script_title",
            "product_id",
            "product_title",
            "live_id",
        }
    ),
    EVENT_REPLY: frozenset({"room_id", "job_id", "reply_id"}),
}
_COMMON = frozenset({"room_id", "job_id"})


class CallbackParseError(OrchestratorError):
    """The body is not a well-formed callback. ``reason`` is a stable snake_case code."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed callback: {reason}")


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One decoded callback. Fields not meaningful for ``event_type`` are None."""

    event_type: str
    room_id: str | None
    job_id: str | None
    state: str | None = None  # RTMP_STREAM_STATE_CHANGE
    output_url: str | None = None
    scene_script_name: str | None = None  # SHOOT_SCRIPT_SWITCH
    shoot_script_sequence_no: str | None = None
    shoot_script_title: str | None = None
    reply_id: str | None = None  # REPLY_COMMAND_FINISH
    raw: Mapping[str, Any] = field(default_factory=dict)
    """The decoded ``message`` (stream_key masked)."""
    unknown_fields: tuple[str, ...] = ()
    """Keys of ``message`` we do not know for this event type (recorded, not fatal)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Top-level body keys other than event_type/message."""

    @property
    def known_type(self) -> bool:
        return self.event_type in KNOWN_FIELDS


def _opt_str(msg: Mapping[str, Any], name: str, *, numeric_ok: bool = False) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if numeric_ok and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise CallbackParseError(f"{name}_not_string")


def event_from_message(
    event_type: str, message: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> CallbackEvent:
    """Build the typed event from an already-decoded ``message`` object (also used on replay)."""
    if not isinstance(event_type, str) or not event_type:
        raise CallbackParseError("event_type_missing")
    room_id = _opt_str(message, "room_id")
    job_id = _opt_str(message, "job_id") or None
    raw = dict(message)
    if "stream_key" in raw and raw["stream_key"] is not None:
        raw["stream_key"] = REDACTED
    known = KNOWN_FIELDS.get(event_type, _COMMON)
    unknown = tuple(sorted(k for k in message if k not in known))
    kw: dict[str, Any] = {}
    if event_type == EVENT_RTMP:
        if job_id is None:
            raise CallbackParseError("job_id_missing")
        state = _opt_str(message, "state")
        if not state:
            raise CallbackParseError("state_missing")
        kw = {"state": state, "output_url": _opt_str(message, "output_url")}
    elif event_type == EVENT_SCRIPT:
        kw = {
            "scene_script_name": _opt_str(message, "scene_script_name"),
            "shoot_script_sequence_no": _opt_str(
                message, "shoot_script_sequence_no", numeric_ok=True
            ),
            "shoot_script_title": _opt_str(message, "shoot_script_title"),
        }
    elif event_type == EVENT_REPLY:
        reply_id = _opt_str(message, "reply_id", numeric_ok=True)
        if not reply_id:
            raise CallbackParseError("reply_id_missing")
        kw = {"reply_id": reply_id}
    return CallbackEvent(
        event_type=event_type,
        room_id=room_id or None,
        job_id=job_id,
        raw=raw,
        unknown_fields=unknown,
        extra=dict(extra or {}),
        **kw,
    )


def _load_json(data: bytes | str, reason: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: not a callback
        raise CallbackParseError(reason) from None


def parse_body(body: bytes) -> CallbackEvent:
    """Decode and validate a callback body; raise :class:`CallbackParseError` when malformed."""
    doc = _load_json(body, "body_not_json")
    if not isinstance(doc, dict):
        raise CallbackParseError("body_not_object")
    event_type = doc.get("event_type")
    if event_type is None or event_type == "":
        raise CallbackParseError("event_type_missing")
    if not isinstance(event_type, str):
        raise CallbackParseError("event_type_not_string")
    if "message" not in doc:
        raise CallbackParseError("message_missing")
    message = doc["message"]
    if not isinstance(message, str):
        raise CallbackParseError("message_not_string")
    decoded = _load_json(message, "message_not_json")
    if not isinstance(decoded, dict):
        raise CallbackParseError("message_not_object")
    extra = {k: v for k, v in doc.items() if k not in ("event_type", "message")}
    _check_text((event_type, decoded, extra))
    return event_from_message(event_type, decoded, extra)


def _check_text(value: Any) -> None:
    """Refuse text no store or exposition can hold: a lone surrogate (``"\\ud800"`` is valid
    JSON, not valid UTF-8) and NUL (PostgreSQL text/jsonb refuse it). Let through, one such
    callback failed the whole group commit of the inbox and, as a metric label, every scrape.
    Iterative: the parsed JSON may nest as deep as the parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise CallbackParseError("nul_character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise CallbackParseError("invalid_unicode") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def peek_ids(body: bytes) -> tuple[str | None, str | None]:
    """Best-effort (room_id, job_id) from an *unverified* body, only to choose the HMAC key.

    Never raises: a body that cannot be read simply yields (None, None) and the global keys
    are used; the strict parse happens after authentication.
    """
    try:
        doc = json.loads(body)
        msg = json.loads(doc["message"]) if isinstance(doc, dict) else None
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        return None, None
    if not isinstance(msg, dict):
        return None, None
    room, job = msg.get("room_id"), msg.get("job_id")
    return (room if isinstance(room, str) and room else None), (
        job if isinstance(job, str) and job else None
    )


def event_time(hw_time_s: int | None, received_at: datetime) -> datetime:
    """The event's time: ``hwTime`` when the callback was signed, else receive time (whole s)."""
    if hw_time_s is not None:
        return datetime.fromtimestamp(hw_time_s, tz=UTC)
    return received_at.astimezone(UTC).replace(microsecond=0)


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def discriminator(event: CallbackEvent) -> str:
    """What distinguishes two events of one job and type apart from time."""
    if event.event_type == EVENT_RTMP:
        return f"{event.state}@{_h(event.output_url or '')}"
    if event.event_type == EVENT_SCRIPT:
        return f"{event.scene_script_name or ''}#{event.shoot_script_sequence_no or ''}"
    if event.event_type == EVENT_REPLY:
        return f"reply:{event.reply_id}"
    return "m:" + _h(json.dumps(event.raw, sort_keys=True, default=str))


def dedupe_key(event: CallbackEvent, at: datetime) -> str:
    """Durable dedupe key (see the module docstring for what collapses and what does not)."""
    parts = [
        "v1",
        event.job_id or f"room:{event.room_id or '-'}",
        event.event_type,
        discriminator(event),
        str(int(at.timestamp())),
    ]
    return "|".join(parts)
