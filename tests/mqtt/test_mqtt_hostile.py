"""Hostile MQTT input against the real mosquitto (issue 20): reused ids, response topics aimed
at the daemon's own topics, future ``sent_at``, oversized payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from orchestrator.store.sql import SqlStore
from tests.support.mqtt_bridge import BridgeRunner, Watcher


def _room_cmd(prefix: str, room: str = "room-a") -> str:
    return f"{prefix}/rooms/{room}/command"


async def test_an_id_is_scoped_to_its_room_and_action(
    watcher: Watcher, bridges: BridgeRunner, prefix: str, tmp_path: Path
) -> None:
    """X1 used by room-c's skip_next_window must not answer room-a's restart (or stop)."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'replies.db'}")
    await store.open()
    try:
        bridge, control, _ = bridges.make(store=store)  # type: ignore[arg-type]
        control.rooms.append("room-c")
        await bridges.start(bridge)
        await watcher.send(_room_cmd(prefix, "room-c"), {"id": "X1", "action": "skip_next_window"})
        first = await watcher.wait_reply(f"{_room_cmd(prefix, 'room-c')}/reply", "X1")
        await watcher.send(_room_cmd(prefix), {"id": "X1", "action": "restart"})
        restart = await watcher.wait_reply(f"{_room_cmd(prefix)}/reply", "X1")
        await watcher.send(_room_cmd(prefix), {"id": "X1", "action": "stop"})
        await watcher.wait_reply(f"{_room_cmd(prefix)}/reply", "X1")
        # the same (room, action, id) is still a replay
        await watcher.send(
            _room_cmd(prefix),
            {"id": "X1", "action": "restart"},
            response_topic=f"{prefix}-replies/a",
        )
        replay = await watcher.wait_reply(f"{prefix}-replies/a", "X1")
    finally:
        await store.close()
    assert first["status"] == restart["status"] == "ok"
    assert restart["data"]["method"] == "restart", restart
    assert replay == restart
    assert [(c.method, c.room_id) for c in control.calls] == [
        ("skip_next_window", "room-c"),
        ("restart", "room-a"),
        ("stop", "room-a"),
    ]


@pytest.mark.parametrize(
    "response",
    [
        "{prefix}/bridge/state",
        "{prefix}/bridge/info",
        "{prefix}/rooms/room-b/command",
        "{prefix}/rooms/room-a/state",
        "{prefix}/callbacks/in",
        "{prefix}/replies/x",
        "elsewhere/topic",
        "{prefix}-replies-not/x",
    ],
)
async def test_response_topics_outside_the_namespace_are_refused(
    watcher: Watcher, bridges: BridgeRunner, prefix: str, response: str
) -> None:
    _, control, _ = await bridges.run(callbacks_topic=f"{prefix}/callbacks/in")
    target = response.format(prefix=prefix)
    with capture_logs() as logs:
        await watcher.send(
            _room_cmd(prefix),
            {"id": "rt1", "action": "stop"},
            response_topic=target,
            correlation=b"c",
        )
        reply = await watcher.wait_reply(f"{_room_cmd(prefix)}/reply", "rt1")
    assert reply["error"]["code"] == "reply_topic_refused"
    assert control.calls == []
    assert [m for m in watcher.on(target) if b"rt1" in m.payload] == []
    assert any(e["event"] == "mqtt_response_topic_refused" for e in logs)


async def test_response_topics_inside_the_namespace_are_used(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    _, control, _ = await bridges.run()
    allowed = [f"{prefix}-replies/p/1", f"{prefix}/rooms/room-b/command/reply"]
    for i, topic in enumerate(allowed):
        await watcher.send(
            _room_cmd(prefix), {"id": f"ok{i}", "action": "stop"}, response_topic=topic
        )
        assert (await watcher.wait_reply(topic, f"ok{i}"))["status"] == "ok"
    assert control.methods() == ["stop", "stop"]


async def test_sent_at_in_the_future_is_refused_beyond_the_skew(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    _, control, store = await bridges.run(
        clock=lambda: now, command_max_age_s=60, command_max_skew_s=30
    )
    t = _room_cmd(prefix)
    far = (now + timedelta(days=365)).isoformat()
    near = (now + timedelta(seconds=20)).isoformat()
    await watcher.send(t, {"id": "s1", "action": "stop", "sent_at": far})
    await watcher.send(t, {"id": "s2", "action": "stop", "sent_at": near})
    r1 = await watcher.wait_reply(f"{t}/reply", "s1")
    r2 = await watcher.wait_reply(f"{t}/reply", "s2")
    assert r1["error"]["code"] == "clock_skew", r1
    assert r2["status"] == "ok"
    assert control.methods() == ["stop"]
    assert set(store.answers) == {"s2"}  # refused: the id can be corrected and re-sent


async def test_oversized_payload_is_refused_unparsed(
    watcher: Watcher, bridges: BridgeRunner, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.mqtt.intake as intake_mod
    import orchestrator.mqtt.runner as runner_mod

    parsed: list[bytes] = []
    real_parse, real_peek = runner_mod.parse_command, runner_mod.peek_id
    monkeypatch.setattr(
        runner_mod, "parse_command", lambda p, t: (parsed.append(p), real_parse(p, t))[1]
    )
    # the intake peeks at a refused command's id; the runner at a rejected one's
    for mod in (intake_mod, runner_mod):
        monkeypatch.setattr(mod, "peek_id", lambda p: (parsed.append(p), real_peek(p))[1])
    bridge, control, _ = await bridges.run(max_payload_bytes=4096)
    t = _room_cmd(prefix)
    big = json.dumps({"id": "big1", "action": "insert_script", "text": "x" * 5000}).encode()
    await watcher.send(t, big)
    reply = await watcher.wait_reply(f"{t}/reply", None)
    assert reply["error"]["code"] == "payload_too_large"
    assert parsed == []
    await watcher.send(t, {"id": "small", "action": "insert_script", "text": "x" * 3000})
    assert (await watcher.wait_reply(f"{t}/reply", "small"))["status"] == "ok"
    assert control.methods() == ["insert_script"]
    assert bridge.stats.commands_rejected == 1


async def test_the_broker_never_sends_the_bridge_a_huge_command(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    """v5 Maximum Packet Size: a 2 MB command is dropped by mosquitto, not read into memory.

    The small command sent after it (same publisher, QoS 1: delivered in order) proves the
    large one would have been received first had the broker sent it.
    """
    bridge, control, _ = await bridges.run(max_payload_bytes=4096)  # packets up to 1 MiB
    t = _room_cmd(prefix)
    huge = json.dumps({"id": "huge", "action": "stop", "pad": "x" * 2_000_000}).encode()
    await watcher.send(t, huge)
    await watcher.send(t, {"id": "after", "action": "stop"})
    assert (await watcher.wait_reply(f"{t}/reply", "after"))["status"] == "ok"
    assert bridge.stats.commands_received == 1
    assert [m for m in watcher.on(f"{t}/reply") if b"payload_too_large" in m.payload] == []
    assert control.methods() == ["stop"]


async def test_the_largest_valid_command_fits_the_default_limit(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    """insert_script allows 131,072 characters; CJK text, \\u-escaped, is 786 KiB."""
    _, control, _ = await bridges.run()
    t = _room_cmd(prefix)
    body = {"id": "cjk", "action": "insert_script", "text": "\u4e2d" * 131072}
    assert len(json.dumps(body).encode()) > 780_000
    await watcher.send(t, body)
    assert (await watcher.wait_reply(f"{t}/reply", "cjk"))["status"] == "ok"
    assert control.methods() == ["insert_script"]
