"""MQTT topic names and payload shapes of the bridge (pure: no I/O, no clock).

Every topic lives under one prefix (default ``liveorch``)::

    {prefix}/bridge/state            retained "online" / "offline" (birth message + LWT)
    {prefix}/bridge/info             retained JSON: version, rooms, config summary (no secrets)
    {prefix}/bridge/command          bridge-wide commands (list_rooms, reload)
    {prefix}/rooms/{room}/state      retained JSON snapshot of one room
    {prefix}/rooms/{room}/events     non-retained transitions, alerts, script switches
    {prefix}/rooms/{room}/command    room commands
    {command topic}/reply            replies when the command carried no v5 response topic

Incoming topics are parsed strictly: anything that is not exactly one of the two command shapes,
or whose room id is not a valid room id, is refused here so the bridge never routes on a guess
(no ``endswith`` dispatch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from orchestrator.names import TopicError, check_mqtt_prefix, is_valid_room_id
from orchestrator.rooms.model import Snapshot

__all__ = [
    "BRIDGE",
    "OFFLINE",
    "ONLINE",
    "CommandTarget",
    "TopicError",
    "Topics",
    "alert_event",
    "is_valid_room_id",
    "script_event",
    "snapshot_json",
    "transition_event",
    "validate_publish_topic",
]

ONLINE = "online"
OFFLINE = "offline"
BRIDGE = "bridge"
"""Lane/target name used for bridge-wide commands (not a valid room id clash: rooms are
addressed only under ``rooms/``)."""


def validate_publish_topic(topic: str) -> str:
    """Return ``topic`` if a client may publish to it (non-empty, no wildcards, no NUL)."""
    if not topic or any(c in topic for c in "+#\x00") or len(topic.encode()) > 65535:
        raise TopicError("not a publishable topic name")
    return topic


@dataclass(frozen=True, slots=True)
class CommandTarget:
    """Where a command was sent: the bridge (``room_id`` None) or one room."""

    room_id: str | None

    @property
    def lane(self) -> str:
        """Commands in the same lane run strictly in order (one room, or the bridge)."""
        return BRIDGE if self.room_id is None else f"room:{self.room_id}"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one prefix. Build with :meth:`for_prefix` to validate the prefix."""

    prefix: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Topics:
        return cls(check_mqtt_prefix(prefix))

    @property
    def bridge_state(self) -> str:
        return f"{self.prefix}/bridge/state"

    @property
    def bridge_info(self) -> str:
        return f"{self.prefix}/bridge/info"

    @property
    def bridge_command(self) -> str:
        return f"{self.prefix}/bridge/command"

    @property
    def room_command_filter(self) -> str:
        """Subscription filter matching every room's command topic."""
        return f"{self.prefix}/rooms/+/command"

    def _room(self, room_id: str, leaf: str) -> str:
        if not is_valid_room_id(room_id):
            raise TopicError("invalid room id")
        return f"{self.prefix}/rooms/{room_id}/{leaf}"

    def room_state(self, room_id: str) -> str:
        return self._room(room_id, "state")

    def room_events(self, room_id: str) -> str:
        return self._room(room_id, "events")

    def room_command(self, room_id: str) -> str:
        return self._room(room_id, "command")

    @staticmethod
    def default_reply(command_topic: str) -> str:
        """Reply topic for clients without an MQTT v5 response topic."""
        return f"{command_topic}/reply"

    def command_filters(self) -> tuple[str, str]:
        return (self.room_command_filter, self.bridge_command)

    def parse_command_topic(self, topic: str) -> CommandTarget:
        """Map an incoming command topic to its target, or raise :class:`TopicError`.

        Accepts exactly ``{prefix}/bridge/command`` and ``{prefix}/rooms/{room}/command`` with a
        valid room id; wildcards, extra/missing segments and foreign prefixes are refused.
        """
        if any(c in topic for c in "+#\x00"):
            raise TopicError("wildcards are not allowed in a topic name")
        if topic == self.bridge_command:
            return CommandTarget(None)
        head = f"{self.prefix}/rooms/"
        if not topic.startswith(head):
            raise TopicError("not a command topic of this bridge")
        rest = topic[len(head) :].split("/")
        if len(rest) != 2 or rest[1] != "command":
            raise TopicError("expected rooms/{room}/command")
        if not is_valid_room_id(rest[0]):
            raise TopicError("invalid room id in topic")
        return CommandTarget(rest[0])


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    """The retained ``rooms/{room}/state`` payload for a :class:`Snapshot`.

    Core keys always appear (``null`` when unknown); ``extra`` (e.g. ``sla`` counters) is merged
    in without overriding a core key.
    """
    core: dict[str, Any] = {
        "room_id": snap.room_id,
        "state": str(snap.state),
        "order": str(snap.order),
        "job_id": snap.job_id,
        "since": _iso(snap.since),
        "attempt": snap.attempt,
        "next_retry_at": _iso(snap.next_retry_at),
        "last_error": snap.last_error,
        "alert": snap.alert,
    }
    extra: Mapping[str, object] = snap.extra
    return {**{k: v for k, v in extra.items() if k not in core}, **core}


# --- rooms/{room}/events payloads: one "type" per kind, always room_id + at -----------------


def transition_event(
    room_id: str,
    *,
    from_state: str,
    to_state: str,
    event: str,
    at: datetime,
    cause: str = "",
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A state-machine transition (``event`` is the event class name, e.g. ``JobObserved``)."""
    return {
        "type": "transition",
        "room_id": room_id,
        "at": at.isoformat(),
        "from": from_state,
        "to": to_state,
        "event": event,
        "cause": cause,
        "detail": dict(detail or {}),
    }


def alert_event(
    room_id: str,
    *,
    kind: str,
    status: Literal["SET", "CLEARED"],
    at: datetime,
    message: str = "",
) -> dict[str, Any]:
    """An alert raised (``SET``) or cleared (``CLEARED``); ``kind`` is stable (e.g. quarantined)."""
    return {
        "type": "alert",
        "room_id": room_id,
        "at": at.isoformat(),
        "kind": kind,
        "status": status,
        "message": message,
    }


def script_event(
    room_id: str, *, job_id: str | None, at: datetime, detail: Mapping[str, Any]
) -> dict[str, Any]:
    """The job switched script/scene (from a live-event callback); ``detail`` as reported."""
    return {
        "type": "script",
        "room_id": room_id,
        "at": at.isoformat(),
        "job_id": job_id,
        "detail": dict(detail),
    }
