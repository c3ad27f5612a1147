"""ProbeRunner on a ManualClock with a scripted probe (our own seam): what it posts and logs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from structlog.testing import capture_logs

from orchestrator.clock import ManualClock
from orchestrator.probe import (
    PROBE_CAUSE,
    ProbeDecision,
    ProbeResult,
    ProbeRunner,
    ProbeSettings,
)
from orchestrator.rooms.model import Event, Order, RoomState, RtmpStateReported, Snapshot

OK = ProbeResult(True, "ok", video=True, audio=True)
DEAD = ProbeResult(False, "timeout")
SETTINGS = ProbeSettings(interval_s=15, timeout_s=10, fail_after_s=30)
URL = "https://cdn.example.com/live/room-a.flv?auth_key=SECRET-TOKEN"
WAIT_S = 2.0


class ZeroRng(random.Random):
    """First probe at once, no spread: virtual time lines up with the test's steps."""

    def random(self) -> float:
        return 0.0


class RecordingSink:
    def __init__(self) -> None:
        self.posted: list[tuple[str, Event]] = []

    def post(self, room_id: str, event: Event) -> bool:
        self.posted.append((room_id, event))
        return True


@dataclass
class ScriptedProbe:
    """Answers ``results[url]``; optionally holds every call until ``gate`` is set."""

    results: dict[str, ProbeResult] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    calls: list[str] = field(default_factory=list)
    started: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    in_flight: int = 0
    max_in_flight: int = 0

    async def __call__(
        self, url: str, *, timeout_s: float, ffprobe: str = "ffprobe"
    ) -> ProbeResult:
        self.calls.append(url)
        self.started.put_nowait(url)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return self.results.get(url, OK)
        finally:
            self.in_flight -= 1


def live(
    room_id: str, state: RoomState = RoomState.LIVE, since: datetime | None = None
) -> Snapshot:
    return Snapshot(
        room_id=room_id,
        state=state,
        order=Order.ON,
        job_id=f"job-{room_id}",
        since=since,
        attempt=1,
        next_retry_at=None,
        last_error=None,
        alert=None,
        extra={"rtmp_state": "CONNECTED" if state is RoomState.LIVE else "DISCONNECTED"},
    )


Observed = tuple[str, ProbeResult, ProbeDecision]


