"""insert_script as a room action: decided by the room in turn with its other events, said by
the effects table, answered to the caller; and the reply path keeps nothing once callers stop
waiting. Also: every action type has an effect, and the crash throttle starts over."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest
import structlog

import orchestrator.rooms.model as model
import orchestrator.rooms.supervisor as supervisor_module
from orchestrator.clock import ManualClock
from orchestrator.control import CommandError
from orchestrator.errors import CloudUnavailable
from orchestrator.rooms.effects import AdoptHints, Effects, Replies
from orchestrator.rooms.model import Order, OrderChanged, RoomState, RtmpStateReported
from orchestrator.store.sql import SqlStore
from tests.support.rooms import FakeCloud, Harness, Rooms, make_supervisor, room_config

S = RoomState
MakeHarness = Callable[..., Harness]


async def go_live(h: Harness, room: str = "room-a") -> str:
    h.sup.post(room, OrderChanged(order=Order.ON, cause="test"))
    await h.until(lambda: h.sup.snapshot(room).job_id is not None, "job started")
    job = h.sup.snapshot(room).job_id
    assert job is not None
    h.sup.post(room, RtmpStateReported(job_id=job, rtmp_state="CONNECTED", at=h.clock.now()))
    snap = await h.state(room, S.LIVE)
    assert snap.job_id == job
    return job


def replies(h: Harness) -> Replies:
    return h.sup._replies  # the registry under test: it must be empty once callers are done


async def test_a_live_room_says_the_script_on_its_job(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    h = make_harness()
    h.start()
    try:
        job = await go_live(h)
        await asyncio.wait_for(h.sup.wait_idle(), 5)  # LIVE announced
        heard = len(h.transitions)
        out = await h.sup.insert_script("room-a", text="hello", play_type="APPEND", cause="mqtt:c1")
        assert out == {"command_id": "cmd-1", "job_id": job}
        assert cloud.commands == [("INSERT_PLAY_SCRIPT", {"text": "hello", "play_type": "APPEND"})]
        assert ("insert_script", job) in cloud.calls
        assert len(h.transitions) == heard  # nothing the room tracks changed
        assert h.sup.snapshot("room-a").state is S.LIVE
        assert len(replies(h)) == 0
    finally:
        await h.stop()


async def test_a_degraded_room_still_says_it(make_harness: MakeHarness, cloud: FakeCloud) -> None:
    h = make_harness(room_config(grace_s=600))
    h.start()
    try:
        job = await go_live(h)
        h.sup.post("room-a", RtmpStateReported(job_id=job, rtmp_state="DISCONNECTED",
                                               at=h.clock.now()))  # fmt: skip
        await h.state("room-a", S.DEGRADED)
        out = await h.sup.insert_script("room-a", text="hi", play_type="PLAY_NOW", cause="t")
        assert out["job_id"] == job
    finally:
        await h.stop()


async def test_a_room_without_a_live_job_refuses_not_live(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    h = make_harness()
    h.start()
    try:
        await h.sup.wait_idle()
        with pytest.raises(CommandError) as caught:
            await h.sup.insert_script("room-a", text="hello", play_type="PLAY_NOW", cause="t")
        assert caught.value.code == "not_live"
        assert "room-a" in caught.value.message and "no live job" in caught.value.message
        assert cloud.count("insert_script") == 0
        assert len(replies(h)) == 0
    finally:
        await h.stop()


async def test_a_refused_command_is_a_cloud_error(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    h = make_harness()
    h.start()
    try:
        await go_live(h)
        cloud.faults["command"] = [CloudUnavailable("503 from the service", status=503)]
        with pytest.raises(CommandError) as caught:
            await h.sup.insert_script("room-a", text="hello", play_type="PLAY_NOW", cause="t")
        assert caught.value.code == "cloud_error"
        assert "503 from the service" in caught.value.message
        assert h.sup.snapshot("room-a").state is S.LIVE  # a failed script is no failure of the job
        assert len(replies(h)) == 0
    finally:
        await h.stop()


async def test_an_unknown_room_is_refused(make_harness: MakeHarness) -> None:
    h = make_harness()
    with pytest.raises(CommandError) as caught:
        await h.sup.insert_script("nope", text="x", play_type="PLAY_NOW", cause="t")
    assert caught.value.code == "unknown_room"
    assert len(replies(h)) == 0


async def test_a_request_nobody_answers_ends_and_leaves_nothing_behind(
    make_harness: MakeHarness, cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LIVE room whose worker is not running: the requests sit in its queue unanswered. Each
    caller's wait ends, its entry goes; when the room runs again it accepts them (LIVE) but
    says none: their callers were told they failed."""
    monkeypatch.setattr(supervisor_module, "_REPLY_TIMEOUT_S", 0.05)
    h = make_harness()
    h.start()
    await go_live(h)
    await asyncio.wait_for(h.sup.wait_idle(), 5)
    await h.stop()
    for _ in range(3):
        with pytest.raises(CommandError) as caught:
            await h.sup.insert_script("room-a", text="late", play_type="PLAY_NOW", cause="t")
        assert caught.value.code == "cloud_error"
    assert len(replies(h)) == 0
    assert not h.sup.idle()  # the three requests are still queued
    h.start()
    try:
        await asyncio.wait_for(h.sup.wait_idle(), 5)
        assert h.sup.snapshot("room-a").state is S.LIVE
        assert cloud.count("insert_script") == 0
    finally:
        await h.stop()


