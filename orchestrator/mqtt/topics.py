"""MQTT topic names of the bridge (pure: no I/O, no clock); payloads are in orchestrator.payloads.

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

from dataclasses import dataclass

from orchestrator.names import TopicError, check_mqtt_prefix, is_valid_room_id
from orchestrator.payloads import snapshot_json  # re-exported: older callers import it here

__all__ = [
    "BRIDGE",
    "OFFLINE",
    "ONLINE",
    "CommandTarget",
    "TopicError",
    "Topics",
    "is_valid_room_id",
    "snapshot_json",
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
