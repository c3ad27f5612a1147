"""Scenario tests of the recovery ladder with explicit times (no jitter: u = 0.5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from orchestrator.rooms.machine import step
from orchestrator.rooms.model import (
    Action,
    ClearAlert,
    CommandFailed,
    CommandSucceeded,
    Event,
    JobObserved,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ListJobs,
    ObservedJob,
    Order,
    OrderChanged,
    Poked,
    RaiseAlert,
    RefreshOutput,
    Reset,
    ResetExitConfig,
    Room,
    RoomState,
    RtmpStateReported,
    SetTimer,
    ShowJob,
    StartJob,
    StopJob,
    TimerFired,
    WindowClosed,
    WindowOpened,
)
from orchestrator.rooms.policy import Policy

T0 = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
S = RoomState


@dataclass
class Sim:
    """Feeds events at explicit times and remembers the last action of each kind."""

    policy: Policy = field(default_factory=Policy)
    room: Room = field(default_factory=lambda: Room(room_id="r1", state=RoomState.IDLE))
    now: datetime = T0
    actions: list[Action] = field(default_factory=list)

    def at(self, seconds: float) -> Sim:
        self.now = T0 + timedelta(seconds=seconds)
        return self

    def feed(self, ev: Event) -> list[Action]:
        self.room, self.actions = step(self.room, ev, self.now, self.policy)
        return self.actions

    def one(self, kind: type[Action]) -> Action:
        found = [a for a in self.actions if isinstance(a, kind)]
        assert len(found) == 1, (kind, self.actions)
        return found[0]

    def timer(self) -> SetTimer:
        t = self.one(SetTimer)
        assert isinstance(t, SetTimer)
        return t

    def fire(self) -> list[Action]:
        """Advance to the room's pending timer and fire it."""
        t = self.timer()
        self.now = t.at
        return self.feed(TimerFired(seq=t.seq))

    def rtmp(self, state: str) -> list[Action]:
        assert self.room.job_id is not None
        return self.feed(RtmpStateReported(job_id=self.room.job_id, rtmp_state=state, at=self.now))

    def go_live(self, job: str = "job-1") -> None:
        self.feed(WindowOpened(window_id="w", window_start=self.now, deadline=None))
        lst = self.one(ListJobs)
        assert isinstance(lst, ListJobs)
        self.feed(JobsListed(seq=lst.seq, jobs=()))
        start = self.one(StartJob)
        assert isinstance(start, StartJob)
        self.feed(JobStarted(seq=start.seq, job_id=job))
        assert self.room.state is S.STARTING
        self.rtmp("CONNECTED")
        assert self.room.state is S.LIVE


def test_order_on_lists_before_starting_and_adopts_a_running_job() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    assert sim.room.state is S.STARTING
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=(ObservedJob("old", "PROCESSING"),)))
    assert sim.room.state is S.LIVE
    assert sim.room.job_id == "old"
    assert not [a for a in sim.actions if isinstance(a, StartJob)]


def test_start_intent_key_is_window_and_attempt() -> None:
    sim = Sim()
    sim.feed(WindowOpened(window_id="evening", window_start=T0, deadline=None))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    start = sim.one(StartJob)
    assert isinstance(start, StartJob)
    assert start.window_key == f"evening@{T0.isoformat()}"
    assert start.attempt == 1


def test_drop_recovered_during_grace_goes_back_live_without_commands() -> None:
    sim = Sim()
    sim.go_live()
    sim.at(100).rtmp("DISCONNECTED")
    assert sim.room.state is S.DEGRADED
    assert sim.timer().at == sim.now + timedelta(seconds=10)
    sim.at(105).rtmp("CONNECTED")
    assert sim.room.state is S.LIVE
    assert not [a for a in sim.actions if isinstance(a, RefreshOutput | StopJob)]


def test_no_grace_refreshes_on_the_drop_itself() -> None:
    """grace_s = 0: the drop's own event sends the refresh (no timer hop, no DEGRADED stop),
    and the drop is still tracked for the unrecovered alert."""
    sim = Sim(policy=Policy(grace_s=0, widen_exit_minutes=0))
    sim.go_live()
    actions = sim.at(100).rtmp("DISCONNECTED")
    assert sim.room.state is S.REFRESHING and sim.room.drop_since == sim.now
    assert [type(a) for a in actions] == [RefreshOutput]
    widened = Sim(policy=Policy(grace_s=0))
    widened.go_live()
    assert [type(a) for a in widened.rtmp("DISCONNECTED")] == [ResetExitConfig]


