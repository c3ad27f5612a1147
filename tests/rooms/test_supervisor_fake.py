"""RoomSupervisor against the in-memory FakeCloud and a real SQLite store, with a ManualClock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog

from orchestrator.clock import ManualClock
from orchestrator.errors import CloudUnavailable, InvalidRequest, Throttled
from orchestrator.rooms.model import (
    Order,
    OrderChanged,
    OutputChanged,
    Poked,
    Reset,
    RoomState,
    RtmpStateReported,
    Wait,
    WindowOpened,
)
from orchestrator.rooms.supervisor import RoomSupervisor
from orchestrator.settings import RoomSettings
from orchestrator.store.sql import SqlStore
from tests.support.rooms import FakeCloud, FakeJob, Harness, Rooms, make_supervisor, room_config
from tests.support.storepeek import active_alerts, start_intents_of

S = RoomState
MakeHarness = Callable[..., Harness]


def rtmp(h: Harness, room: str, state: str) -> None:
    job = h.sup.snapshot(room).job_id
    assert job is not None
    h.sup.post(room, RtmpStateReported(job_id=job, rtmp_state=state, at=h.clock.now()))


async def go_live(h: Harness, room: str = "room-a") -> str:
    h.sup.post(room, OrderChanged(order=Order.ON, cause="test"))
    await h.until(lambda: h.sup.snapshot(room).job_id is not None, "job started")
    rtmp(h, room, "CONNECTED")
    snap = await h.state(room, S.LIVE)
    assert snap.job_id is not None
    return snap.job_id


async def test_order_on_lists_starts_and_goes_live(
    make_harness: MakeHarness, cloud: FakeCloud, store: SqlStore
) -> None:
    h = make_harness()
    h.start()
    try:
        job = await go_live(h)
        assert [c[0] for c in cloud.calls] == ["list", "start"]
        req = cloud.requests[0]
        assert req.output_urls == ["rtmp://push.example.com/live"]
        intents = await start_intents_of(store, "room-a")
        assert [(i.attempt, i.outcome, i.job_id) for i in intents] == [(1, "started", job)]
        await h.until(lambda: any(t.after.state is S.LIVE for t in h.transitions))
        states = [(t.before.state, t.after.state) for t in h.transitions]
        assert (S.IDLE, S.STARTING) in states or (S.UNKNOWN, S.STARTING) in states
        assert (S.STARTING, S.LIVE) in states
        recs = await store.transitions("room-a")
        assert {r.to_state for r in recs} >= {"STARTING", "LIVE"}
        saved = await store.load_rooms()
        assert saved["room-a"]["state"] == "LIVE"
    finally:
        await h.stop()


async def test_drop_refresh_recovers(make_harness: MakeHarness, cloud: FakeCloud) -> None:
    h = make_harness()
    h.start()
    try:
        await go_live(h)
        rtmp(h, "room-a", "DISCONNECTED")
        await h.state("room-a", S.DEGRADED)
        h.clock.advance(10)  # grace
        await h.until(lambda: cloud.count("refresh") == 1, "first refresh")
        assert cloud.commands[0] == ("RESET_EXIT_CONFIG", {"max_exception_waiting_duration": 10})
        assert cloud.calls[-1] == ("refresh", "rtmp://push.example.com/live")
        rtmp(h, "room-a", "CONNECTED")
        await h.state("room-a", S.LIVE)
        assert cloud.count("start") == 1
    finally:
        await h.stop()


async def test_refresh_ladder_uses_backup_then_restarts(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    h = make_harness(room_config(refresh_tries=1, widen_exit_minutes=0))
    h.start()
    try:
        first = await go_live(h)
        rtmp(h, "room-a", "DISCONNECTED")
        await h.state("room-a", S.DEGRADED)
        h.clock.advance(10)
        # sent and acknowledged: the confirmation timer runs (the refresh leaves while the
        # room's state commits, so the call alone does not mean the room has its answer yet)
        await h.until(lambda: cloud.count("refresh") == 1
                      and h.sup.room("room-a").wait is Wait.REFRESH_CONFIRM)  # fmt: skip
        h.clock.advance(10)  # no CONNECTED within refresh_confirm_s
        await h.until(lambda: h.sup.room("room-a").wait is not None and cloud.count("refresh") == 1
                      and h.sup.room("room-a").output_index == 1)  # fmt: skip
        h.clock.advance(3)  # refresh backoff
        await h.until(lambda: cloud.count("refresh") == 2
                      and h.sup.room("room-a").wait is Wait.REFRESH_CONFIRM)  # fmt: skip
        assert cloud.calls[-1] == ("refresh", "rtmp://backup.example.com/live")
        h.clock.advance(10)
        await h.state("room-a", S.BACKOFF)
        assert cloud.jobs[first].state == "SUCCEED"  # the broken job was stopped
        h.clock.advance(10)
        await h.until(lambda: cloud.count("start") == 2, "restart")
        rtmp(h, "room-a", "CONNECTED")
        snap = await h.state("room-a", S.LIVE)
        assert snap.job_id != first
        assert len(cloud.running("room-a")) == 1
    finally:
        await h.stop()


async def test_ghost_start_is_adopted_not_duplicated(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    cloud.ghost_starts = 1
    h = make_harness()
    h.start()
    try:
        h.sup.post("room-a", OrderChanged(order=Order.ON))
        await h.until(lambda: h.sup.snapshot("room-a").job_id is not None, "adopted ghost")
        assert cloud.count("start") == 1
        assert [c[0] for c in cloud.calls] == ["list", "start", "list"]
        assert len(cloud.running("room-a")) == 1
    finally:
        await h.stop()


async def test_5xx_storm_backs_off_and_recovers(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    cloud.faults["start"] = [CloudUnavailable("500", status=500) for _ in range(3)]
    cloud.faults["list"] = [Throttled("429", status=429, retry_after=30.0)]
    h = make_harness()
    h.start()
    try:
        h.sup.post("room-a", OrderChanged(order=Order.ON))
        # the reconcile list was throttled: UNKNOWN retries after Retry-After
        await h.until(lambda: h.sup.snapshot("room-a").next_retry_at is not None)
        snap = h.sup.snapshot("room-a")
        assert snap.state is S.UNKNOWN
        assert snap.next_retry_at == h.clock.now() + timedelta(seconds=30)
        h.clock.set(snap.next_retry_at)
        for k in (1, 2, 3):
            await h.until(
                lambda k=k: (
                    cloud.count("start") == k  # type: ignore[misc]
                    and h.sup.snapshot("room-a").state is S.BACKOFF
                ),
                f"backoff after failed start {k}",
            )
            retry_at = h.sup.snapshot("room-a").next_retry_at
            assert retry_at is not None and retry_at > h.clock.now()
            h.clock.set(retry_at)
        await h.until(lambda: h.sup.snapshot("room-a").job_id is not None, "started at last")
        assert cloud.count("start") == 4
        assert h.sup.snapshot("room-a").state is S.STARTING
        assert h.task is not None and not h.task.done()
    finally:
        await h.stop()


async def test_permanent_start_error_quarantines_until_reset(
    make_harness: MakeHarness, cloud: FakeCloud, store: SqlStore
) -> None:
    cloud.faults["start"] = [InvalidRequest("MSS.00000003 Invalid parameter", status=400)]
    h = make_harness()
    h.start()
    try:
        h.sup.post("room-a", OrderChanged(order=Order.ON))
        await h.until(lambda: any(t.alert and t.alert[1] == "SET" for t in h.transitions))
        snap = h.sup.snapshot("room-a")
        assert snap.state is S.QUARANTINED
        assert snap.alert == "quarantined"
        assert "Invalid parameter" in (snap.last_error or "")
        alerts = await active_alerts(store)
        assert [(a[0], a[1]) for a in alerts] == [("room-a", "quarantined")]
        assert any(t.alert and t.alert[1] == "SET" for t in h.transitions)
        h.sup.post("room-a", Reset(cause="mqtt:reset"))
        await h.until(lambda: any(t.alert and t.alert[1] == "CLEARED" for t in h.transitions))
        assert await active_alerts(store) == []
        await h.until(lambda: cloud.count("start") == 2, "start after reset")
    finally:
        await h.stop()


async def test_supervisor_restart_mid_live_adopts_without_new_job(
    make_harness: MakeHarness, cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    h = make_harness()
    h.start()
    job = await go_live(h)
    await h.stop()
    h2 = make_harness()
    await h2.sup.load()
    h2.start()
    try:
        assert h2.sup.snapshot("room-a").state is S.UNKNOWN
        assert h2.sup.snapshot("room-a").order is Order.ON
        report = await h2.sup.adopt_all()
        assert report.adopted == {"room-a": [job]}
        snap = await h2.state("room-a", S.LIVE)
        assert snap.job_id == job
        assert cloud.count("start") == 1
    finally:
        await h2.stop()


async def test_a_drop_open_at_a_restart_is_repaired_after_adoption(
    make_harness: MakeHarness, cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    """The daemon dies during a held drop: the next one must not adopt the job as LIVE and
    wait for a stall its reads can only measure from their first read, nor for a second
    DISCONNECTED the service never sends."""
    h = make_harness()
    h.start()
    job = await go_live(h)
    rtmp(h, "room-a", "DISCONNECTED")
    await h.state("room-a", S.DEGRADED)
    await h.stop()
    h2 = make_harness()
    await h2.sup.load()
    h2.start()
    try:
        report = await h2.sup.adopt_all()
        assert report.adopted == {"room-a": [job]}
        snap = await h2.state("room-a", S.DEGRADED)
        assert snap.job_id == job and cloud.count("start") == 1
    finally:
        await h2.stop()


async def test_adopt_all_reports_unmanaged_jobs_and_leaves_them(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    cloud.jobs["x1"] = FakeJob("x1", "someone-elses-room")
    h = make_harness()
    h.start()
    try:
        report = await h.sup.adopt_all()
        assert report.unmanaged == [("someone-elses-room", "x1")]
        assert report.without_jobs == ["room-a"]
        await h.state("room-a", S.IDLE)
        assert cloud.jobs["x1"].state == "PROCESSING"
    finally:
        await h.stop()


async def test_poll_notices_a_dead_job_and_restarts(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    h = make_harness()
    h.start()
    try:
        job = await go_live(h)
        cloud.jobs[job].state = "FAILED"
        await h.sup.poll_once()  # missing from the running list → poke → show → FAILED
        await h.state("room-a", S.BACKOFF)
        assert cloud.count("show") == 1
    finally:
        await h.stop()


async def test_polls_confirming_a_live_room_write_and_announce_nothing(
    make_harness: MakeHarness, cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    """A quiet fleet: each poll only stamps the room. No store write, no transition for the
    listeners (MQTT, metrics, SLA), no new timer; a real change still does all three."""
    h = make_harness()
    h.start()
    try:
        await go_live(h)
        await h.sup.poll_once()  # the first read learns the job's state (PROCESSING): news
        await h.until(
            lambda: h.transitions[-1].after.extra["job_state"] == "PROCESSING", "first poll"
        )
        saves: list[str] = []
        real_save = store.save_rooms

        async def counting_save(writes: Any) -> Any:
            saves.extend(w.room_id for w in writes)
            return await real_save(writes)

        store.save_rooms = counting_save  # type: ignore[method-assign]
        heard, timer_seq = len(h.transitions), h.sup.room("room-a").timer_seq
        queued: list[str] = []
        real_post = h.sup.post
        h.sup.post = lambda rid, ev: queued.append(rid) or real_post(rid, ev)  # type: ignore[method-assign]
        for _ in range(3):
            clock.advance(20)
            await h.sup.poll_once()
            await h.until(lambda: h.sup.room("room-a").last_observed_at == clock.now(), "poll")
        assert (saves, len(h.transitions)) == ([], heard)
        assert queued == []  # stamped in place: the room's queue never saw these polls
        assert h.sup.room("room-a").timer_seq == timer_seq
        rtmp(h, "room-a", "DISCONNECTED")
        await h.until(lambda: len(h.transitions) == heard + 1, "the drop announced")
        # (the drop reads the job: its answer may be one more write, of this room only)
        assert set(saves) == {"room-a"} and h.transitions[-1].after.state is S.DEGRADED
    finally:
        await h.stop()


async def test_a_crashing_room_does_not_affect_another(
    make_harness: MakeHarness, cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    class Boom(Exception):
        pass

    real_save_rooms = store.save_rooms
    calls = {"n": 0}

    async def flaky_save_rooms(writes: Any) -> Any:
        # "bad" breaks any transaction it shares; written alone, it fails once
        if any(w.room_id == "bad" for w in writes):
            if len(writes) > 1:
                raise Boom("disk on fire")
            if calls["n"] == 0:
                calls["n"] += 1
                raise Boom("disk on fire")
        return await real_save_rooms(writes)

    store.save_rooms = flaky_save_rooms  # type: ignore[method-assign]
    h = make_harness(room_config("bad"), room_config("good"))
    with structlog.testing.capture_logs() as logs:
        h.start()
        try:
            h.sup.post("bad", OrderChanged(order=Order.ON))
            h.sup.post("good", OrderChanged(order=Order.ON))
            await h.until(lambda: h.sup.snapshot("good").job_id is not None, "good started")
            await h.until(lambda: any(e["event"] == "room_worker_crashed" for e in logs))
            crash = next(e for e in logs if e["event"] == "room_worker_crashed")
            assert crash["room_id"] == "bad"
            clock.advance(1)  # the crashed worker's restart backoff
            await h.until(lambda: h.sup.snapshot("bad").job_id is not None, "bad recovered")
            assert len(cloud.running("bad")) == 1
        finally:
            await h.stop()


async def test_post_unknown_room_and_clean_cancellation(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    sup = make_supervisor(Rooms(room_config()), cloud=cloud, store=store, clock=clock,
                          rng=random.Random(1))  # fmt: skip
    assert sup.post("nope", Poked()) is False
    task = asyncio.create_task(sup.run())
    sup.post("room-a", WindowOpened(window_id="w", window_start=clock.now(), deadline=None))
    h = Harness(sup, clock)
    await h.until(lambda: sup.snapshot("room-a").job_id is not None)
    await h.until(lambda: clock.sleepers >= 1, "start-confirm timer asleep")
    await sup.poll_once()  # the daemon's poller calls this; the supervisor has no loop of its own
    assert cloud.count("list_tenant") == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("room")]
    assert all(t.done() for t in leftovers), leftovers


async def test_reload_add_update_remove(make_harness: MakeHarness, cloud: FakeCloud) -> None:
    h = make_harness()
    h.start()
    try:
        await go_live(h)
        assert h.rooms is not None
        h.rooms.put(room_config("room-b"))  # a reload names a new room
        h.sup.add_room("room-b")
        await h.state("room-b", S.UNKNOWN)
        await h.until(lambda: ("list", "room-b") in cloud.calls, "new room reconciles")
        new = room_config()
        new = type(new)(room=new.room.model_copy(update={"output_url": "rtmp://new/live"}),
                        recovery=new.recovery)  # fmt: skip
        h.rooms.put(new)  # the room's output replaced (reload or override), then said so
        h.sup.post("room-a", OutputChanged(cause="reload:output"))
        await h.until(lambda: ("refresh", "rtmp://new/live") in cloud.calls, "output applied")
        await h.sup.remove_room("room-b")
        assert "room-b" not in h.sup.room_ids()
        assert h.sup.post("room-b", Poked()) is False
    finally:
        await h.stop()


async def test_lookup_mode_sees_overrides_and_stop_all_stops_every_job(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    from orchestrator.settings import Settings

    settings = Settings(
        rooms=[room_config("room-a").room, room_config("room-b").room],
        http={"public_callback_url": "https://cb.example.com/callbacks/metastudio"},
        callbacks={"auth_type": "MSS_A_HEAD", "key": "k3yExample"},
    )
    overrides: dict[str, str] = {}

    def lookup(room_id: str) -> RoomSettings | None:
        room = settings.room(room_id)
        if room is not None and room_id in overrides:
            room = room.model_copy(update={"output_url": overrides[room_id]})
        return room

    sup = RoomSupervisor(
        cloud=cloud, store=store, rooms=lookup, room_ids=lambda: [r.id for r in settings.rooms],
        settings=lambda: settings, clock=clock, rng=random.Random(3),
    )  # fmt: skip
    h = Harness(sup, clock)
    h.start()
    try:
        for rid in ("room-a", "room-b"):
            await go_live(h, rid)
        req = cloud.requests[0]
        assert req.live_event_callback_config is not None
        assert req.live_event_callback_config.auth_type == "MSS_A_HEAD"
        job_a = sup.snapshot("room-a").job_id
        assert job_a is not None and sup.room_for_job(job_a) == "room-a"
        assert sup.room_for_job("nobody") is None
        overrides["room-a"] = "rtmp://override/live"
        sup.post("room-a", OutputChanged(cause="mqtt:set_output"))
        await h.until(lambda: ("refresh", "rtmp://override/live") in cloud.calls, "override used")
        event = h.transitions[-1].to_json()
        assert event["type"] == "transition" and event["room_id"] in ("room-a", "room-b")
        await asyncio.wait_for(sup.stop_all(cause="shutdown"), 5)
        assert cloud.running() == []
        assert {s.state for s in sup.snapshots()} == {S.IDLE}
    finally:
        await h.stop()


def test_durable_change_ignores_only_stamps_and_counters() -> None:
    from dataclasses import replace
    from datetime import UTC, datetime

    from orchestrator.rooms.model import Room
    from orchestrator.rooms.recorder import durable_change as _durable_change

    room = Room(room_id="r", state=S.LIVE, job_id="j")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert not _durable_change(room, room)
    quiet = replace(room, last_observed_at=at, rtmp_at=at, seq=9, timer_seq=9, op_seq=9)
    assert not _durable_change(room, quiet)
    for change in ({"state": S.DEGRADED}, {"job_state": "FAILED"}, {"rtmp_state": "CONNECTED"},
                   {"alert": "x"}, {"retries": 1}, {"drop_since": at}):  # fmt: skip
        assert _durable_change(room, replace(quiet, **change)), change


class GatedStore:
    """The real store, but room saves wait at a gate (to see what happens meanwhile)."""

    def __init__(self, inner: SqlStore) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def save_rooms(self, writes: Any) -> Any:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        return await self._inner.save_rooms(writes)


def _gated(
    store: SqlStore, cloud: FakeCloud, clock: ManualClock, **kw: Any
) -> tuple[Harness, GatedStore]:
    gated = GatedStore(store)
    cfg = room_config(grace_s=0, widen_exit_minutes=0)
    sup = make_supervisor(Rooms(cfg), cloud=cloud, store=gated, clock=clock, rng=random.Random(7),
                          **kw)  # fmt: skip
    return Harness(sup, clock), gated


async def test_alone_the_refresh_leaves_while_the_state_commits(
    store: SqlStore, cloud: FakeCloud, clock: ManualClock
) -> None:
    h, gated = _gated(store, cloud, clock)
    h.start()
    try:
        await go_live(h)
        gated.gate.clear()
        rtmp(h, "room-a", "DISCONNECTED")
        # sent while REFRESHING is not committed yet (its commit waits at the gate)
        await h.until(lambda: cloud.count("refresh") == 1 and gated.waiting.is_set(), "refresh")
        assert (await store.load_rooms())["room-a"]["state"] == "LIVE"
        # and nobody hears of a state that is not durable
        assert not [t for t in h.transitions if t.after.state is S.REFRESHING]
        gated.gate.set()
        await h.until(lambda: any(t.after.state is S.REFRESHING for t in h.transitions))
        assert (await store.load_rooms())["room-a"]["state"] == "REFRESHING"
    finally:
        gated.gate.set()
        await h.stop()


async def test_with_leases_the_refresh_waits_for_the_fenced_commit(
    store: SqlStore, cloud: FakeCloud, clock: ManualClock
) -> None:
    h, gated = _gated(store, cloud, clock, owns=lambda rid, now: True)
    h.start()
    try:
        await go_live(h)
        gated.gate.clear()
        rtmp(h, "room-a", "DISCONNECTED")
        await asyncio.wait_for(gated.waiting.wait(), 5)
        for _ in range(50):  # an early send would go out within a loop turn or two
            await asyncio.sleep(0)
        assert cloud.count("refresh") == 0
        gated.gate.set()
        await h.until(lambda: cloud.count("refresh") == 1, "refresh after the commit")
    finally:
        gated.gate.set()
        await h.stop()
