"""Home Assistant MQTT discovery for the rooms (pure: no I/O, no clock).

With ``mqtt.ha_discovery = true`` the bridge publishes, retained, one Home Assistant device per
room with four entities, all reading the room's retained ``{prefix}/rooms/{room}/state`` JSON
and all unavailable while ``{prefix}/bridge/state`` is ``offline``:

* ``switch`` *order*: on = order ON. Home Assistant sends the room's ordinary JSON command
  (``start``/``stop``) to ``{prefix}/rooms/{room}/command`` through a ``command_template``, so
  the command takes the same path as any other client's: parsing, ACL (``client`` is
  ``homeassistant``), idempotency by id, ownership. The id is made unique by the template from
  the time and a random number.
* ``sensor`` *state*: the room state (an ``enum`` sensor), with job id, since, attempt, last
  error and alert as attributes.
* ``binary_sensor`` *on air*: the room is LIVE.
* ``binary_sensor`` *off air while scheduled* (``problem``): the order is ON and the room is not
  LIVE — the moments that count against the SLA.
* ``sensor`` *SLA today*: live / scheduled seconds of the UTC day in %, from the retained
  ``{prefix}/rooms/{room}/sla`` JSON the daemon publishes after each SLA flush (every minute)
  while discovery is on.

Discovery topics are ``{ha_prefix}/{component}/{node_id}/{object_id}/config`` with ``node_id``
derived from the bridge's own prefix, so two daemons with different prefixes never touch each
other's entities, and every topic of this bridge matches :attr:`HaDiscovery.config_filter`.
A removed room's configs are cleared with an empty retained payload.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.mqtt.topics import OFFLINE, ONLINE, Topics
from orchestrator.rooms.model import RoomState

__all__ = ["HA_CLIENT", "HaDiscovery", "sla_topic"]

HA_CLIENT = "homeassistant"
"""The ``client`` field of Home Assistant's commands (name it in ``[mqtt.acl]``)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# The JSON command Home Assistant publishes: `value` is payload_on/payload_off. The id must be
# unique per command (the bridge replays a known id instead of acting), and Home Assistant's
# templates have no counter: the time in ms plus two random draws (its sandbox caps range() at
# 100,000) are unique enough for a human flipping a switch.
_RANDOM = "{{ '%05d' % (range(100000) | random) }}"
_COMMAND_TEMPLATE = (
    '{"id": "ha-{{ (now().timestamp() * 1000) | int }}-' + _RANDOM + _RANDOM + '", '
    "\"action\": \"{{ 'start' if value == 'ON' else 'stop' }}\", "
    f'"client": "{HA_CLIENT}"}}'
)
_ATTRIBUTES_TEMPLATE = (
    "{{ {'job_id': value_json.job_id, 'since': value_json.since, 'attempt': value_json.attempt,"
    " 'last_error': value_json.last_error, 'alert': value_json.alert} | tojson }}"
)


def sla_topic(topics: Topics, room_id: str) -> str:
    """The retained ``{prefix}/rooms/{room}/sla`` topic (validates the room id)."""
    return topics.room_state(room_id).removesuffix("/state") + "/sla"


def _safe(text: str) -> str:
    """``text`` in Home Assistant's id alphabet; a short hash keeps mapped ids distinct
    (room ``a.b`` and room ``a_b`` must not share an entity)."""
    safe = _UNSAFE.sub("_", text)
    if safe == text:
        return safe
    return f"{safe}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


@dataclass(frozen=True, slots=True)
class HaDiscovery:
    """Discovery topics and payloads of one bridge."""

    topics: Topics
    ha_prefix: str
    version: str

    @property
    def node_id(self) -> str:
        return _safe(self.topics.prefix)

    @property
    def config_filter(self) -> str:
        """Matches every discovery config this bridge may have published (for stale ones)."""
        return f"{self.ha_prefix}/+/{self.node_id}/+/config"

    def is_config_topic(self, topic: str) -> bool:
        parts = topic.split("/")
        head = self.ha_prefix.split("/")
        return (
            len(parts) == len(head) + 4
            and parts[: len(head)] == head
            and parts[len(head) + 1] == self.node_id
            and parts[-1] == "config"
        )

    def _topic(self, component: str, room_id: str, key: str) -> str:
        return f"{self.ha_prefix}/{component}/{self.node_id}/{_safe(room_id)}_{key}/config"

    def configs(self, room_id: str, name: str | None = None) -> dict[str, dict[str, Any]]:
        """``topic → config`` for one room's entities."""
        state = self.topics.room_state(room_id)  # validates the room id
        uid = f"liveorch_{self.node_id}_{_safe(room_id)}"
        common: dict[str, Any] = {
            "availability_topic": self.topics.bridge_state,
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "state_topic": state,
            "device": {
                "identifiers": [uid],
                "name": name or room_id,
                "manufacturer": "liveorch",
                "model": "MetaStudio live room",
                "sw_version": self.version,
            },
            "origin": {"name": "liveorch", "sw_version": self.version},
            "qos": 1,
        }

        def entity(key: str, name: str, **fields: Any) -> dict[str, Any]:
            return {**common, "name": name, "unique_id": f"{uid}_{key}",
                    "object_id": f"{uid}_{key}", **fields}  # fmt: skip

        return {
            self._topic("switch", room_id, "order"): entity(
                "order",
                "Order",
                command_topic=self.topics.room_command(room_id),
                command_template=_COMMAND_TEMPLATE,
                value_template="{{ value_json.order }}",
                payload_on="ON",
                payload_off="OFF",
                state_on="ON",
                state_off="OFF",
                retain=False,
                icon="mdi:broadcast",
            ),
            self._topic("sensor", room_id, "state"): entity(
                "state",
                "State",
                value_template="{{ value_json.state }}",
                device_class="enum",
                options=[s.value for s in RoomState],
                json_attributes_topic=state,
                json_attributes_template=_ATTRIBUTES_TEMPLATE,
                icon="mdi:state-machine",
            ),
            self._topic("binary_sensor", room_id, "on_air"): entity(
                "on_air",
                "On air",
                value_template="{{ 'ON' if value_json.state == 'LIVE' else 'OFF' }}",
                payload_on="ON",
                payload_off="OFF",
                device_class="running",
            ),
            self._topic("binary_sensor", room_id, "off_air_scheduled"): entity(
                "off_air_scheduled",
                "Off air while scheduled",
                value_template=(
                    "{{ 'ON' if value_json.order == 'ON' and value_json.state != 'LIVE'"
                    " else 'OFF' }}"
                ),
                payload_on="ON",
                payload_off="OFF",
                device_class="problem",
            ),
            self._topic("sensor", room_id, "sla_today"): entity(
                "sla_today",
                "SLA today",
                state_topic=sla_topic(self.topics, room_id),
                value_template="{{ value_json.percent }}",  # None (nothing scheduled): unknown
                unit_of_measurement="%",
                state_class="measurement",
                suggested_display_precision=2,
                json_attributes_topic=sla_topic(self.topics, room_id),
                icon="mdi:percent-circle",
            ),
        }

    def payloads(self, rooms: Iterable[tuple[str, str | None]]) -> dict[str, bytes]:
        """``topic → retained payload`` for every ``(room_id, name)``."""
        out: dict[str, bytes] = {}
        for room_id, name in rooms:
            for topic, config in self.configs(room_id, name).items():
                out[topic] = _dumps(config)
        return out


def _dumps(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()