def test_ladder_widen_then_refresh_current_then_backup_then_restart() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=2))
    sim.go_live()
    sim.at(100).rtmp("DISCONNECTED")
    sim.fire()  # grace over at 110
    assert sim.now == T0 + timedelta(seconds=110)
    assert sim.room.state is S.REFRESHING
    widen = sim.one(ResetExitConfig)
    assert isinstance(widen, ResetExitConfig) and widen.minutes == 10
    sim.feed(CommandSucceeded(seq=widen.seq, command="RESET_EXIT_CONFIG"))
    indexes = []
    for _ in range(4):
        ref = sim.one(RefreshOutput)
        assert isinstance(ref, RefreshOutput)
        indexes.append(ref.output_index)
        sim.feed(CommandSucceeded(seq=ref.seq, command="REFRESH_OUTPUT_URL"))
        assert sim.timer().at == sim.now + timedelta(seconds=10)  # refresh_confirm_s
        sim.fire()  # no CONNECTED in time
        if sim.room.state is S.REFRESHING:
            sim.fire()  # backoff before the next refresh
    assert indexes == [0, 0, 1, 1]
    assert sim.room.state is S.RESTARTING
    stop = sim.one(StopJob)
    assert isinstance(stop, StopJob) and stop.job_id == "job-1"
    sim.feed(JobStopped(seq=stop.seq, job_id="job-1"))
    assert sim.room.state is S.BACKOFF
    assert sim.room.next_retry_at == sim.now  # the first restart since LIVE goes at once
    sim.fire()
    assert sim.room.state is S.STARTING
    lst = sim.one(ListJobs)
    # the stopped job still shows PROCESSING for a moment: it must not be adopted
    sim.feed(JobsListed(seq=lst.seq, jobs=(ObservedJob("job-1", "PROCESSING"),)))  # type: ignore[attr-defined]
    start = sim.one(StartJob)
    assert isinstance(start, StartJob) and start.attempt == 2


def test_refresh_backoff_grows_by_factor() -> None:
    sim = Sim(policy=Policy(widen_exit_minutes=0, refresh_tries=3))
    sim.go_live()
    sim.at(0).rtmp("RECONNECTING")
    sim.fire()
    delays = []
    for _ in range(2):
        ref = sim.one(RefreshOutput)
        sim.feed(CommandFailed(seq=ref.seq, command="REFRESH_OUTPUT_URL", error="500"))  # type: ignore[attr-defined]
        delays.append((sim.timer().at - sim.now).total_seconds())
        sim.fire()
    assert delays == [2.0, 3.0]


def test_connected_during_refresh_confirm_goes_live_and_resets_ladder() -> None:
    sim = Sim()
    sim.go_live()
    sim.at(10).rtmp("DISCONNECTED")
    sim.fire()
    sim.feed(CommandFailed(seq=sim.room.op_seq, command="RESET_EXIT_CONFIG", error="x"))
    ref = sim.one(RefreshOutput)
    sim.feed(CommandSucceeded(seq=ref.seq, command="REFRESH_OUTPUT_URL"))  # type: ignore[attr-defined]
    sim.at(25).rtmp("CONNECTED")
    assert sim.room.state is S.LIVE
    assert (sim.room.output_index, sim.room.refresh_try, sim.room.retries) == (0, 0, 0)


def test_job_failed_restarts_without_a_stop_at_once_then_with_backoff() -> None:
    sim = Sim()
    sim.go_live()
    sim.at(50).feed(JobObserved(job_id="job-1", state="FAILED"))
    assert sim.room.state is S.BACKOFF
    assert not [a for a in sim.actions if isinstance(a, StopJob)]
    assert sim.timer().at == sim.now  # it was LIVE until now: no crash loop, no waiting
    sim.fire()
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    start = sim.one(StartJob)
    sim.feed(JobStarted(seq=start.seq, job_id="job-2"))  # type: ignore[attr-defined]
    sim.at(60).feed(JobObserved(job_id="job-2", state="FAILED"))  # never got to LIVE
    assert sim.timer().at == sim.now + timedelta(seconds=5)


