"""Home Assistant MQTT discovery: the retained configs on the real mosquitto, the switch's
command through the ordinary command path, and the configs of removed rooms cleared.

Home Assistant itself is not installable here: its templates are rendered with Jinja2 (the
engine Home Assistant uses, sandboxed like there) against the bridge's real state payloads, and
the rendered switch command is published exactly as Home Assistant would publish it.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest
from jinja2.sandbox import SandboxedEnvironment

from orchestrator.mqtt.commands import parse_command
from orchestrator.mqtt.discovery import HaDiscovery
from orchestrator.mqtt.topics import CommandTarget, Topics, snapshot_json
from orchestrator.rooms.model import Order, RoomState, Snapshot
from orchestrator.settings import MqttSettings
from tests.support.mqtt_bridge import BridgeRunner, Watcher, watching
from tests.support.mqtt_fakes import RecordingControl


def _render(template: str, **variables: Any) -> str:
    env = SandboxedEnvironment()
    env.globals["now"] = lambda: datetime.now(UTC)  # Home Assistant's now()
    return env.from_string(template).render(**variables)


def _config_topics(ha_prefix: str, prefix: str, room_id: str) -> set[str]:
    return {
        f"{ha_prefix}/switch/{prefix}/{room_id}_order/config",
        f"{ha_prefix}/sensor/{prefix}/{room_id}_state/config",
        f"{ha_prefix}/binary_sensor/{prefix}/{room_id}_on_air/config",
        f"{ha_prefix}/binary_sensor/{prefix}/{room_id}_off_air_scheduled/config",
        f"{ha_prefix}/sensor/{prefix}/{room_id}_sla_today/config",
    }


@pytest.fixture
def ha_prefix(prefix: str) -> str:
    return f"{prefix}-ha"


@pytest.fixture
async def ha_watch(
    require_service: Callable[[str], None], ha_prefix: str
) -> AsyncIterator[Watcher]:
    """Subscribed to the test's discovery prefix; clears what it saw retained at teardown."""
    require_service("mosquitto")
    async with watching(ha_prefix) as w:
        yield w
        # configs reach a live subscriber without the retain flag: clear every topic seen
        with contextlib.suppress(aiomqtt.MqttError):
            for t in sorted({m.topic.value for m in w.messages}):
                await w.client.publish(t, b"", qos=1, retain=True)


async def _configs(w: Watcher, topics: set[str]) -> dict[str, dict[str, Any]]:
    got: dict[str, dict[str, Any]] = {}
    for t in sorted(topics):
        m = await w.wait_for(lambda m, t=t: m.topic.value == t and bool(m.payload))
        got[t] = json.loads(m.payload)
    return got


async def _cleared(w: Watcher, topics: set[str]) -> None:
    for t in sorted(topics):
        await w.wait_for(lambda m, t=t: m.topic.value == t and m.payload == b"")


# --- the payloads (pure) ----------------------------------------------------------------


def test_discovery_is_off_by_default_and_its_prefix_is_validated() -> None:
    s = MqttSettings()
    assert s.ha_discovery is False and s.ha_discovery_prefix == "homeassistant"
    with pytest.raises(ValueError, match="ha_discovery_prefix"):
        MqttSettings(ha_discovery_prefix="homeassistant/#")


