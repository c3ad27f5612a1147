"""Parse and validate MQTT command payloads into typed, frozen commands (pure).

A command is one JSON object ``{"id": "...", "action": "...", ...}`` sent to a room's command
topic or to the bridge's. Parsing never guesses: unknown fields, wrong types and naive
timestamps are refused with :class:`CommandRejected` carrying a stable ``code`` and, for payload
errors, the offending ``field`` path. Nothing is executed here; each command knows which
:class:`~orchestrator.control.Control` method it maps to (:meth:`Command.apply`), and the bridge
decides when to call it.

Error codes: ``bad_json``, ``bad_payload`` (with ``field``), ``unknown_action``,
``unknown_room``, ``expired``, ``clock_skew``, ``forbidden``, ``retained_ignored``,
``payload_too_large``, ``reply_topic_refused``, ``internal``, plus any
:class:`~orchestrator.control.CommandError` code raised by Control, passed through unchanged.

Secrets: ``set_output.stream_key`` is a :class:`~pydantic.SecretStr`; replies go through the
one redaction policy (:mod:`orchestrator.redaction`: secret keys, registered secrets and
secret-shaped text such as push URLs inside error messages), and :meth:`Command.log_fields`
never includes payload values.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.control import CommandError, Control
from orchestrator.mqtt.topics import CommandTarget
from orchestrator.names import BRIDGE_ACTION_NAMES, ROOM_ACTION_NAMES
from orchestrator.redaction import mask_text, redact

__all__ = [
    "BRIDGE_ACTIONS",
    "ROOM_ACTIONS",
    "AddWindow",
    "Command",
    "CommandRejected",
    "Get",
    "InsertScript",
    "ListRooms",
    "PauseSchedule",
    "RefreshOutput",
    "Reload",
    "Reset",
    "Restart",
    "ResumeSchedule",
    "SetOutput",
    "SkipNextWindow",
    "Start",
    "Stop",
    "check_acl",
    "check_fresh",
    "error_reply",
    "ok_reply",
    "parse_command",
    "peek_id",
    "redact",
    "reply_key",
]

_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def reply_key(room_id: str | None, action: str, command_id: str) -> str:
    """The reply store key of one (room, action, id); see :attr:`Command.reply_key`."""
    triple = json.dumps([room_id, action, command_id], separators=(",", ":"))
    return "cmd:" + hashlib.sha256(triple.encode()).hexdigest()


class CommandRejected(CommandError):
    """A command refused before (or instead of) reaching Control.

    ``command_id`` is the payload's id when it could be read, so the reply can still be matched.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        command_id: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(code, message)
        self.command_id = command_id
        self.field = field