def test_rtmp_end_callback_reads_the_job_and_only_the_read_restarts_it() -> None:
    """A callback's body is not signed: END alone stops nothing and counts nothing."""
    sim = Sim()
    sim.go_live()
    sim.at(50).rtmp("END")
    assert sim.room.state is S.DEGRADED
    assert not [a for a in sim.actions if isinstance(a, StopJob)]
    show = sim.one(ShowJob)
    assert isinstance(show, ShowJob) and sim.room.restart_failures == ()
    sim.feed(JobObserved(seq=show.seq, job_id="job-1", state="PROCESSING", rtmp_state="END"))
    assert sim.room.state is S.RESTARTING  # the read says the link ended
    assert isinstance(sim.one(StopJob), StopJob)


def test_restart_backoff_doubles_and_quarantine_after_k_failures() -> None:
    sim = Sim(policy=Policy(quarantine_after=3))
    sim.go_live()
    delays = []
    for i in range(3):
        sim.feed(JobObserved(job_id=sim.room.job_id, state="FAILED"))
        if sim.room.state is S.QUARANTINED:
            break
        delays.append((sim.timer().at - sim.now).total_seconds())
        sim.fire()
        sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
        start = sim.one(StartJob)
        sim.feed(JobStarted(seq=start.seq, job_id=f"job-{i + 2}"))  # type: ignore[attr-defined]
    assert delays == [0.0, 5.0]
    assert sim.room.state is S.QUARANTINED
    alert = sim.one(RaiseAlert)
    assert isinstance(alert, RaiseAlert) and alert.kind == "quarantined"
    assert "3 failed restarts" in (sim.room.last_error or "")
    # a quarantined room does nothing until Reset
    assert sim.feed(Poked()) == []
    assert sim.feed(TimerFired(seq=sim.room.timer_seq)) == []
    sim.feed(Reset(cause="mqtt:reset"))
    assert sim.room.state is S.UNKNOWN
    assert isinstance(sim.one(ClearAlert), ClearAlert)
    assert isinstance(sim.one(ListJobs), ListJobs)
    assert sim.room.restart_failures == ()


def test_failures_outside_the_window_do_not_count() -> None:
    sim = Sim(policy=Policy(quarantine_after=2, quarantine_window_s=60))
    sim.go_live()
    sim.at(0).feed(JobObserved(job_id="job-1", state="FAILED"))
    sim.fire()
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(JobStarted(seq=sim.room.op_seq, job_id="job-2"))
    sim.at(200).feed(JobObserved(job_id="job-2", state="FAILED"))
    assert sim.room.state is S.BACKOFF


def test_permanent_start_error_quarantines_at_once() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(JobStartFailed(seq=sim.room.op_seq, error="MSS.00000003 Invalid parameter"))
    assert sim.room.state is S.QUARANTINED
    assert "MSS.00000003" in (sim.room.last_error or "")


def test_unknown_start_outcome_lists_then_adopts_the_ghost() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(JobStartFailed(seq=sim.room.op_seq, error="timeout", temporary=True,
                            outcome_unknown=True))  # fmt: skip
    lst = sim.one(ListJobs)
    assert not [a for a in sim.actions if isinstance(a, StartJob)]
    sim.feed(JobsListed(seq=lst.seq, jobs=(ObservedJob("ghost", "WAITING"),)))  # type: ignore[attr-defined]
    assert sim.room.state is S.STARTING
    assert sim.room.job_id == "ghost"
    assert not [a for a in sim.actions if isinstance(a, StartJob)]


def test_temporary_start_error_backs_off_honouring_retry_after() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(JobStartFailed(seq=sim.room.op_seq, error="429", temporary=True, retry_after=42))
    assert sim.room.state is S.BACKOFF
    assert sim.room.next_retry_at == sim.now + timedelta(seconds=42)
    sim.fire()
    assert isinstance(sim.one(ListJobs), ListJobs)  # list again before the next start