def test_templates_read_the_real_state_payload() -> None:
    ha = HaDiscovery(Topics.for_prefix("liveorch"), "homeassistant", "1.2.3")
    configs = ha.configs("room-a", "Shop A")
    by_key = {t.split("/")[-2].removeprefix("room-a_"): c for t, c in configs.items()}

    def state(state: RoomState, order: Order) -> dict[str, Any]:
        snap = Snapshot(room_id="room-a", state=state, order=order, job_id="j1", since=None,
                        attempt=2, next_retry_at=None, last_error="push stalled",
                        alert=None)  # fmt: skip
        return json.loads(json.dumps(snapshot_json(snap)))

    live, down, idle = (
        state(RoomState.LIVE, Order.ON),
        state(RoomState.RESTARTING, Order.ON),
        state(RoomState.IDLE, Order.OFF),
    )
    vt = {k: c["value_template"] for k, c in by_key.items()}
    assert [_render(vt["order"], value_json=s) for s in (live, idle)] == ["ON", "OFF"]
    assert _render(vt["state"], value_json=down) == "RESTARTING"
    assert _render(vt["state"], value_json=down) in by_key["state"]["options"]
    assert [_render(vt["on_air"], value_json=s) for s in (live, down)] == ["ON", "OFF"]
    scheduled = vt["off_air_scheduled"]
    assert [_render(scheduled, value_json=s) for s in (live, down, idle)] == ["OFF", "ON", "OFF"]
    sla = by_key["sla_today"]
    assert sla["state_topic"] == "liveorch/rooms/room-a/sla"
    # what the daemon publishes there (orchestrator.upkeep.SlaBook); None = unknown
    for pct, shown in ((99.5, "99.5"), (None, "None")):
        body = {"day": "2026-12-03", "scheduled_s": 600.0, "live_s": 597.0, "percent": pct}
        assert _render(sla["value_template"], value_json=body) == shown
    attrs = json.loads(_render(by_key["state"]["json_attributes_template"], value_json=down))
    assert attrs == {"job_id": "j1", "since": None, "attempt": 2,
                     "last_error": "push stalled", "alert": None}  # fmt: skip


def test_switch_template_renders_a_valid_unique_command() -> None:
    ha = HaDiscovery(Topics.for_prefix("liveorch"), "homeassistant", "1.2.3")
    switch = next(c for t, c in ha.configs("room-a").items() if "/switch/" in t)
    target = CommandTarget("room-a")
    on = parse_command(_render(switch["command_template"], value="ON").encode(), target)
    off = parse_command(_render(switch["command_template"], value="OFF").encode(), target)
    assert (on.action, off.action) == ("start", "stop")
    assert on.client == off.client == "homeassistant"
    ids = {on.id, off.id}
    ids |= {parse_command(_render(switch["command_template"], value="ON").encode(), target).id
            for _ in range(50)}  # fmt: skip
    assert len(ids) == 52, "two switch flips must never share a command id"


def test_room_ids_that_map_to_the_same_object_id_stay_distinct() -> None:
    ha = HaDiscovery(Topics.for_prefix("site/a"), "homeassistant", "1")
    a, b = ha.configs("a.b"), ha.configs("a_b")
    assert not set(a) & set(b)
    assert {c["unique_id"] for c in a.values()}.isdisjoint(c["unique_id"] for c in b.values())
    assert all(ha.is_config_topic(t) for t in [*a, *b])
    assert not ha.is_config_topic("homeassistant/switch/other/a_b_order/config")


# --- against the real mosquitto -----------------------------------------------------------


async def test_each_room_is_announced_retained_with_device_and_availability(
    watcher: Watcher, ha_watch: Watcher, bridges: BridgeRunner, prefix: str, ha_prefix: str
) -> None:
    control = RecordingControl(rooms=["room-a", "room-b"])
    bridge, _, _ = bridges.make(control=control, ha_discovery=True, ha_discovery_prefix=ha_prefix)
    await bridges.start(bridge)
    expected = _config_topics(ha_prefix, prefix, "room-a") | _config_topics(
        ha_prefix, prefix, "room-b"
    )
    await _configs(ha_watch, expected)

    # a subscriber arriving later (Home Assistant restarting) gets them from the broker
    async with watching(ha_prefix) as late:
        got = await _configs(late, expected)
        assert all(m.retain for m in late.messages if m.topic.value in expected)
    assert set(got) == expected
    uids = [c["unique_id"] for c in got.values()]
    assert len(set(uids)) == len(uids) == 10
    for topic, c in got.items():
        room = "room-a" if "/room-a_" in topic else "room-b"
        assert c["availability_topic"] == f"{prefix}/bridge/state"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        leaf = "sla" if topic.endswith("_sla_today/config") else "state"
        assert c["state_topic"] == f"{prefix}/rooms/{room}/{leaf}"
        assert c["device"]["identifiers"] == [f"liveorch_{prefix}_{room}"]
        assert c["device"]["name"] == room and c["device"]["sw_version"] == "test"
    switch = got[f"{ha_prefix}/switch/{prefix}/room-a_order/config"]
    assert switch["command_topic"] == f"{prefix}/rooms/room-a/command"
    # the entities' availability topic says online, their state topic has the room's JSON
    await watcher.wait_topic(f"{prefix}/bridge/state", "online")
    state = await watcher.wait_topic(f"{prefix}/rooms/room-a/state")
    assert _render(switch["value_template"], value_json=json.loads(state.payload)) == "OFF"


