"""WindowScheduler: events into the RoomSink with injected time (no real waiting)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from orchestrator.rooms.model import Event, WindowClosed, WindowOpened
from orchestrator.schedule.scheduler import WindowScheduler, expected_start_delay
from orchestrator.schedule.windows import RoomSchedule, pause


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class Sink:
    def __init__(self, expect: int = 0) -> None:
        self.events: list[tuple[str, Event]] = []
        self.expect = expect
        self.done = asyncio.Event()

    def post(self, room_id: str, event: Event) -> bool:
        self.events.append((room_id, event))
        if self.expect and len(self.events) >= self.expect:
            self.done.set()
        return True

    def kinds(self) -> list[tuple[str, str, str]]:
        return [(r, type(e).__name__, e.window_id) for r, e in self.events]  # type: ignore[attr-defined]


EVENING = [{"name": "eve", "cron": "0 20 * * *", "duration": "2h"}]


def sched(windows: list[dict[str, object]] = EVENING, **kw: object) -> RoomSchedule:
    return RoomSchedule.build(windows, **kw)  # type: ignore[arg-type]


async def make(clock: Clock, sink: Sink, rooms: dict[str, RoomSchedule]) -> WindowScheduler:
    ws = WindowScheduler(sink, now=clock, misfire_grace_s=60)
    ws.apply(rooms)
    ws.start(paused=True)
    return ws


async def test_open_and_close_fire_in_order_and_replan() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 12)), Sink()
    ws = await make(clock, sink, {"r1": sched()})
    try:
        assert ws.job_ids() == ["open:r1:eve@20260701T200000Z"]
        assert await ws.run_due() == 0
        clock.t = utc(2026, 7, 1, 20, 0, 1)
        assert await ws.run_due() == 1
        ((room, ev),) = sink.events
        assert isinstance(ev, WindowOpened) and room == "r1"
        assert ev.deadline == utc(2026, 7, 1, 22) and "expected_delay_s=0.00" in ev.cause
        assert ws.job_ids() == ["close:r1:eve@20260701T200000Z", "open:r1:eve@20260702T200000Z"]
        clock.t = utc(2026, 7, 1, 22)
        assert await ws.run_due() == 1
        assert sink.kinds()[-1] == ("r1", "WindowClosed", "eve@20260701T200000Z")
        assert ws.job_ids() == ["open:r1:eve@20260702T200000Z"]
    finally:
        ws.shutdown()


async def test_boot_inside_window_catch_up_and_min_remaining() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 21)), Sink()
    ws = await make(clock, sink, {"inside": sched(), "late": sched(min_remaining_s=3700)})
    try:
        evs = ws.startup_events(clock.t)
        assert [r for r, _ in evs] == ["inside"]  # 'late' has < min_remaining left
        assert evs[0][1].window_start == utc(2026, 7, 1, 20) and "catch_up" in evs[0][1].cause
        # the close job of the running window is planned for both rooms
        assert "close:inside:eve@20260701T200000Z" in ws.job_ids()
        assert sink.events == []  # startup_events posts nothing itself
    finally:
        ws.shutdown()


async def test_missed_open_beyond_grace_is_logged_and_caught_up() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 19)), Sink()
    ws = await make(clock, sink, {"r": sched()})
    try:
        clock.t = utc(2026, 7, 1, 20, 10)  # 10 min late, grace 60 s
        with capture_logs() as logs:
            await ws.run_due()
        assert any(e["event"] == "schedule_job_missed" for e in logs)
        assert sink.kinds() == [("r", "WindowOpened", "eve@20260701T200000Z")]
        assert "catch_up" in sink.events[0][1].cause
    finally:
        ws.shutdown()


async def test_reload_keeps_streaming_room_inside_changed_window() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 21)), Sink()
    ws = await make(clock, sink, {"keep": sched(), "drop": sched(), "moved": sched()})
    try:
        longer = [{"name": "eve", "cron": "0 20 * * *", "duration": "3h"}]
        later = [{"name": "eve", "cron": "0 23 * * *", "duration": "1h"}]
        evs = ws.apply({"keep": sched(longer), "drop": sched([]), "moved": sched(later)})
        got = {(r, type(e).__name__) for r, e in evs}
        assert got == {
            ("keep", "WindowOpened"),
            ("drop", "WindowClosed"),
            ("moved", "WindowClosed"),
        }
        keep = next(e for r, e in evs if r == "keep")
        assert isinstance(keep, WindowOpened) and keep.deadline == utc(2026, 7, 1, 23)
        assert sink.kinds() == [(r, type(e).__name__, e.window_id) for r, e in evs]  # type: ignore[attr-defined]
        assert "close:keep:eve@20260701T200000Z" in ws.job_ids()
        # an identical reload sends nothing
        sink.events.clear()
        assert ws.apply({"keep": sched(longer), "drop": sched([]), "moved": sched(later)}) == []
    finally:
        ws.shutdown()


async def test_pause_override_closes_running_window() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 21)), Sink()
    ws = await make(clock, sink, {"r": sched()})
    try:
        evs = ws.apply({"r": sched()}, {"r": pause({})})
        assert [(r, type(e).__name__) for r, e in evs] == [("r", "WindowClosed")]
        assert ws.job_ids() == []
    finally:
        ws.shutdown()


async def test_rollover_posts_close_then_open() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 12)), Sink()
    s = sched([{"name": "a", "always": True}], timezone="UTC", daily_restart="04:00")
    ws = await make(clock, sink, {"r": s})
    try:
        assert ws.job_ids() == ["open:r:a@20260702T040000Z"]  # no separate close job
        clock.t = utc(2026, 7, 2, 4)
        await ws.run_due()
        assert sink.kinds() == [
            ("r", "WindowClosed", "a@20260701T040000Z"),
            ("r", "WindowOpened", "a@20260702T040000Z"),
        ]
        assert all("rollover" in e.cause for _, e in sink.events)
    finally:
        ws.shutdown()


async def test_thousand_rooms_open_once_via_running_scheduler() -> None:
    """Real AsyncIOScheduler: every job is already due; wait on the sink's counter."""
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(seconds=1)
    spec = [
        {"name": "x", "start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()}
    ]
    rooms = {f"room{i:04d}": sched(spec) for i in range(1000)}
    sink = Sink(expect=1000)
    clock = Clock(start - timedelta(seconds=1))  # plan while 'before' the window
    ws = WindowScheduler(sink, now=clock, misfire_grace_s=600)
    ws.apply(rooms)
    assert ws.job_count == 1000
    clock.t = now
    ws.start()
    try:
        await asyncio.wait_for(sink.done.wait(), timeout=20)
        opened = [(r, e) for r, e in sink.events if isinstance(e, WindowOpened)]
        assert len(opened) == 1000 and len({r for r, _ in opened}) == 1000
        delays = sorted(float(e.cause.rpartition("=")[2]) for _, e in opened)
        assert delays[0] == 0.0 and delays[-1] == expected_start_delay(999, 4.0)
        assert ws.job_count == 1000  # each room re-planned only its close job
        assert all(i.startswith("close:") for i in ws.job_ids())
    finally:
        ws.shutdown()


async def test_thousand_rooms_run_due_exactly_once() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 19, 59)), Sink()
    rooms = {f"r{i}": sched() for i in range(1000)}
    ws = await make(clock, sink, rooms)
    try:
        clock.t = utc(2026, 7, 1, 20, 0, 30)
        assert await ws.run_due() == 1000
        assert await ws.run_due() == 0
        assert len({r for r, e in sink.events if isinstance(e, WindowOpened)}) == 1000
        assert not any(isinstance(e, WindowClosed) for _, e in sink.events)
    finally:
        ws.shutdown()


def test_expected_start_delay() -> None:
    assert expected_start_delay(0, 4) == 0
    assert expected_start_delay(400, 4) == 100
    with pytest.raises(ValueError):
        expected_start_delay(1, 0)


async def test_next_window_is_the_current_one_or_the_next() -> None:
    clock, sink = Clock(utc(2026, 7, 1, 12)), Sink()
    ws = await make(clock, sink, {"r1": sched()})
    try:
        before = ws.next_window("r1", utc(2026, 7, 1, 12))
        inside = ws.next_window("r1", utc(2026, 7, 1, 21))
        after = ws.next_window("r1", utc(2026, 7, 1, 23))
        assert before is not None and before.start == utc(2026, 7, 1, 20)
        assert inside is not None and inside.start == utc(2026, 7, 1, 20)
        assert after is not None and after.start == utc(2026, 7, 2, 20)
        assert ws.next_window("unknown", utc(2026, 7, 1, 12)) is None
    finally:
        ws.shutdown()