def test_start_not_confirmed_in_time_restarts_once_a_read_confirms_it() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(JobStarted(seq=sim.room.op_seq, job_id="slow"))
    assert sim.timer().at == sim.now + timedelta(seconds=120)
    sim.fire()
    show = sim.one(ShowJob)  # the timer alone stops nothing: it reads
    assert isinstance(show, ShowJob) and sim.room.state is S.STARTING
    sim.feed(JobObserved(seq=show.seq, job_id="slow", state="WAITING"))
    assert sim.room.state is S.RESTARTING
    assert isinstance(sim.one(StopJob), StopJob)
    assert sim.room.last_error == "not live within 120s (WAITING)"


def test_stale_watchdog_reads_the_job() -> None:
    sim = Sim()
    sim.go_live()
    assert sim.timer().at == sim.now + timedelta(seconds=90)
    sim.fire()
    show = sim.one(ShowJob)
    assert isinstance(show, ShowJob) and show.job_id == "job-1"
    sim.feed(JobObserved(seq=show.seq, job_id="job-1", state="PROCESSING"))
    assert sim.room.state is S.LIVE
    assert sim.room.last_observed_at == sim.now


def test_polls_of_a_healthy_room_leave_the_watchdog_alone_until_it_fires() -> None:
    """A poll confirming a LIVE room changes nothing but its stamp (no new timer per poll);
    the watchdog, when it fires, moves itself to stale_after_s after the last observation."""
    sim = Sim()
    sim.go_live()
    armed = sim.timer()
    timer_seq = sim.room.timer_seq
    sim.at(30)
    poll = JobObserved(job_id="job-1", state="PROCESSING", rtmp_state="CONNECTED", cause="poll")
    assert sim.feed(poll) == []
    assert (sim.room.state, sim.room.timer_seq, sim.room.last_observed_at) == (
        S.LIVE, timer_seq, sim.now,
    )  # fmt: skip
    seen = sim.now
    sim.now = armed.at
    actions = sim.feed(TimerFired(seq=armed.seq))
    assert [type(a) for a in actions] == [SetTimer]  # no read: the poll confirmed it
    assert sim.timer().at == seen + timedelta(seconds=90)
    sim.fire()  # nothing confirmed it since: now it reads the job
    assert isinstance(sim.one(ShowJob), ShowJob)
    assert sim.timer().at == sim.now + timedelta(seconds=90)


def test_poked_shows_known_job_and_lists_otherwise() -> None:
    sim = Sim()
    sim.go_live()
    sim.feed(Poked())
    assert isinstance(sim.one(ShowJob), ShowJob)
    sim2 = Sim(room=Room(room_id="r1"))
    sim2.feed(Poked())
    assert isinstance(sim2.one(ListJobs), ListJobs)


def test_window_closed_stops_and_goes_idle() -> None:
    sim = Sim()
    sim.go_live()
    sim.feed(WindowClosed(window_id="other"))
    assert sim.room.state is S.LIVE
    sim.feed(WindowClosed(window_id="w"))
    assert sim.room.state is S.STOPPING
    stop = sim.one(StopJob)
    sim.feed(JobStopped(seq=stop.seq, job_id="job-1"))  # type: ignore[attr-defined]
    assert sim.room.state is S.IDLE
    assert sim.room.job_id is None


def test_order_off_during_start_stops_the_job_once_it_exists() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    start = sim.one(StartJob)
    sim.feed(OrderChanged(order=Order.OFF))
    assert sim.room.state is S.STOPPING
    assert sim.actions == []
    sim.feed(JobStarted(seq=start.seq, job_id="late"))  # type: ignore[attr-defined]
    stop = sim.one(StopJob)
    assert isinstance(stop, StopJob) and stop.job_id == "late"


def test_startup_reconcile_adopts_or_starts() -> None:
    sim = Sim(room=Room(room_id="r1", order=Order.ON, job_id="j", window_id="w", window_start=T0))
    sim.feed(JobsListed(jobs=(ObservedJob("j", "PROCESSING"),)))  # unsolicited (startup)
    assert sim.room.state is S.LIVE
    idle = Sim(room=Room(room_id="r1", order=Order.ON))
    idle.feed(JobsListed(jobs=()))
    assert idle.room.state is S.UNKNOWN
    assert isinstance(idle.one(ListJobs), ListJobs)  # never start on someone else's listing
    idle.feed(JobsListed(seq=idle.room.op_seq, jobs=()))
    assert isinstance(idle.one(StartJob), StartJob)