async def test_the_switch_starts_and_stops_through_the_command_path(
    watcher: Watcher, ha_watch: Watcher, bridges: BridgeRunner, prefix: str, ha_prefix: str
) -> None:
    # with an ACL, Home Assistant's commands pass only for the actions it is given
    control = RecordingControl(rooms=["room-a"])
    bridge, _, store = bridges.make(
        control=control,
        ha_discovery=True,
        ha_discovery_prefix=ha_prefix,
        acl={"homeassistant": ["start", "stop"]},
    )
    await bridges.start(bridge)
    topic = f"{ha_prefix}/switch/{prefix}/room-a_order/config"
    switch = (await _configs(ha_watch, {topic}))[topic]

    for value, method in (("ON", "start"), ("OFF", "stop")):
        body = _render(switch["command_template"], value=value)
        # as Home Assistant publishes: plain MQTT, no response topic, not retained
        await watcher.client.publish(switch["command_topic"], body.encode(), qos=1)
        reply = await watcher.wait_reply(f"{switch['command_topic']}/reply", json.loads(body)["id"])
        assert reply["status"] == "ok", reply
        call = control.calls[-1]
        assert (call.method, call.room_id) == (method, "room-a")
        assert call.kwargs["cause"] == f"mqtt:homeassistant:{json.loads(body)['id']}"
        assert json.loads(body)["id"] in store.answers  # stored like every command: idempotent


async def test_configs_of_a_room_removed_by_reload_are_cleared(
    watcher: Watcher, ha_watch: Watcher, bridges: BridgeRunner, prefix: str, ha_prefix: str
) -> None:
    control = RecordingControl(rooms=["room-a", "room-b"])
    bridge, _, _ = bridges.make(control=control, ha_discovery=True, ha_discovery_prefix=ha_prefix)
    await bridges.start(bridge)
    gone = _config_topics(ha_prefix, prefix, "room-b")
    await _configs(ha_watch, gone)

    control.rooms.remove("room-b")  # the config file lost it; the reload command applies it
    await watcher.send(f"{prefix}/bridge/command", {"id": "rl-1", "action": "reload"})
    await watcher.wait_reply(f"{prefix}/bridge/command/reply", "rl-1")
    await _cleared(ha_watch, gone)
    # room-a's configs are still retained on the broker
    async with watching(ha_prefix) as late:
        kept = await _configs(late, _config_topics(ha_prefix, prefix, "room-a"))
        assert len(kept) == 5


async def test_configs_of_a_room_removed_while_the_daemon_was_down_are_cleared(
    ha_watch: Watcher, bridges: BridgeRunner, prefix: str, ha_prefix: str
) -> None:
    first, _, _ = bridges.make(
        control=RecordingControl(rooms=["room-a", "room-b"]),
        ha_discovery=True,
        ha_discovery_prefix=ha_prefix,
    )
    task = await bridges.start(first)
    gone = _config_topics(ha_prefix, prefix, "room-b")
    await _configs(ha_watch, gone)
    await bridges.stop(task)

    # restarted with room-b removed from the config: its retained configs come back from the
    # broker on subscribe and are cleared; a foreign node's config is left alone
    foreign = f"{ha_prefix}/switch/other-node/room-b_order/config"
    client = aiomqtt.Client("127.0.0.1", 1883, identifier=f"{prefix}-{uuid.uuid4().hex[:6]}")
    async with client:
        await client.publish(foreign, b'{"name": "not ours"}', qos=1, retain=True)
        try:
            second, _, _ = bridges.make(
                control=RecordingControl(rooms=["room-a"]),
                ha_discovery=True,
                ha_discovery_prefix=ha_prefix,
            )
            await bridges.start(second)
            await _cleared(ha_watch, gone)
            assert not [m for m in ha_watch.messages if m.topic.value == foreign and not m.payload]
        finally:
            await client.publish(foreign, b"", qos=1, retain=True)
