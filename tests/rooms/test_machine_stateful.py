"""Hypothesis state-machine test: random event sequences against a small simulated tenant.

The "world" is the truth MetaStudio would hold: which jobs exist and in which state. Actions the
room emits are executed against it at once (as the service would) and their answers are
delivered later, in any order, or lost when the driver restarts. The properties:

* a StartJob is never emitted while a job is WAITING/PROCESSING or another start is in flight,
  so the world never holds two running jobs for the room (no duplicate push);
* a QUARANTINED room emits nothing until a Reset;
* the room is always in a declared state and only moves along the table's declared edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator.rooms.machine import TABLE, step
from orchestrator.rooms.model import (
    Action,
    CommandFailed,
    CommandSucceeded,
    Event,
    InsertScript,
    InsertScriptRequested,
    JobObserved,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ListJobs,
    ObservedJob,
    Order,
    OrderChanged,
    OutputChanged,
    Poked,
    QueryFailed,
    RefreshOutput,
    RefreshRequested,
    Reset,
    ResetExitConfig,
    RestartRequested,
    Resumed,
    Room,
    RoomState,
    RtmpStateReported,
    SetTimer,
    ShowJob,
    StartJob,
    StopFailed,
    StopJob,
    TimerFired,
    WindowClosed,
    WindowOpened,
)
from orchestrator.rooms.policy import Policy

T0 = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
ACTIVE = ("WAITING", "PROCESSING")
POLICY = Policy(outputs=2, refresh_tries=2, quarantine_after=4)


@dataclass
class Call:
    action: Action


class RoomInTenant(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.room = Room(room_id="r1")
        self.now = T0
        self.world: dict[str, str] = {}
        self.calls: list[Call] = []
        self.timer: SetTimer | None = None
        self.jobs_made = 0

    # ------------------------------------------------------------------ plumbing

    def active_jobs(self) -> list[str]:
        return [j for j, s in self.world.items() if s in ACTIVE]

    def starts_in_flight(self) -> int:
        return sum(1 for c in self.calls if isinstance(c.action, StartJob))

    def new_job(self, state: str = "WAITING") -> str:
        self.jobs_made += 1
        job = f"job-{self.jobs_made}"
        self.world[job] = state
        return job

    def feed(self, ev: Event) -> None:
        before = self.room
        self.room, actions = step(before, ev, self.now, POLICY)
        assert isinstance(self.room.state, RoomState)
        rule_ = TABLE.get((before.state, type(ev)))
        allowed = {before.state} | (set(rule_.targets) if rule_ else set())
        assert self.room.state in allowed, (before.state, ev, self.room.state)
        if before.state is RoomState.QUARANTINED and not isinstance(ev, Reset):
            assert actions == []
        for action in actions:
            self.execute(action)

    def execute(self, action: Action) -> None:
        if isinstance(action, StartJob):
            assert not self.active_jobs(), f"start while {self.active_jobs()} run"
            assert self.starts_in_flight() == 0, "two starts in flight"
            self.calls.append(Call(action))
        elif isinstance(action, StopJob) and action.seq == 0:
            if self.world.get(action.job_id) in ACTIVE:
                self.world[action.job_id] = "SUCCEED"
        elif isinstance(action, SetTimer):
            self.timer = action
        elif isinstance(action, InsertScript):  # said by the room's own job, held live
            assert action.job_id == self.room.job_id
            assert self.room.state in (RoomState.LIVE, RoomState.DEGRADED)
        elif isinstance(action, ListJobs | ShowJob | StopJob | RefreshOutput | ResetExitConfig):
            self.calls.append(Call(action))

    def answer(self, call: Call, outcome: int) -> Event | None:
        """Carry out a call against the world and build its answer."""
        a = call.action
        if isinstance(a, ListJobs):
            if outcome == 4:
                return QueryFailed(seq=a.seq, op="list", error="503", temporary=True)
            jobs = tuple(ObservedJob(j, s) for j, s in self.world.items() if s in ACTIVE)
            return JobsListed(seq=a.seq, jobs=jobs)
        if isinstance(a, ShowJob):
            state = self.world.get(a.job_id)
            return JobObserved(seq=a.seq, job_id=a.job_id, state=state if state in ACTIVE else None)
        if isinstance(a, StopJob):
            if outcome == 4:
                return StopFailed(seq=a.seq, job_id=a.job_id, error="503", temporary=True)
            if self.world.get(a.job_id) in ACTIVE:
                self.world[a.job_id] = "SUCCEED"
            return JobStopped(seq=a.seq, job_id=a.job_id)
        if isinstance(a, StartJob):
            if outcome in (0, 1):
                return JobStarted(seq=a.seq, job_id=self.new_job())
            if outcome == 2:  # ghost: created, answer lost
                self.new_job()
                return JobStartFailed(seq=a.seq, error="timeout", temporary=True,
                                      outcome_unknown=True)  # fmt: skip
            if outcome == 3:  # 5xx, yet the job exists
                self.new_job()
                return JobStartFailed(seq=a.seq, error="500", temporary=True)
            if outcome == 4:
                return JobStartFailed(seq=a.seq, error="429", temporary=True, retry_after=3)
            return JobStartFailed(seq=a.seq, error="MSS.00000003")
        assert isinstance(a, RefreshOutput | ResetExitConfig)
        command = "REFRESH_OUTPUT_URL" if isinstance(a, RefreshOutput) else "RESET_EXIT_CONFIG"
        if outcome >= 3:
            return CommandFailed(seq=a.seq, command=command, error="500")
        return CommandSucceeded(seq=a.seq, command=command)

    # ------------------------------------------------------------------ rules

    @rule(on=st.booleans(), window=st.sampled_from(["w1", "w2"]))
    def schedule(self, on: bool, window: str) -> None:
        if on:
            self.feed(WindowOpened(window_id=window, window_start=self.now, deadline=None))
        else:
            self.feed(WindowClosed(window_id=window))

    @rule(on=st.booleans())
    def manual_order(self, on: bool) -> None:
        self.feed(OrderChanged(order=Order.ON if on else Order.OFF))

    @precondition(lambda self: bool(self.calls))
    @rule(pick=st.integers(0, 50), outcome=st.integers(0, 5))
    def deliver(self, pick: int, outcome: int) -> None:
        call = self.calls.pop(pick % len(self.calls))
        ev = self.answer(call, outcome)
        if ev is not None:
            self.feed(ev)

    @precondition(lambda self: self.timer is not None)
    @rule()
    def fire_timer(self) -> None:
        assert self.timer is not None
        self.now = max(self.now, self.timer.at)
        seq, self.timer = self.timer.seq, None
        self.feed(TimerFired(seq=seq))

    @rule(seconds=st.floats(0, 400))
    def time_passes(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(stale=st.integers(1, 5))
    def stale_answers(self, stale: int) -> None:
        seq = max(0, self.room.seq - stale)
        if any(getattr(c.action, "seq", None) == seq for c in self.calls):
            return  # that call is still in flight: its answer is not stale
        self.feed(JobsListed(seq=seq, jobs=()))
        self.feed(TimerFired(seq=seq))

    @rule()
    def job_dies(self) -> None:
        for job in self.active_jobs():
            self.world[job] = "FAILED"

    @rule()
    def poll(self) -> None:
        job = self.room.job_id
        if job is not None:
            state = self.world.get(job)
            self.feed(JobObserved(job_id=job, state=state if state in ACTIVE else None))
        else:
            self.feed(JobObserved(job_id=None, state=None))

    @rule()
    def startup_listing(self) -> None:
        jobs = tuple(ObservedJob(j, s) for j, s in self.world.items() if s in ACTIVE)
        self.feed(JobsListed(jobs=jobs))

    @rule(
        state=st.sampled_from(["CONNECTING", "CONNECTED", "DISCONNECTED", "RECONNECTING", "END"]),
        ours=st.booleans(),
        age=st.floats(-30, 30),
    )
    def callback(self, state: str, ours: bool, age: float) -> None:
        job = self.room.job_id if ours and self.room.job_id else "someone-else"
        if state == "CONNECTED" and self.world.get(job) not in ACTIVE:
            return  # a dead job does not report CONNECTED
        at = self.now + timedelta(seconds=age)
        self.feed(RtmpStateReported(job_id=job, rtmp_state=state, at=at))

    @rule(kind=st.sampled_from(["poke", "reset", "output", "restart", "refresh", "script"]))
    def operator(self, kind: str) -> None:
        ev = {
            "poke": Poked(), "reset": Reset(), "output": OutputChanged(),
            "restart": RestartRequested(), "refresh": RefreshRequested(),
            "script": InsertScriptRequested(request_id=1, text="hi"),
        }[kind]  # fmt: skip
        self.feed(ev)

    @rule(took_effect=st.booleans())
    def driver_restarts(self, took_effect: bool) -> None:
        """The worker crashed: calls in flight are abandoned (they may or may not have landed)."""
        for call in self.calls:
            if took_effect and isinstance(call.action, StartJob):
                self.new_job()
            stop = call.action if isinstance(call.action, StopJob) else None
            if took_effect and stop is not None and self.world.get(stop.job_id) in ACTIVE:
                self.world[stop.job_id] = "SUCCEED"
        self.calls.clear()
        self.timer = None
        self.feed(Resumed())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def never_two_running_jobs(self) -> None:
        assert len(self.active_jobs()) <= 1, self.world

    @invariant()
    def declared_state(self) -> None:
        assert self.room.state in set(RoomState)

    @invariant()
    def quarantined_has_alert(self) -> None:
        if self.room.state is RoomState.QUARANTINED:
            assert self.room.alert == "quarantined"


TestRoomInTenant = RoomInTenant.TestCase
TestRoomInTenant.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