@dataclass
class Harness:
    clock: ManualClock
    sink: RecordingSink
    probe: ScriptedProbe
    targets: dict[str, tuple[str, ProbeSettings]]
    snaps: dict[str, Snapshot]
    observed: asyncio.Queue[Observed]
    runner: ProbeRunner

    async def next(self, room_id: str | None = None) -> Observed:
        while True:
            item = await asyncio.wait_for(self.observed.get(), WAIT_S)
            if room_id is None or item[0] == room_id:
                return item

    async def step(self, room_id: str = "room-a") -> ProbeDecision:
        """Advance one interval and return the room's next decision."""
        self.clock.advance(SETTINGS.interval_s)
        return (await self.next(room_id))[2]


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., Harness]]:
    tasks: list[asyncio.Task[None]] = []

    def make(max_concurrency: int = 8, rooms: tuple[str, ...] = ("room-a",)) -> Harness:
        clock = ManualClock()
        observed: asyncio.Queue[Observed] = asyncio.Queue()
        probe = ScriptedProbe()
        targets = {r: (URL.replace("room-a", r), SETTINGS) for r in rooms}
        snaps = {r: live(r, since=clock.now()) for r in rooms}
        sink = RecordingSink()
        runner = ProbeRunner(
            sink,
            rooms=lambda: targets,
            snapshot=snaps.get,
            clock=clock,
            max_concurrency=max_concurrency,
            refresh_s=3600,
            jitter=0.0,
            rng=ZeroRng(),
            probe=probe,
            observer=lambda room, result, decision: observed.put_nowait((room, result, decision)),
        )
        tasks.append(asyncio.create_task(runner.run(), name="test-probe-runner"))
        return Harness(clock, sink, probe, targets, snaps, observed, runner)

    yield make
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_dead_for_fail_after_posts_one_disconnected_then_recovery_resets(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    t0 = h.clock.now()
    h.probe.results[h.targets["room-a"][0]] = DEAD
    with capture_logs() as logs:
        assert (await h.next("room-a"))[2].transition == "failed"  # t=0
        assert (await h.step()).transition == "failed"  # t=15
        assert h.sink.posted == []
        decision = await h.step()  # t=30: dead for fail_after_s
        assert decision.transition == "dead"
        assert (await h.step()).transition == "still_dead"  # t=45: nothing more
        assert len(h.sink.posted) == 1
        room_id, event = h.sink.posted[0]
        assert room_id == "room-a"
        assert event == decision.event == RtmpStateReported(
            job_id="job-room-a", rtmp_state="DISCONNECTED", at=t0 + timedelta(seconds=30),
            cause=PROBE_CAUSE, observed=True,  # our own observation, not a callback's hint
            down_s=30.0,  # dead since the first failed probe: the outage is counted from there
        )  # fmt: skip
        h.probe.results[h.targets["room-a"][0]] = OK
        assert (await h.step()).transition == "recovered"
        tracker = h.runner.tracker("room-a")
        assert tracker is not None and tracker.dead_since is None and not tracker.fired
        assert len(h.sink.posted) == 1  # recovery posts nothing
    events = [e["event"] for e in logs]
    assert events.count("probe_dead") == 1
    assert events.count("probe_recovered") == 1
    assert events.count("probe_failed") == 4
    dead = next(e for e in logs if e["event"] == "probe_dead")
    assert dead["room_id"] == "room-a" and dead["job_id"] == "job-room-a"
    assert dead["url"] == "https://cdn.example.com/live/room-a.flv"
    assert "SECRET-TOKEN" not in repr(logs)


async def test_rooms_that_are_not_live_are_not_probed(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(rooms=("room-a", "room-b"))
    h.snaps["room-b"] = live("room-b", RoomState.DEGRADED)
    h.probe.results[h.targets["room-b"][0]] = DEAD
    await h.next("room-a")
    await h.step("room-a")
    assert all("room-b" not in url for url in h.probe.calls)
    assert h.runner.tracker("room-b") is None
    assert h.sink.posted == []


async def test_disabled_rooms_and_rooms_without_url_are_skipped(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(rooms=("room-a", "room-b", "room-c"))
    h.targets["room-b"] = (h.targets["room-b"][0], SETTINGS.model_copy(update={"enabled": False}))
    h.targets["room-c"] = ("", SETTINGS)
    await h.next("room-a")
    await h.step("room-a")
    assert all("room-a" in url for url in h.probe.calls)


async def test_concurrency_is_bounded(make_harness: Callable[..., Harness]) -> None:
    rooms = tuple(f"room-{i}" for i in range(5))
    h = make_harness(max_concurrency=2, rooms=rooms)
    h.probe.gate = asyncio.Event()
    # the gate holds the first probes: two get in, then the gate opens for everyone
    for _ in range(2):
        await asyncio.wait_for(h.probe.started.get(), WAIT_S)
    h.probe.gate.set()
    seen = {(await h.next())[0] for _ in rooms}
    assert seen == set(rooms)
    assert h.probe.max_in_flight == 2


async def test_each_room_runs_in_a_named_task(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(rooms=("room-a", "room-b"))
    await h.next("room-a")
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert {"probe:room-a", "probe:room-b"} <= names


async def test_a_room_removed_from_the_config_stops_being_probed(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(rooms=("room-a", "room-b"))
    h.probe.results[h.targets["room-b"][0]] = DEAD
    await h.next("room-b")
    assert h.runner.tracker("room-b") is not None
    task = next(t for t in asyncio.all_tasks() if t.get_name() == "probe:room-b")
    del h.targets["room-b"]
    h.clock.advance(SETTINGS.interval_s)
    await asyncio.wait_for(task, WAIT_S)  # its loop ends at its next tick
    assert h.runner.tracker("room-b") is None
    await h.next("room-a")  # room-a's probe of the same tick
    calls = len(h.probe.calls)
    await h.step("room-a")
    assert h.probe.calls[calls:] == [h.targets["room-a"][0]]


async def test_an_error_in_one_tick_is_logged_and_probing_goes_on(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    errored = asyncio.Event()
    calls = {"n": 0}

    def flaky(room_id: str) -> Snapshot | None:
        calls["n"] += 1
        if calls["n"] == 3:  # the second tick's first look at the room
            errored.set()
            raise RuntimeError("provider bug")
        return h.snaps.get(room_id)

    h.runner._snapshot = flaky
    with capture_logs() as logs:
        await h.next("room-a")
        h.clock.advance(SETTINGS.interval_s)
        await asyncio.wait_for(errored.wait(), WAIT_S)
        decision = await h.step()
    assert decision.transition == "ok"
    assert any(e["event"] == "probe_tick_error" and e["room_id"] == "room-a" for e in logs)


def test_settings_defaults_and_validation() -> None:
    s = ProbeSettings()
    assert (s.enabled, s.interval_s, s.timeout_s, s.fail_after_s, s.ffprobe) == (
        True, 15.0, 10.0, 30.0, "ffprobe",
    )  # fmt: skip
    with pytest.raises(ValueError, match="extra"):
        ProbeSettings(intervall_s=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="greater than 0"):
        ProbeSettings(interval_s=0)
    with pytest.raises(ValueError, match="frozen"):
        s.enabled = False  # type: ignore[misc]