async def test_a_caller_that_gives_up_leaves_nothing_behind(make_harness: MakeHarness) -> None:
    h = make_harness()
    task = asyncio.create_task(
        h.sup.insert_script("room-a", text="x", play_type="PLAY_NOW", cause="t")
    )
    await asyncio.sleep(0)  # let it open its entry and post
    assert len(replies(h)) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(replies(h)) == 0


async def test_a_removed_room_answers_its_waiting_callers_at_once(
    make_harness: MakeHarness,
) -> None:
    h = make_harness()  # not running: the request waits in the queue
    task = asyncio.create_task(
        h.sup.insert_script("room-a", text="x", play_type="PLAY_NOW", cause="t")
    )
    await asyncio.sleep(0)
    await h.sup.remove_room("room-a")
    with pytest.raises(CommandError) as caught:
        await asyncio.wait_for(task, 5)
    assert caught.value.code == "not_live"
    assert len(replies(h)) == 0


def test_every_action_type_has_an_effect() -> None:
    actions = {
        c for c in vars(model).values()
        if isinstance(c, type) and issubclass(c, model.Action) and c is not model.Action
    }  # fmt: skip
    effects = Effects(cloud=FakeCloud(), store=None, hints=AdoptHints(ManualClock()),  # type: ignore[arg-type]
                      replies=Replies())  # fmt: skip
    assert effects.handles() == actions


async def test_the_crash_throttle_grows_then_starts_over_once_quiet(
    store: SqlStore, cloud: FakeCloud, clock: ManualClock
) -> None:
    """A room that crashes again soon after its restart waits longer each time; one that ran
    quietly for a while since gets the short delay again (it used to keep the longest)."""
    sup = make_supervisor(Rooms(room_config()), cloud=cloud, store=store, clock=clock,
                          rng=random.Random(7))  # fmt: skip
    h = Harness(sup, clock)
    real_save = store.save_rooms

    async def crash(logs: list[dict[str, Any]], order: Order) -> dict[str, Any]:
        async def broken(writes: Any) -> Any:  # the room's next write raises, once
            store.save_rooms = real_save  # type: ignore[method-assign]
            raise RuntimeError("bug in a write")

        store.save_rooms = broken  # type: ignore[method-assign]
        n = sum(e["event"] == "room_worker_crashed" for e in logs)
        sup.post("room-a", OrderChanged(order=order))
        await h.until(lambda: sum(e["event"] == "room_worker_crashed" for e in logs) > n, "crash")
        entry = [e for e in logs if e["event"] == "room_worker_crashed"][-1]
        clock.advance(entry["retry_in_s"])  # the restart: Resumed, handled fine
        await asyncio.wait_for(sup.wait_idle(), 5)
        return entry

    with structlog.testing.capture_logs() as logs:
        h.start()
        try:
            await asyncio.wait_for(sup.wait_idle(), 5)
            first = await crash(logs, Order.ON)
            second = await crash(logs, Order.OFF)
            assert (first["crashes"], second["crashes"]) == (1, 2)
            assert second["retry_in_s"] > first["retry_in_s"]
            clock.advance(61)  # crash-free for longer than _CRASH_QUIET_S, then an event
            sup.post("room-a", model.Poked(cause="test"))
            await asyncio.wait_for(sup.wait_idle(), 5)
            third = await crash(logs, Order.ON)
            assert third["crashes"] == 1
            assert third["retry_in_s"] < second["retry_in_s"]
        finally:
            store.save_rooms = real_save  # type: ignore[method-assign]
            await h.stop()


def test_events_and_actions_of_the_script_are_plain_data() -> None:
    ev = model.InsertScriptRequested(request_id=3, text="t", cause="c")
    assert ev.play_type == "PLAY_NOW" and dataclasses.is_dataclass(ev)
    assert model.InsertScript(3, "job", "t", "APPEND").request_id == 3