def test_ladder_worst_case_fits_inside_the_service_patience() -> None:
    p = Policy()
    assert p.ladder_worst_case_s() == 46.0
    assert p.ladder_worst_case_s(call_s=15.0) < 180.0


def test_operator_restart_does_not_count_as_failure() -> None:
    sim = Sim(policy=Policy(quarantine_after=1))
    sim.go_live()
    from orchestrator.rooms.model import RefreshRequested, RestartRequested

    sim.feed(RestartRequested(cause="mqtt:restart"))
    assert sim.room.state is S.RESTARTING
    stop = sim.one(StopJob)
    sim.feed(JobStopped(seq=stop.seq, job_id="job-1"))  # type: ignore[attr-defined]
    assert sim.room.state is S.BACKOFF
    assert sim.room.restart_failures == ()
    sim.feed(RestartRequested())  # skip the wait
    assert sim.room.state is S.STARTING
    assert isinstance(sim.one(ListJobs), ListJobs)
    live = Sim()
    live.go_live()
    live.feed(RefreshRequested())
    assert live.room.state is S.REFRESHING
    ref = live.one(RefreshOutput)
    assert isinstance(ref, RefreshOutput) and ref.output_index == 0


def test_unrecovered_alert_after_the_threshold_and_cleared_on_live() -> None:
    sim = Sim(policy=Policy(unrecovered_alert_s=60, widen_exit_minutes=0, outputs=3))
    sim.go_live()
    sim.at(0).rtmp("DISCONNECTED")
    assert sim.room.drop_since == sim.now
    grace = sim.timer()
    sim.feed(JobObserved(seq=sim.one(ShowJob).seq, job_id="job-1", state="PROCESSING"))  # type: ignore[attr-defined]
    sim.actions = [grace]  # the read at the drop's start leaves the grace running
    raised: list[RaiseAlert] = []
    while sim.room.state in (S.DEGRADED, S.REFRESHING) and not raised:
        if sim.room.op is not None:
            sim.feed(CommandSucceeded(seq=sim.room.op_seq, command="REFRESH_OUTPUT_URL"))
        else:
            sim.fire()
        raised = [a for a in sim.actions if isinstance(a, RaiseAlert)]
    assert raised and raised[0].kind == "unrecovered"
    assert (sim.now - T0).total_seconds() >= 60
    assert sim.room.alert == "unrecovered"
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE
    cleared = sim.one(ClearAlert)
    assert isinstance(cleared, ClearAlert) and cleared.kind == "unrecovered"
    assert sim.room.alert is None and sim.room.drop_since is None


def test_unknown_start_with_nothing_listed_backs_off_instead_of_looping() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    delays = []
    for _ in range(3):
        sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
        start = sim.one(StartJob)
        sim.feed(JobStartFailed(seq=start.seq, error="409 Conflict", temporary=True,  # type: ignore[attr-defined]
                                outcome_unknown=True))  # fmt: skip
        assert isinstance(sim.one(ListJobs), ListJobs)
        sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
        assert sim.room.state is S.BACKOFF
        assert not [a for a in sim.actions if isinstance(a, StartJob)]
        delays.append((sim.timer().at - sim.now).total_seconds())
        sim.fire()
    assert delays == [0.0, 5.0, 10.0]  # one retry at once, then backing off


def test_temporary_start_errors_retry_sooner_than_job_failures() -> None:
    """A gateway failing some calls (5xx/429): each attempt lists first, so retrying is safe,
    and 0, 2, 3, 4.5 s gets a start through a partial storm; job failures keep 0, 5, 10 s."""
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    delays = []
    for _ in range(4):
        sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
        start = sim.one(StartJob)
        sim.feed(JobStartFailed(seq=start.seq, error="503", temporary=True))  # type: ignore[attr-defined]
        assert sim.room.state is S.BACKOFF
        delays.append((sim.timer().at - sim.now).total_seconds())
        sim.fire()
    assert delays == [0.0, 2.0, 3.0, 4.5]
    assert sim.room.restart_failures == ()  # API errors are not job failures: no quarantine


