"""Callbacks are hints (issue 20): their body is not signed, so none of them alone may stop,
restart or refresh a job or count towards quarantine, and none may hide a drop.

Pure machine scenarios with explicit simulated time (no jitter: u = 0.5). ``World`` plays the
job as MetaStudio would report it in reads (``duration`` runs on while the job lives,
``stream_duration`` only while it pushes) and answers the room's reads, fires its timer and
polls it on a fixed period, while the test injects callbacks — forged or genuine.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from orchestrator.rooms.model import (
    Action,
    Event,
    JobObserved,
    RefreshOutput,
    ResetExitConfig,
    RtmpStateReported,
    SetTimer,
    ShowJob,
    StopJob,
    TimerFired,
)
from orchestrator.rooms.policy import Policy
from tests.rooms.test_machine_ladder import T0, S, Sim
from tests.rooms.test_machine_push import armed, read

REPAIRS = (RefreshOutput, ResetExitConfig, StopJob)


def _seconds(sim: Sim) -> float:
    return (sim.now - T0).total_seconds()


@dataclass
class World:
    """The job behind the room, and a discrete-event loop over simulated seconds."""

    sim: Sim
    live_at: float = 0.0  # the job's duration counts from here
    pushing: bool = True
    pushed: float = 0.0  # stream seconds pushed before ``since``
    since: float = 0.0  # pushing (or not) since
    poll_s: float = 5.0
    read_delay_s: float = 0.1
    queue: list[tuple[float, int, str, object]] = field(default_factory=list)
    log: list[tuple[float, Action]] = field(default_factory=list)
    _n: itertools.count[int] = field(default_factory=itertools.count)

    def stream(self, t: float) -> float:
        return self.pushed + (t - self.since if self.pushing else 0.0)

    def link(self, t: float, up: bool) -> None:
        self.pushed, self.since, self.pushing = self.stream(t), t, up

    def at(self, t: float, kind: str, payload: object = None) -> None:
        heapq.heappush(self.queue, (t, next(self._n), kind, payload))

    def observe(self, t: float, seq: int | None) -> JobObserved:
        assert self.sim.room.job_id is not None
        return JobObserved(
            seq=seq, job_id=self.sim.room.job_id, state="PROCESSING",
            duration=round(t - self.live_at + 2.0, 3), stream_duration=round(self.stream(t), 3),
        )  # fmt: skip

    def feed(self, t: float, ev: Event) -> None:
        self.sim.at(t)
        for a in self.sim.feed(ev):
            self.log.append((t, a))
            if isinstance(a, SetTimer):
                self.at((a.at - T0).total_seconds(), "timer", a.seq)
            elif isinstance(a, ShowJob):
                self.at(t + self.read_delay_s, "show", a.seq)

    def run(self, until: float) -> None:
        for k in range(int(self.sim.now.timestamp() - T0.timestamp()) // int(self.poll_s) + 1,
                       int(until / self.poll_s) + 1):  # fmt: skip
            self.at(k * self.poll_s, "poll")
        while self.queue and self.queue[0][0] <= until:
            t, _, kind, payload = heapq.heappop(self.queue)
            if kind == "timer":
                assert isinstance(payload, int)
                self.feed(t, TimerFired(seq=payload))
            elif kind == "show":
                assert payload is None or isinstance(payload, int)
                self.feed(t, self.observe(t, payload))
            elif kind == "poll":
                self.feed(t, self.observe(t, None))
            elif kind == "callback":
                assert isinstance(payload, str) and self.sim.room.job_id is not None
                self.feed(t, RtmpStateReported(
                    job_id=self.sim.room.job_id, rtmp_state=payload, at=T0 + timedelta(seconds=t)
                ))  # fmt: skip
            elif kind == "drop":
                self.link(t, False)
        self.sim.at(until)

    def first(self, kinds: tuple[type[Action], ...], after: float = 0.0) -> float | None:
        return next((t for t, a in self.log if isinstance(a, kinds) and t >= after), None)


def live_world(policy: Policy | None = None) -> World:
    """LIVE since t=0 (duration 2 s at CONNECTED), pushing, with 60 s of reads behind it."""
    w = World(armed(policy))
    w.sim.at(60)
    return w


# --- no destructive action on a callback alone --------------------------------------------------


def test_forged_end_for_a_healthy_job_stops_nothing_and_counts_nothing() -> None:
    w = live_world()
    for i in range(5):  # five forged ENDs used to quarantine the room
        w.at(70 + 30 * i, "callback", "END")
    w.run(250)
    assert w.first(REPAIRS) is None  # no stop, no refresh, no widening
    assert w.sim.room.restart_failures == () and w.sim.room.retries == 0
    assert w.sim.room.state is S.LIVE
    assert sum(isinstance(a, ShowJob) for _, a in w.log) >= 5  # each was checked by a read


def test_forged_end_with_reads_that_cannot_show_the_push_stops_nothing() -> None:
    sim = Sim()
    sim.go_live()
    for i in range(5):
        actions = sim.at(10 + 100 * i).rtmp("END")
        assert not [a for a in actions if isinstance(a, StopJob)]
        show = [a for a in actions if isinstance(a, ShowJob)]
        if show:  # the read says the job runs
            sim.feed(JobObserved(seq=show[0].seq, job_id="job-1", state="PROCESSING"))
        sim.rtmp("CONNECTED")  # its link reconnects (reads cannot say otherwise)
        assert sim.room.state is S.LIVE
    assert sim.room.restart_failures == () and sim.room.state is not S.QUARANTINED


def test_end_restarts_once_a_read_says_the_job_died() -> None:
    sim = armed()
    show = sim.at(70).rtmp("END")[-1]
    assert isinstance(show, ShowJob)
    sim.feed(JobObserved(seq=show.seq, job_id="job-1", state="FAILED"))
    assert sim.room.state is S.BACKOFF and len(sim.room.restart_failures) == 1


def test_end_while_starting_reads_instead_of_restarting() -> None:
    sim = Sim()
    sim.go_live()
    sim.room = sim.room.__class__(
        **{**{f: getattr(sim.room, f) for f in sim.room.__slots__}, "state": S.STARTING}
    )
    actions = sim.at(5).rtmp("END")
    assert sim.room.state is S.STARTING and [type(a) for a in actions] == [ShowJob]


def test_forged_disconnected_for_a_healthy_job_refreshes_nothing() -> None:
    w = live_world()
    w.at(70, "callback", "DISCONNECTED")
    w.run(200)  # (the read at the drop's start already shows the stream growing since)
    assert w.first(REPAIRS) is None
    assert w.sim.room.state is S.LIVE and w.sim.room.restart_failures == ()


def test_a_confirming_read_that_fails_is_retried_not_skipped() -> None:
    from orchestrator.rooms.model import QueryFailed

    sim = armed()
    sim.at(70).rtmp("DISCONNECTED")
    read(sim, 70, 72, 70, seq=sim.room.op_seq)
    sim.at(80).feed(TimerFired(seq=sim.room.timer_seq))
    show = sim.one(ShowJob)
    sim.feed(QueryFailed(seq=show.seq, op="show", error="503"))  # type: ignore[attr-defined]
    assert sim.room.state is S.DEGRADED and not [a for a in sim.actions if isinstance(a, REPAIRS)]
    sim.fire()
    assert isinstance(sim.one(ShowJob), ShowJob)
    read(sim, sim.now.timestamp() - T0.timestamp(), 84, 70, seq=sim.room.op_seq)
    assert sim.room.state is S.REFRESHING  # the read confirmed: no push since the drop


# --- a callback never hides a drop --------------------------------------------------------------


@pytest.mark.parametrize("reported", [True, False], ids=["drop-reported", "drop-callback-lost"])
def test_a_held_drop_is_repaired_within_grace_plus_20s_whatever_callbacks_arrive(
    reported: bool,
) -> None:
    w = live_world()
    drop = 71.3
    w.at(drop, "drop")
    if reported:
        w.at(drop, "callback", "DISCONNECTED")
    for k in range(1, 60):  # a forged CONNECTED every 2 s from then on
        w.at(drop + 0.5 + 2 * k, "callback", "CONNECTED")
    w.run(drop + 120)
    repaired = w.first((ResetExitConfig, RefreshOutput), after=drop)
    assert repaired is not None, [(t, type(a).__name__) for t, a in w.log]
    assert repaired - drop <= w.sim.policy.grace_s + 20
    assert w.first((StopJob,)) is None or w.first((StopJob,)) > repaired  # type: ignore[operator]
    # the forged reports never made it LIVE again while nothing was pushed
    assert w.sim.room.state is not S.LIVE


def test_a_push_that_dies_right_after_going_live_is_seen_from_the_first_read() -> None:
    """Callbacks lost: LIVE on CONNECTED, the push dies a second later. The first read after
    LIVE is the reference, so the stall is seen within stall_after_s of it."""
    sim = Sim()
    sim.go_live()  # t=0, no read yet
    w = World(sim, live_at=0.0)
    w.at(1, "drop")
    w.run(60)
    repaired = w.first((ResetExitConfig, RefreshOutput))
    assert repaired is not None and repaired <= w.poll_s + sim.policy.stall_after_s + w.poll_s


def test_reported_recovery_confirmed_by_a_read_goes_live() -> None:
    """The genuine path still works: the service reconnects by itself within the grace."""
    w = live_world()
    w.at(70, "drop")
    w.at(70, "callback", "DISCONNECTED")
    w.at(74, "callback", "CONNECTED")
    w.run(73.9)
    w.sim.now = T0 + timedelta(seconds=74)
    w.link(74, True)
    w.run(80)
    assert w.sim.room.state is S.LIVE and w.first(REPAIRS) is None


# --- time sanity -----------------------------------------------------------------------------


def test_a_report_time_ahead_of_the_clock_cannot_silence_later_reports() -> None:
    sim = Sim()
    sim.go_live()
    job = sim.room.job_id
    assert job is not None
    sim.at(100).feed(RtmpStateReported(
        job_id=job, rtmp_state="CONNECTED", at=T0 + timedelta(seconds=125)
    ))  # fmt: skip
    sim.at(101).feed(
        RtmpStateReported(job_id=job, rtmp_state="DISCONNECTED", at=T0 + timedelta(seconds=101))
    )
    assert sim.room.state is S.DEGRADED


def test_the_playback_probe_is_an_observation_not_a_hint() -> None:
    """The probe catches a dead playback while the push looks fine in the reads: its report
    starts the ladder after the grace with no confirming read (a read would contradict it)."""
    sim = armed()
    job = sim.room.job_id
    assert job is not None
    sim.at(70).feed(RtmpStateReported(
        job_id=job, rtmp_state="DISCONNECTED", at=sim.now, observed=True
    ))  # fmt: skip
    assert sim.room.state is S.DEGRADED and not sim.room.drop_hinted
    sim.fire()
    assert isinstance(sim.one(ResetExitConfig), ResetExitConfig)


def _started_with_connecting_hint() -> Sim:
    """A job started; its CONNECTING callback arrived, its CONNECTED one was lost (the soak
    saw this with 5 % of callbacks lost: the daemon stopped the healthy job, #24)."""
    from orchestrator.rooms.model import JobsListed, JobStarted, ListJobs, StartJob, WindowOpened

    sim = Sim()
    sim.feed(WindowOpened(window_id="w", window_start=sim.now, deadline=None))
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=()))
    start = sim.one(StartJob)
    assert isinstance(start, StartJob)
    sim.feed(JobStarted(seq=start.seq, job_id="job-1"))
    sim.at(2).rtmp("CONNECTING")
    assert sim.room.state is S.STARTING
    return sim


def test_a_read_showing_the_push_ends_a_start_whose_connected_callback_was_lost() -> None:
    sim = _started_with_connecting_hint()
    read(sim, 30, 28, 26)  # the poll: PROCESSING, pushed 26 of its 28 s
    assert sim.room.state is S.LIVE
    assert not [a for a in sim.actions if isinstance(a, StopJob)]


def test_a_read_without_any_push_keeps_waiting_for_the_start() -> None:
    sim = _started_with_connecting_hint()
    read(sim, 30, 28, 0)  # PROCESSING but nothing pushed yet: still connecting
    assert sim.room.state is S.STARTING