class Command(BaseModel):
    """Fields common to every command. ``room_id`` comes from the topic, never the payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: ClassVar[str]
    read_only: ClassVar[bool] = False
    """Read-only commands are answered fresh every time (their replies are not stored)."""

    id: str
    client: str | None = Field(default=None, min_length=1, max_length=64)
    expires_at: AwareDatetime | None = None
    sent_at: AwareDatetime | None = None
    room_id: str | None = None

    @field_validator("id", "client")
    @classmethod
    def _check_token(cls, v: str | None) -> str | None:
        # both end up in audit causes and log fields: no spaces, control or non-ASCII characters
        if v is not None and not _ID.match(v):
            raise ValueError("must be 1-128 printable ASCII characters without spaces")
        return v

    @property
    def reply_key(self) -> str:
        """Idempotency key of this command in the reply store: (room, action, id).

        An id is only unique per room and action: a panel reusing ``X1`` for another room or
        action must act, not be answered with the other command's stored reply. Hashed so the
        key has a fixed length (room and id may each be 128 characters) and no separator in an
        id can make two triples collide.
        """
        return reply_key(self.room_id, self.action, self.id)

    @property
    def cause(self) -> str:
        """Audit string handed to Control (who asked, which command)."""
        who = f"{self.client}:" if self.client else ""
        return f"mqtt:{who}{self.id}"

    def log_fields(self) -> dict[str, Any]:
        """Safe structlog fields: identifiers only, never payload values."""
        return {
            "command_id": self.id,
            "action": self.action,
            "room_id": self.room_id,
            "client": self.client,
        }

    def _room(self) -> str:
        if self.room_id is None:  # parse_command guarantees it for room actions
            raise CommandRejected("internal", "room command without a room", command_id=self.id)
        return self.room_id

    async def apply(self, control: Control) -> Mapping[str, Any]:
        """Call the Control method this command maps to and return its data."""
        raise NotImplementedError


class Start(Command):
    action: ClassVar[str] = "start"
    until: AwareDatetime | None = None

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.start(self._room(), until=self.until, cause=self.cause)


class Stop(Command):
    action: ClassVar[str] = "stop"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.stop(self._room(), cause=self.cause)


class Restart(Command):
    action: ClassVar[str] = "restart"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.restart(self._room(), cause=self.cause)


class RefreshOutput(Command):
    action: ClassVar[str] = "refresh_output"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.refresh_output(self._room(), cause=self.cause)


class SetOutput(Command):
    action: ClassVar[str] = "set_output"
    url: str = Field(min_length=1, max_length=2048)
    stream_key: SecretStr = Field(max_length=1024)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not re.match(r"^rtmps?://[^\s/]+/\S*$", v):
            raise ValueError("must be an rtmp:// or rtmps:// URL")
        return v

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.set_output(
            self._room(),
            url=self.url,
            stream_key=self.stream_key.get_secret_value(),
            cause=self.cause,
        )


class Reset(Command):
    action: ClassVar[str] = "reset"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.reset(self._room(), cause=self.cause)


class PauseSchedule(Command):
    action: ClassVar[str] = "pause_schedule"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.pause_schedule(self._room(), cause=self.cause)


class ResumeSchedule(Command):
    action: ClassVar[str] = "resume_schedule"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.resume_schedule(self._room(), cause=self.cause)


class AddWindow(Command):
    action: ClassVar[str] = "add_window"
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> AddWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.add_window(
            self._room(), start=self.start, end=self.end, cause=self.cause
        )


class SkipNextWindow(Command):
    action: ClassVar[str] = "skip_next_window"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.skip_next_window(self._room(), cause=self.cause)


class InsertScript(Command):
    action: ClassVar[str] = "insert_script"
    text: str = Field(min_length=1, max_length=131072)
    play_type: Literal["APPEND", "INSERT", "PLAY_NOW"] = "PLAY_NOW"
    """Default mirrors MetaStudio's own default for INSERT_PLAY_SCRIPT."""

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.insert_script(
            self._room(), text=self.text, play_type=self.play_type, cause=self.cause
        )


class Get(Command):
    action: ClassVar[str] = "get"
    read_only: ClassVar[bool] = True

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return control.room_state(self._room())


class ListRooms(Command):
    action: ClassVar[str] = "list_rooms"
    read_only: ClassVar[bool] = True

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return {"rooms": list(control.room_ids())}


class Reload(Command):
    action: ClassVar[str] = "reload"

    async def apply(self, control: Control) -> Mapping[str, Any]:
        return await control.reload(cause=self.cause)


def _table(*classes: type[Command]) -> Mapping[str, type[Command]]:
    return {c.action: c for c in classes}


ROOM_ACTIONS: Mapping[str, type[Command]] = _table(
    Start,
    Stop,
    Restart,
    RefreshOutput,
    SetOutput,
    Reset,
    PauseSchedule,
    ResumeSchedule,
    AddWindow,
    SkipNextWindow,
    InsertScript,
    Get,
)
BRIDGE_ACTIONS: Mapping[str, type[Command]] = _table(ListRooms, Reload)
# settings checks the ACL against the names in orchestrator.names (it must not import this
# adapter): a command added here without its name there would be refused by every ACL.
if set(ROOM_ACTIONS) != ROOM_ACTION_NAMES or set(BRIDGE_ACTIONS) != BRIDGE_ACTION_NAMES:
    raise RuntimeError("mqtt.commands and orchestrator.names disagree on the action names")