def _restart_to_live(sim: Sim, job: str) -> None:
    """Wait out the backoff, list (nothing running), start ``job`` and see it CONNECTED."""
    sim.fire()
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    start = sim.one(StartJob)
    sim.feed(JobStarted(seq=start.seq, job_id=job))  # type: ignore[attr-defined]
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE


def test_a_job_that_dies_soon_after_every_start_backs_off_and_is_quarantined() -> None:
    """Reaching LIVE is not recovering: a job failing 3 s after each start used to restart at
    once forever (LIVE reset both the backoff and the quarantine count)."""
    sim = Sim(policy=Policy(quarantine_after=4))
    sim.go_live()
    sim.at(600)  # a long, stable first spell: the first failure restarts at once
    waits = []
    for i in range(4):
        sim.feed(JobObserved(job_id=sim.room.job_id, state="FAILED"))
        if sim.room.state is S.QUARANTINED:
            break
        waits.append((sim.timer().at - sim.now).total_seconds())
        _restart_to_live(sim, f"job-{i + 2}")
        sim.now += timedelta(seconds=3)
    assert waits == [0.0, 5.0, 10.0]
    assert sim.room.state is S.QUARANTINED
    assert "4 failed restarts" in (sim.room.last_error or "")
    assert isinstance(sim.one(RaiseAlert), RaiseAlert)


def test_a_room_live_for_stable_after_s_has_recovered() -> None:
    sim = Sim(policy=Policy(quarantine_after=3, stable_after_s=60))
    sim.go_live()
    sim.at(600).feed(JobObserved(job_id="job-1", state="FAILED"))
    _restart_to_live(sim, "job-2")
    sim.now += timedelta(seconds=3)
    sim.feed(JobObserved(job_id="job-2", state="FAILED"))
    assert (sim.room.retries, len(sim.room.restart_failures)) == (2, 2)
    _restart_to_live(sim, "job-3")
    live_at = sim.now
    sim.now = live_at + timedelta(seconds=59)
    sim.feed(JobObserved(job_id="job-3", state="PROCESSING", rtmp_state="CONNECTED"))
    assert (sim.room.retries, len(sim.room.restart_failures)) == (2, 2)  # not yet
    sim.now = live_at + timedelta(seconds=60)
    sim.feed(JobObserved(job_id="job-3", state="PROCESSING", rtmp_state="CONNECTED"))
    assert (sim.room.retries, sim.room.restart_failures) == (0, ())
    assert sim.room.state is S.LIVE
    # a failure after a stable spell is a first one: at once, and far from quarantine
    sim.now += timedelta(seconds=1)
    sim.feed(JobObserved(job_id="job-3", state="FAILED"))
    assert sim.room.state is S.BACKOFF
    assert sim.timer().at == sim.now
    assert len(sim.room.restart_failures) == 1


def test_the_failure_event_itself_settles_a_stable_room() -> None:
    """No poll in between: the failing read is the first event past stable_after_s."""
    sim = Sim(policy=Policy(quarantine_after=2))
    sim.go_live()
    sim.at(600).feed(JobObserved(job_id="job-1", state="FAILED"))
    _restart_to_live(sim, "job-2")
    sim.now += timedelta(seconds=61)
    sim.feed(JobObserved(job_id="job-2", state="FAILED"))
    assert sim.room.state is S.BACKOFF  # one failure, not two: not quarantined
    assert sim.timer().at == sim.now


def test_stable_after_zero_recovers_on_reaching_live() -> None:
    sim = Sim(policy=Policy(quarantine_after=2, stable_after_s=0))
    sim.go_live()
    for i in range(3):
        sim.now += timedelta(seconds=3)
        sim.feed(JobObserved(job_id=sim.room.job_id, state="FAILED"))
        assert sim.room.state is S.BACKOFF
        assert sim.timer().at == sim.now
        _restart_to_live(sim, f"job-{i + 2}")
        assert (sim.room.retries, sim.room.restart_failures) == (0, ())
