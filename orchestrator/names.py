"""Names the configuration and the MQTT bridge must agree on (pure: no I/O, no third party).

``settings`` validates a room id, the MQTT prefix and the ACL's action names at load time;
``mqtt.topics`` and ``mqtt.commands`` route on the same rules. Both import them from here, so
the settings module needs no adapter to check its input (it imported ``mqtt.topics`` and
``mqtt.commands`` inside its validators before) and the rules cannot drift apart.
"""

from __future__ import annotations

import re

__all__ = [
    "BRIDGE_ACTION_NAMES",
    "ROOM_ACTION_NAMES",
    "TopicError",
    "check_mqtt_prefix",
    "is_valid_room_id",
]

# MetaStudio room ids are 1-128 of [A-Za-z0-9_.-]; they become one MQTT topic segment.
ROOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

ROOM_ACTION_NAMES = frozenset(
    {
        "start",
        "stop",
        "restart",
        "refresh_output",
        "set_output",
        "reset",
        "pause_schedule",
        "resume_schedule",
        "add_window",
        "skip_next_window",
        "insert_script",
        "get",
    }
)
"""Actions of ``{prefix}/rooms/{room}/command`` (``mqtt.commands.ROOM_ACTIONS`` checks it has
exactly these at import)."""
BRIDGE_ACTION_NAMES = frozenset({"list_rooms", "reload"})
"""Actions of ``{prefix}/bridge/command``."""


class TopicError(ValueError):
    """A topic or prefix that the bridge refuses (wildcards, empty or unexpected segments)."""


def is_valid_room_id(room_id: str) -> bool:
    return bool(ROOM_ID.match(room_id))


def check_mqtt_prefix(prefix: str) -> str:
    """``prefix`` if it is '/'-separated segments of [A-Za-z0-9_.-], else :class:`TopicError`."""
    parts = prefix.split("/")
    if not all(_PREFIX_SEGMENT.match(p) for p in parts) or prefix.startswith("$"):
        raise TopicError(f"MQTT prefix {prefix!r} must be '/'-separated segments of [A-Za-z0-9_.-]")
    return prefix