def peek_id(payload: bytes) -> str | None:
    """Best-effort command id of a payload we refuse early (so the reply can carry it)."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    cid = obj.get("id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) and _ID.match(cid) else None


def _field_path(loc: Sequence[int | str]) -> str:
    return ".".join(str(p) for p in loc) or "(payload)"


def parse_command(payload: bytes, target: CommandTarget) -> Command:
    """Validate one command payload sent to ``target``; raise :class:`CommandRejected`."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is refused too
        raise CommandRejected("bad_json", "payload is not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise CommandRejected("bad_payload", "payload must be a JSON object", field="(payload)")
    raw_id = obj.get("id")
    cid = raw_id if isinstance(raw_id, str) and _ID.match(raw_id) else None
    action = obj.get("action")
    if not isinstance(action, str):
        raise CommandRejected(
            "bad_payload", "action: must be a string", command_id=cid, field="action"
        )
    table = BRIDGE_ACTIONS if target.room_id is None else ROOM_ACTIONS
    cls = table.get(action)
    if cls is None:
        where = "bridge" if target.room_id is None else "room"
        known = ", ".join(sorted(table))
        raise CommandRejected(
            "unknown_action",
            f"unknown {where} action {action[:64]!r}; expected one of: {known}",
            command_id=cid,
        )
    if "room_id" in obj:
        raise CommandRejected(
            "bad_payload",
            "room_id: the room is addressed by the topic, not the payload",
            command_id=cid,
            field="room_id",
        )
    data = {k: v for k, v in obj.items() if k != "action"}
    data["room_id"] = target.room_id
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        path = _field_path(first["loc"])
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = f"unknown field for action {action!r}"
        raise CommandRejected("bad_payload", f"{path}: {msg}", command_id=cid, field=path) from None


def check_fresh(cmd: Command, *, now: datetime, max_age_s: float, max_skew_s: float = 30.0) -> None:
    """Refuse a command past its ``expires_at``, whose ``sent_at`` is older than max age, or
    whose ``sent_at`` lies more than ``max_skew_s`` ahead of ``now`` (a future ``sent_at``
    would pass the age check for as long as the sender likes)."""
    if cmd.expires_at is not None and now >= cmd.expires_at:
        raise CommandRejected("expired", "command expired (expires_at)", command_id=cmd.id)
    if cmd.sent_at is not None and cmd.sent_at - now > timedelta(seconds=max_skew_s):
        raise CommandRejected(
            "clock_skew",
            f"sent_at is more than {max_skew_s:g} s ahead of the daemon's clock",
            command_id=cmd.id,
        )
    if cmd.sent_at is not None and now - cmd.sent_at > timedelta(seconds=max_age_s):
        raise CommandRejected(
            "expired",
            f"command sent more than {max_age_s:g} s ago (sent_at)",
            command_id=cmd.id,
        )


def check_acl(cmd: Command, acl: Mapping[str, Sequence[str]]) -> None:
    """Empty ACL allows everything; otherwise ``client`` must be listed with the action or "*"."""
    if not acl:
        return
    if cmd.client is None:
        raise CommandRejected(
            "forbidden", "this bridge requires a 'client' field (ACL)", command_id=cmd.id
        )
    allowed = acl.get(cmd.client)
    if allowed is None or (cmd.action not in allowed and "*" not in allowed):
        raise CommandRejected(
            "forbidden",
            f"client {cmd.client!r} may not use action {cmd.action!r}",
            command_id=cmd.id,
        )


def ok_reply(command_id: str | None, data: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": command_id, "status": "ok", "data": redact(dict(data)), "error": None}


def error_reply(
    command_id: str | None, code: str, message: str, *, field: str | None = None
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": mask_text(message)}
    if field is not None:
        err["field"] = field
    return {"id": command_id, "status": "error", "data": {}, "error": err}
