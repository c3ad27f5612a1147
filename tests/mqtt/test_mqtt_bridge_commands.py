"""The bridge against the real mosquitto: birth, replies, validation, idempotency, ordering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from structlog.testing import capture_logs

from orchestrator.control import CommandError
from orchestrator.mqtt.commands import reply_key
from orchestrator.rooms.model import Order, RoomState, Snapshot
from orchestrator.store.sql import SqlStore
from tests.support.mqtt_bridge import BridgeRunner, Watcher
from tests.support.mqtt_fakes import MemoryReplyStore, RecordingControl


def _room_cmd(prefix: str, room: str = "room-a") -> str:
    return f"{prefix}/rooms/{room}/command"


async def test_birth_publishes_online_info_and_room_states(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    control = RecordingControl(rooms=["room-a", "room-b"])
    await bridges.run(control=control, username="svc", password="hunter2-secret")
    await watcher.wait_topic(f"{prefix}/bridge/state", "online")
    info = await watcher.wait_topic(f"{prefix}/bridge/info")
    assert info.retain is False or info.retain is True  # live delivery; content matters
    body = json.loads(info.payload)
    assert body["version"] == "test"
    assert body["rooms"] == ["room-a", "room-b"]
    assert body["config"]["authenticated"] is True
    assert "hunter2" not in info.payload.decode()
    for room in ("room-a", "room-b"):
        m = await watcher.wait_topic(f"{prefix}/rooms/{room}/state")
        assert json.loads(m.payload)["state"] == "IDLE"


@pytest.mark.parametrize(
    ("body", "method", "kwargs"),
    [
        ({"action": "start"}, "start", {"until": None}),
        (
            {"action": "start", "until": "2026-11-25T20:00:00+08:00"},
            "start",
            {"until": datetime(2026, 11, 25, 12, tzinfo=UTC)},
        ),
        ({"action": "stop"}, "stop", {}),
        ({"action": "restart"}, "restart", {}),
        ({"action": "refresh_output"}, "refresh_output", {}),
        (
            {"action": "set_output", "url": "rtmp://push.example/live/", "stream_key": "k-1"},
            "set_output",
            {"url": "rtmp://push.example/live/", "stream_key": "k-1"},
        ),
        ({"action": "reset"}, "reset", {}),
        ({"action": "pause_schedule"}, "pause_schedule", {}),
        ({"action": "resume_schedule"}, "resume_schedule", {}),
        (
            {"action": "add_window", "start": "2026-12-01T10:00:00Z", "end": "2026-12-01T12:00Z"},
            "add_window",
            {
                "start": datetime(2026, 12, 1, 10, tzinfo=UTC),
                "end": datetime(2026, 12, 1, 12, tzinfo=UTC),
            },
        ),
        ({"action": "skip_next_window"}, "skip_next_window", {}),
        ({"action": "insert_script", "text": "hello"}, "insert_script", {"play_type": "PLAY_NOW"}),
        (
            {"action": "insert_script", "text": "hi", "play_type": "APPEND"},
            "insert_script",
            {"text": "hi", "play_type": "APPEND"},
        ),
    ],
)
async def test_every_room_action_reaches_control(
    watcher: Watcher,
    bridges: BridgeRunner,
    prefix: str,
    body: dict[str, object],
    method: str,
    kwargs: dict[str, object],
) -> None:
    _, control, _ = await bridges.run()
    topic = _room_cmd(prefix)
    await watcher.send(topic, {"id": "c1", **body})
    reply = await watcher.wait_reply(f"{topic}/reply", "c1")
    assert reply["status"] == "ok", reply
    assert reply["data"]["method"] == method
    assert reply["error"] is None
    [call] = control.calls
    assert (call.method, call.room_id) == (method, "room-a")
    assert call.kwargs["cause"] == "mqtt:c1"
    for k, v in kwargs.items():
        assert call.kwargs[k] == v


async def test_get_and_bridge_actions(watcher: Watcher, bridges: BridgeRunner, prefix: str) -> None:
    _, control, store = await bridges.run()
    await watcher.send(_room_cmd(prefix), {"id": "g1", "action": "get"})
    reply = await watcher.wait_reply(f"{_room_cmd(prefix)}/reply", "g1")
    assert reply["data"]["state"] == "IDLE"
    bt = f"{prefix}/bridge/command"
    await watcher.send(bt, {"id": "l1", "action": "list_rooms"})
    assert (await watcher.wait_reply(f"{bt}/reply", "l1"))["data"] == {
        "rooms": ["room-a", "room-b"]
    }
    control.rooms.append("room-c")
    await watcher.send(bt, {"id": "r1", "action": "reload"})
    assert (await watcher.wait_reply(f"{bt}/reply", "r1"))["status"] == "ok"
    assert control.methods() == ["reload"]
    # after a reload the info and states are refreshed (room-c appears)
    await watcher.wait_topic(f"{prefix}/rooms/room-c/state")
    await watcher.wait_for(
        lambda m: (
            m.topic.value == f"{prefix}/bridge/info" and "room-c" in json.loads(m.payload)["rooms"]
        )
    )
    assert set(store.answers) == {"r1"}  # read-only replies are not stored


async def test_v5_reply_goes_to_response_topic_with_correlation(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    await bridges.run()
    await watcher.send(
        _room_cmd(prefix),
        {"id": "v5-1", "action": "stop"},
        response_topic=f"{prefix}-replies/panel-7",
        correlation=b"\x00corr-42",
    )
    m = await watcher.wait_topic(f"{prefix}-replies/panel-7")
    assert m.properties is not None
    assert getattr(m.properties, "CorrelationData", None) == b"\x00corr-42"
    assert json.loads(m.payload)["id"] == "v5-1"
    assert watcher.on(f"{_room_cmd(prefix)}/reply") == []


async def test_v311_bridge_replies_on_reply_topic(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    _, control, _ = await bridges.run(protocol="3.1.1")
    await watcher.wait_topic(f"{prefix}/bridge/state", "online")
    # a v5 sender with a response topic still gets /reply: a 3.1.1 bridge cannot see properties
    await watcher.send(
        _room_cmd(prefix, "room-b"), {"id": "v3-1", "action": "restart"}, response_topic="x/y"
    )
    reply = await watcher.wait_reply(f"{_room_cmd(prefix, 'room-b')}/reply", "v3-1")
    assert reply["status"] == "ok"
    # a plain 3.1.1 sender
    async with aiomqtt.Client(
        "127.0.0.1", 1883, identifier=f"{prefix}-v3", protocol=aiomqtt.ProtocolVersion.V311
    ) as v3:
        await v3.publish(_room_cmd(prefix), b'{"id":"v3-2","action":"stop"}', qos=1)
    assert (await watcher.wait_reply(f"{_room_cmd(prefix)}/reply", "v3-2"))["status"] == "ok"
    assert control.methods() == ["restart", "stop"]


async def test_retained_command_is_ignored_with_error_reply(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    topic = _room_cmd(prefix)
    # stored retained before the bridge subscribes
    await watcher.send(topic, {"id": "ret-1", "action": "stop"}, retain=True)
    with capture_logs() as logs:
        bridge, control, _ = await bridges.run()
        reply = await watcher.wait_reply(f"{topic}/reply", "ret-1")
        # published live with the retain flag while the bridge is subscribed (v5 RAP)
        await watcher.send(topic, {"id": "ret-2", "action": "stop"}, retain=True)
        reply2 = await watcher.wait_reply(f"{topic}/reply", "ret-2")
    assert reply["error"]["code"] == reply2["error"]["code"] == "retained_ignored"
    assert control.calls == []
    assert bridge.stats.retained_ignored == 2
    assert [e["command_id"] for e in logs if e["event"] == "mqtt_retained_command_ignored"] == [
        "ret-1",
        "ret-2",
    ]
    await watcher.send(topic, b"", retain=True)  # clear it


async def test_duplicate_id_is_answered_from_store_without_acting_twice(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    store = MemoryReplyStore()
    _, control, _ = await bridges.run(store=store)
    topic = _room_cmd(prefix)
    await watcher.send(
        topic, {"id": "dup-1", "action": "restart"}, response_topic=f"{prefix}-replies/r1"
    )
    first = await watcher.wait_reply(f"{prefix}-replies/r1", "dup-1")
    await watcher.send(
        topic, {"id": "dup-1", "action": "restart"}, response_topic=f"{prefix}-replies/r2"
    )
    second = await watcher.wait_reply(f"{prefix}-replies/r2", "dup-1")
    assert first == second
    assert control.methods() == ["restart"]
    assert store.answer("room-a", "restart", "dup-1") == first


async def test_duplicate_id_answered_from_a_preloaded_store(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    stored = {"id": "old-1", "status": "ok", "data": {"from": "store"}, "error": None}
    preloaded = MemoryReplyStore({reply_key("room-a", "stop", "old-1"): stored})
    _, control, _ = await bridges.run(store=preloaded)
    await watcher.send(_room_cmd(prefix), {"id": "old-1", "action": "stop"})
    assert await watcher.wait_reply(f"{_room_cmd(prefix)}/reply", "old-1") == stored
    assert control.calls == []


@pytest.mark.parametrize(
    ("topic_room", "payload", "code", "field", "reply_id"),
    [
        ("room-a", b"{not json", "bad_json", None, None),
        ("room-a", b"\xff\xfe", "bad_json", None, None),
        ("room-a", b"[1,2]", "bad_payload", "(payload)", None),
        ("room-a", b'{"id":"e1","action":"fly"}', "unknown_action", None, "e1"),
        ("room-a", b'{"id":"e2","action":"list_rooms"}', "unknown_action", None, "e2"),
        ("room-zz", b'{"id":"e3","action":"stop"}', "unknown_room", None, "e3"),
        ("room-a", b'{"id":"e4","action":"insert_script","text":5}', "bad_payload", "text", "e4"),
        (
            "room-a",
            b'{"id":"e5","action":"start","until":"tomorrow"}',
            "bad_payload",
            "until",
            "e5",
        ),
        (
            "room-a",
            b'{"id":"e6","action":"start","until":"2026-11-25T20:00:00"}',
            "bad_payload",
            "until",
            "e6",
        ),
        ("room-a", b'{"id":"e7","action":"stop","force":true}', "bad_payload", "force", "e7"),
        ("room-a", b'{"action":"stop"}', "bad_payload", "id", None),
        ("room-a", b'{"id":"e8","action":7}', "bad_payload", "action", "e8"),
        (
            "room-a",
            b'{"id":"e9","action":"add_window","start":"2026-12-01T12:00Z","end":"2026-12-01T10:00Z"}',
            "bad_payload",
            "(payload)",
            "e9",
        ),
        (
            "room-a",
            b'{"id":"e10","action":"set_output","url":"http://x/y","stream_key":"s"}',
            "bad_payload",
            "url",
            "e10",
        ),
        (
            "room-a",
            b'{"id":"e11","action":"stop","room_id":"room-b"}',
            "bad_payload",
            "room_id",
            "e11",
        ),
    ],
)
async def test_bad_commands_get_error_reply_and_never_reach_control(
    watcher: Watcher,
    bridges: BridgeRunner,
    prefix: str,
    topic_room: str,
    payload: bytes,
    code: str,
    field: str | None,
    reply_id: str | None,
) -> None:
    bridge, control, store = await bridges.run()
    topic = _room_cmd(prefix, topic_room)
    await watcher.send(topic, payload)
    reply = await watcher.wait_reply(f"{topic}/reply", reply_id)
    assert reply["status"] == "error"
    assert reply["error"]["code"] == code, reply
    assert reply["error"].get("field") == field
    assert control.calls == []
    assert store.answers == {}
    assert bridge.stats.commands_rejected == 1


async def test_acl_refuses_unlisted_client_and_action(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    _, control, _ = await bridges.run(acl={"panel": ["get", "stop"], "ops": ["*"]})
    t = _room_cmd(prefix)
    await watcher.send(t, {"id": "a1", "action": "restart", "client": "panel"})
    await watcher.send(t, {"id": "a2", "action": "stop"})
    await watcher.send(t, {"id": "a3", "action": "stop", "client": "intruder"})
    await watcher.send(t, {"id": "a4", "action": "stop", "client": "panel"})
    await watcher.send(t, {"id": "a5", "action": "restart", "client": "ops"})
    codes = {i: (await watcher.wait_reply(f"{t}/reply", i))["status"] for i in ["a4", "a5"]}
    for i in ("a1", "a2", "a3"):
        assert (await watcher.wait_reply(f"{t}/reply", i))["error"]["code"] == "forbidden"
    assert codes == {"a4": "ok", "a5": "ok"}
    assert control.methods() == ["stop", "restart"]
    assert [c.kwargs["cause"] for c in control.calls] == ["mqtt:panel:a4", "mqtt:ops:a5"]


async def test_expired_commands_are_refused(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    _, control, _ = await bridges.run(clock=lambda: now, command_max_age_s=60)
    t = _room_cmd(prefix)
    old = (now - timedelta(seconds=61)).isoformat()
    await watcher.send(t, {"id": "x1", "action": "stop", "expires_at": now.isoformat()})
    await watcher.send(t, {"id": "x2", "action": "stop", "sent_at": old})
    await watcher.send(
        t, {"id": "x3", "action": "stop", "sent_at": (now - timedelta(seconds=5)).isoformat()}
    )
    assert (await watcher.wait_reply(f"{t}/reply", "x1"))["error"]["code"] == "expired"
    assert (await watcher.wait_reply(f"{t}/reply", "x2"))["error"]["code"] == "expired"
    assert (await watcher.wait_reply(f"{t}/reply", "x3"))["status"] == "ok"
    assert control.methods() == ["stop"]


async def test_control_errors_pass_through_and_crashes_become_internal(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    control = RecordingControl()
    control.fail["restart"] = CommandError("quarantined", "room is quarantined; send reset")
    control.fail["stop"] = RuntimeError("boom with a secret-ish detail")
    _, _, store = await bridges.run(control=control)
    t = _room_cmd(prefix)
    await watcher.send(t, {"id": "f1", "action": "restart"})
    await watcher.send(t, {"id": "f2", "action": "stop"})
    r1 = await watcher.wait_reply(f"{t}/reply", "f1")
    r2 = await watcher.wait_reply(f"{t}/reply", "f2")
    assert r1["error"] == {"code": "quarantined", "message": "room is quarantined; send reset"}
    assert r2["error"]["code"] == "internal"
    assert "boom" not in json.dumps(r2)
    assert set(store.answers) == {"f1", "f2"}  # they reached Control: replays must not re-act


async def test_stream_key_never_leaves_in_replies_or_logs(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    class Echo(RecordingControl):
        async def set_output(self, room_id: str, **kw: Any) -> Mapping[str, Any]:
            await super().set_output(room_id, **kw)
            return {"url": kw["url"], "stream_key": kw["stream_key"]}

    control = Echo()
    with capture_logs() as logs:
        await bridges.run(control=control)
        t = _room_cmd(prefix)
        body = {
            "id": "s1",
            "action": "set_output",
            "url": "rtmp://h/app/",
            "stream_key": "TOPSECRET",
        }
        await watcher.send(t, body)
        reply = await watcher.wait_reply(f"{t}/reply", "s1")
        await watcher.send(t, {**body, "id": "s2", "stream_key": 42})
        bad = await watcher.wait_reply(f"{t}/reply", "s2")
    assert control.calls[0].kwargs["stream_key"] == "TOPSECRET"
    assert reply["data"]["stream_key"] == "***"
    assert bad["error"]["field"] == "stream_key"
    assert "TOPSECRET" not in json.dumps([reply, bad]) and "42" not in bad["error"]["message"]
    assert "TOPSECRET" not in repr(logs)


async def test_same_room_in_order_other_rooms_not_stalled(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    control = RecordingControl()
    gate = control.gates["room-a"] = asyncio.Event()
    await bridges.run(control=control)
    ta, tb = _room_cmd(prefix, "room-a"), _room_cmd(prefix, "room-b")
    await watcher.send(ta, {"id": "o1", "action": "stop"})
    await watcher.send(ta, {"id": "o2", "action": "start"})
    await watcher.send(tb, {"id": "o3", "action": "restart"})
    # room-b answers while room-a's first command is still blocked
    assert (await watcher.wait_reply(f"{tb}/reply", "o3"))["status"] == "ok"
    assert [(c.method, c.room_id) for c in control.calls] == [
        ("stop", "room-a"),
        ("restart", "room-b"),
    ]
    gate.set()
    await watcher.wait_reply(f"{ta}/reply", "o2")
    assert [c.method for c in control.calls if c.room_id == "room-a"] == ["stop", "start"]


async def test_clean_shutdown_publishes_offline(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    bridge, _, _ = await bridges.run()
    await watcher.wait_topic(f"{prefix}/bridge/state", "online")
    await bridges.stop(bridges.tasks[-1])
    await watcher.wait_topic(f"{prefix}/bridge/state", "offline")
    assert not bridge.connected


async def test_states_and_events_published_while_connected(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    bridge, _, _ = await bridges.run()
    bridge.publish_state(
        "room-a",
        Snapshot("room-a", RoomState.LIVE, Order.ON, "j-1", None, 0, None, None, None),
    )
    bridge.publish_event("room-a", {"type": "transition", "from": "STARTING", "to": "LIVE"})
    bridge.publish_event("room-a", {"type": "alert", "status": "SET", "kind": "link_down"})
    await watcher.wait_for(
        lambda m: m.topic.value == f"{prefix}/rooms/room-a/state" and b'"job_id":"j-1"' in m.payload
    )
    ev = await watcher.wait_for(
        lambda m: m.topic.value == f"{prefix}/rooms/room-a/events" and b"SET" in m.payload
    )
    assert ev.retain is False
    events = [json.loads(m.payload) for m in watcher.on(f"{prefix}/rooms/room-a/events")]
    assert [e["type"] for e in events] == ["transition", "alert"]


async def test_relay_messages_go_to_handler_with_persistent_session(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    got: asyncio.Queue[tuple[bytes, object]] = asyncio.Queue()

    async def handler(payload: bytes, props: object) -> None:
        await got.put((payload, props))

    await bridges.run(
        consume_relay=True,
        callbacks_topic=f"{prefix}/callbacks/in",
        on_relayed_callback=handler,
    )
    await watcher.send(f"{prefix}/callbacks/in", b'{"path":"/callbacks/metastudio"}')
    payload, _ = await asyncio.wait_for(got.get(), 5)
    assert payload == b'{"path":"/callbacks/metastudio"}'


async def test_idempotency_survives_a_bridge_restart_with_the_sql_store(
    watcher: Watcher, bridges: BridgeRunner, prefix: str, tmp_path: Path
) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'replies.db'}")
    await store.open()
    try:
        control = RecordingControl()
        t = _room_cmd(prefix)
        bridge, _, _ = bridges.make(control=control, store=store)  # type: ignore[arg-type]
        await bridges.start(bridge)
        await watcher.send(t, {"id": "sql-1", "action": "refresh_output"})
        first = await watcher.wait_reply(f"{t}/reply", "sql-1")
        await bridges.stop(bridges.tasks[-1])
        again, _, _ = bridges.make(control=control, store=store)  # type: ignore[arg-type]
        await bridges.start(again)
        await watcher.send(
            t, {"id": "sql-1", "action": "refresh_output"}, response_topic=f"{prefix}-replies/r2"
        )
        assert await watcher.wait_reply(f"{prefix}-replies/r2", "sql-1") == first
        assert control.methods() == ["refresh_output"]
    finally:
        await store.close()


async def test_non_owner_stays_silent_and_ownership_answers_are_never_stored(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    """Several instances hear every command; only the owner's answer may reach the requester
    and the reply store (otherwise a fast non-owner's refusal would win the replay)."""
    control = RecordingControl()
    control.fail["stop"] = CommandError("owned_elsewhere", "room is owned by host-b")
    control.fail["restart"] = CommandError("not_owner", "no instance owns the room right now")
    _, _, store = await bridges.run(control=control)
    t = _room_cmd(prefix)
    await watcher.send(t, {"id": "o1", "action": "stop"})
    await watcher.send(t, {"id": "o2", "action": "restart"})
    await watcher.send(t, {"id": "o3", "action": "start"})
    r2 = await watcher.wait_reply(f"{t}/reply", "o2")
    r3 = await watcher.wait_reply(f"{t}/reply", "o3")  # sent after o1: o1 was handled by now
    assert r2["error"]["code"] == "not_owner"
    assert r3["status"] == "ok"
    replies = [json.loads(m.payload).get("id") for m in watcher.on(f"{t}/reply")]
    assert "o1" not in replies, "a non-owner must not answer a room owned elsewhere"
    assert set(store.answers) == {"o3"}


async def test_an_id_started_before_a_crash_is_never_run_again(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    """SIGKILL after the cloud call but before the reply was stored leaves only the started
    mark: a resent id must answer outcome_unknown instead of acting a second time."""
    control = RecordingControl()
    bridge, _, store = await bridges.run(control=control)
    marker = f"{reply_key('room-a', 'stop', 'k1')}\x1fstarted:{bridge.settings.client_id}"
    await store.put_reply(marker, {"started": True}, datetime.now(UTC))  # what the kill left
    t = _room_cmd(prefix)
    await watcher.send(t, {"id": "k1", "action": "stop"})
    await watcher.send(t, {"id": "k2", "action": "stop"})
    r1 = await watcher.wait_reply(f"{t}/reply", "k1")
    r2 = await watcher.wait_reply(f"{t}/reply", "k2")
    assert r1["error"]["code"] == "outcome_unknown"
    assert r2["status"] == "ok"
    assert control.methods() == ["stop"], "only k2 reached the daemon"
    assert store.answers["k1"] == r1, "later replays get the same answer"
