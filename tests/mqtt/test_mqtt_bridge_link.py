"""Connection-level behaviour: LWT on SIGKILL, broker restart, bounded outboxes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import aiomqtt

from orchestrator.mqtt.bridge import MqttBridge
from orchestrator.mqtt.link import Backoff
from tests.support.mqtt_bridge import BridgeRunner, PrivateBroker, Watcher, watching
from tests.support.mqtt_fakes import RecordingControl

REPO = Path(__file__).resolve().parents[2]


async def test_lwt_offline_when_process_is_killed(
    watcher: Watcher, prefix: str, require_service: Callable[[str], None]
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.mqtt_bridge_proc",  # run from the checkout's root, where tests/ is
        "--prefix",
        prefix,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await watcher.wait_topic(f"{prefix}/bridge/state", "online", timeout=15)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        offline = await watcher.wait_topic(f"{prefix}/bridge/state", "offline")
        assert offline.payload == b"offline"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # and the LWT is retained: a newcomer sees offline
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"{prefix}-late") as late:
        await late.subscribe(f"{prefix}/bridge/state", qos=1)
        async with asyncio.timeout(5):
            async for m in late.messages:
                assert m.payload == b"offline" and m.retain
                break


async def test_reconnects_after_broker_restart_and_republishes_state(
    private_broker: PrivateBroker, bridges: BridgeRunner, prefix: str
) -> None:
    port = private_broker.port
    seen: list[bool] = []
    bridge, control, _ = await bridges.run(port=port, on_connected=seen.append)
    async with watching(prefix, port) as w:
        await w.wait_topic(f"{prefix}/rooms/room-a/state")
    await private_broker.stop()  # the retained state dies with it (persistence false)
    # while down: room-a goes LIVE; the update waits in the outbox, never blocking
    control.states["room-a"] = {"room_id": "room-a", "state": "LIVE", "order": "ON"}
    bridge.publish_state("room-a", control.states["room-a"])
    bridge.publish_event("room-a", {"type": "transition", "to": "LIVE"})
    await private_broker.start()
    async with watching(prefix, port) as w:
        await w.wait_topic(f"{prefix}/bridge/state", "online")
        state = await w.wait_topic(f"{prefix}/rooms/room-a/state")
        assert json.loads(state.payload)["state"] == "LIVE"
        await w.wait_topic(f"{prefix}/rooms/room-b/state")
        t = f"{prefix}/rooms/room-b/command"
        await w.send(t, {"id": "after-1", "action": "restart"})
        assert (await w.wait_reply(f"{t}/reply", "after-1"))["status"] == "ok"
    assert seen[:3] == [True, False, True]
    assert bridge.stats.connects >= 2
    assert bridge.stats.connection_losses >= 1
    assert control.methods() == ["restart"]


async def test_outboxes_stay_bounded_while_disconnected_then_converge(
    private_broker: PrivateBroker, bridges: BridgeRunner, prefix: str
) -> None:
    n, limit = 10_000, 1_000
    rooms = [f"room-{i:05d}" for i in range(n)]
    control = RecordingControl(rooms=rooms)
    bridge, _, _ = bridges.make(control=control, port=private_broker.port, queue_limit=limit)
    for r in rooms:  # never connected yet: pure outbox behaviour
        bridge.publish_state(r, {"room_id": r, "state": "STARTING", "v": 1})
        bridge.publish_event(r, {"type": "transition", "to": "STARTING"})
    assert bridge.pending_states() == limit
    assert bridge.pending_events() == limit
    assert bridge.stats.states_dropped == n - limit
    assert bridge.stats.events_dropped == n - limit
    # latest wins per room, without growing
    for r in rooms[:limit]:
        bridge.publish_state(r, {"room_id": r, "state": "LIVE", "v": 2})
    assert bridge.pending_states() == limit
    assert bridge.stats.states_dropped == n - limit
    # the oldest events were dropped: the last `limit` rooms' events remain
    assert bridge.outbox.events[0].topic.endswith(f"/{rooms[n - limit]}/events")
    for r in rooms:
        control.states[r] = {"room_id": r, "state": "LIVE", "v": 2}
    latest: dict[str, int] = {}
    done = asyncio.Event()
    async with aiomqtt.Client("127.0.0.1", private_broker.port, identifier=f"{prefix}-w") as c:
        await c.subscribe(f"{prefix}/rooms/+/state", qos=1)

        async def count() -> None:
            async for m in c.messages:
                latest[m.topic.value.split("/")[-2]] = json.loads(m.payload)["v"]
                if len(latest) == n and all(v == 2 for v in latest.values()):
                    done.set()

        counter = asyncio.create_task(count())
        try:
            await bridges.start(bridge)
            await asyncio.wait_for(done.wait(), 50)
        finally:
            counter.cancel()
    assert bridge.pending_states() == 0


def test_backoff_is_jittered_capped_and_resets() -> None:
    import random

    b = Backoff(cap_s=5.0, base_s=0.5, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(12)]
    for i, d in enumerate(delays):
        ceiling = min(5.0, 0.5 * 2**i)
        assert ceiling / 2 <= d <= ceiling
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5


async def test_relay_session_persists_while_daemon_is_down(
    private_broker: PrivateBroker, bridges: BridgeRunner, prefix: str
) -> None:
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(payload: bytes, props: object) -> None:
        await got.put(payload)

    kw = {
        "port": private_broker.port,
        "consume_relay": True,
        "callbacks_topic": f"{prefix}/callbacks/in",
        "on_relayed_callback": handler,
    }
    await bridges.run(**kw)
    await bridges.stop(bridges.tasks[-1])  # clean shutdown; the broker keeps the session
    async with aiomqtt.Client("127.0.0.1", private_broker.port, identifier=f"{prefix}-relay") as r:
        await r.publish(f"{prefix}/callbacks/in", b"while-down", qos=1)
    await bridges.run(**kw)  # same client id: the queued callback is delivered
    assert await asyncio.wait_for(got.get(), 5) == b"while-down"


async def test_reply_computed_while_disconnected_is_sent_after_reconnect(
    watcher: Watcher, bridges: BridgeRunner, prefix: str
) -> None:
    control = RecordingControl()
    gate = control.gates["room-a"] = asyncio.Event()
    pending_at_reconnect: list[int] = []
    bridge: MqttBridge | None = None

    def on_connected(up: bool) -> None:
        assert bridge is not None
        if not up:
            gate.set()  # the slow command finishes while the link is down
        elif gate.is_set():
            pending_at_reconnect.append(bridge.pending_replies())

    bridge, _, _ = bridges.make(control=control, on_connected=on_connected)
    await bridges.start(bridge)
    t = f"{prefix}/rooms/room-a/command"
    await watcher.send(t, {"id": "slow-1", "action": "restart"})
    await asyncio.wait_for(control.called.wait(), 5)
    # an impostor with the bridge's client id takes its session over: the link drops
    impostor = aiomqtt.Client("127.0.0.1", 1883, identifier=bridge.settings.client_id)
    async with impostor:
        reply = await watcher.wait_reply(f"{t}/reply", "slow-1")
        # the bridge's reconnect kicked the impostor out in turn; consume its disconnect error
        with contextlib.suppress(aiomqtt.MqttError):
            async with asyncio.timeout(5):
                async for _ in impostor.messages:
                    pass
    assert reply["status"] == "ok"
    assert pending_at_reconnect[:1] == [1]
