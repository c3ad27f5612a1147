"""A window that opens while the previous window's stop is still failing keeps the job
(soak rooms bench-00000/00104/00146/00189, issue 24).

In a 429/5xx storm the stop at a window's end kept failing and only went through after the next
window had opened; the room then stopped the very stream the new window wanted and started
another (about 20 s off air). The order back ON while stopping now drops the pending stop and
lists: the running job is adopted. Pure machine scenarios with explicit times (u = 0.5).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.rooms.model import (
    Action,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ListJobs,
    ObservedJob,
    Op,
    Order,
    OrderChanged,
    QueryFailed,
    StartJob,
    StopFailed,
    StopJob,
    TimerFired,
    WindowClosed,
    WindowOpened,
)
from tests.rooms.test_machine_ladder import T0, S, Sim

JOB = "job-1"
THROTTLED = "Throttled: 429 APIGW.0308"


def live_in_window() -> Sim:
    sim = Sim()
    sim.feed(WindowOpened(window_id="w1", window_start=T0, deadline=T0 + timedelta(seconds=60)))
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=()))
    start = sim.one(StartJob)
    assert isinstance(start, StartJob)
    sim.feed(JobStarted(seq=start.seq, job_id=JOB))
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE
    return sim


def closing_in_a_storm(sim: Sim, failures: int = 2) -> StopJob:
    """The window ends; its stop fails ``failures`` times (each retried after the backoff).
    Returns the stop in flight."""
    sim.at(60).feed(WindowClosed(window_id="w1"))
    assert sim.room.state is S.STOPPING
    stop = sim.one(StopJob)
    assert isinstance(stop, StopJob) and stop.job_id == JOB
    for _ in range(failures):
        sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error=THROTTLED))
        assert sim.room.state is S.STOPPING
        sim.fire()
        stop = sim.one(StopJob)
        assert isinstance(stop, StopJob)
    return stop


def next_window(sim: Sim, at: float = 75) -> list[Action]:
    start = T0 + timedelta(seconds=at)
    return sim.at(at).feed(
        WindowOpened(window_id="w2", window_start=start, deadline=start + timedelta(seconds=60))
    )


def running(job: str = JOB) -> tuple[ObservedJob, ...]:
    return (ObservedJob(job, "PROCESSING"),)


def test_the_next_window_adopts_the_job_whose_stop_is_still_pending() -> None:
    """bench-00104: stop failing on 429, retry timer pending, the next window opens."""
    sim = live_in_window()
    stop = closing_in_a_storm(sim)
    sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error=THROTTLED))
    pending = sim.timer()  # the stop's retry, due after the window opens
    seen = next_window(sim)
    assert not [a for a in seen if isinstance(a, StopJob | StartJob)]
    assert sim.room.order is Order.ON and sim.room.state is S.UNKNOWN
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=running()))
    assert sim.room.state is S.LIVE and sim.room.job_id == JOB
    assert JOB not in sim.room.retired
    seen = list(sim.actions)
    sim.now = pending.at
    seen += sim.feed(TimerFired(seq=pending.seq))  # the dropped stop's retry: stale
    assert not [a for a in seen if isinstance(a, StopJob | StartJob)]
    assert sim.room.state is S.LIVE


def test_a_stop_in_flight_that_fails_after_the_window_opened_is_not_retried() -> None:
    sim = live_in_window()
    stop = closing_in_a_storm(sim)
    assert next_window(sim) == []  # the stop in flight answers first
    assert sim.room.state is S.STOPPING and sim.room.op is Op.STOP
    sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error=THROTTLED))
    assert not [a for a in sim.actions if isinstance(a, StopJob)]
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=running()))
    assert sim.room.state is S.LIVE and sim.room.job_id == JOB


def test_a_permanent_stop_failure_after_the_window_opened_keeps_the_job() -> None:
    sim = live_in_window()
    stop = closing_in_a_storm(sim, failures=0)
    next_window(sim)
    sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error="403", temporary=False))
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=running()))
    assert sim.room.state is S.LIVE and sim.room.job_id == JOB


def test_a_stop_that_went_through_after_the_window_opened_starts_a_new_job() -> None:
    sim = live_in_window()
    stop = closing_in_a_storm(sim)
    next_window(sim)
    sim.feed(JobStopped(seq=stop.seq, job_id=JOB))
    assert sim.room.state is S.STARTING and JOB in sim.room.retired
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=()))
    start = sim.one(StartJob)
    assert isinstance(start, StartJob) and start.window_key.startswith("w2@")


def test_a_job_gone_despite_the_failed_stop_is_replaced() -> None:
    """The failed stop had in fact ended the job: the listing shows nothing, a new job starts."""
    sim = live_in_window()
    closing_in_a_storm(sim, failures=0)
    stop = sim.one(StopJob)
    assert isinstance(stop, StopJob)
    sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error="503"))
    next_window(sim)
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=()))
    assert isinstance(sim.one(StartJob), StartJob)


def test_failing_lists_in_the_storm_neither_stop_nor_retire_nor_start() -> None:
    """The storm goes on: the lists fail too. The room keeps asking (UNKNOWN), the job keeps
    pushing, nothing is started beside it, and it is adopted when a list gets through."""
    sim = live_in_window()
    stop = closing_in_a_storm(sim, failures=0)
    sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error=THROTTLED))
    next_window(sim)
    seen: list[Action] = []
    for _ in range(4):
        lst = sim.one(ListJobs)
        assert isinstance(lst, ListJobs)
        seen += sim.feed(QueryFailed(seq=lst.seq, op="list", error=THROTTLED))
        assert sim.room.state is S.UNKNOWN and JOB not in sim.room.retired
        seen += sim.fire()
    assert not [a for a in seen if isinstance(a, StopJob | StartJob)]
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(JobsListed(seq=lst.seq, jobs=running()))
    assert sim.room.state is S.LIVE and sim.room.job_id == JOB


@pytest.mark.parametrize("op", [Op.LIST, Op.START])
def test_a_start_or_list_in_flight_when_the_order_returns_answers_in_starting(op: Op) -> None:
    """Order OFF during a start (or its list), then ON again before the answer: the answer
    is taken as a start's again, not stopped."""
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    if op is Op.START:
        sim.feed(JobsListed(seq=lst.seq, jobs=()))
    sim.feed(OrderChanged(order=Order.OFF))
    assert sim.room.state is S.STOPPING and sim.room.op is op
    assert sim.at(5).feed(OrderChanged(order=Order.ON)) == []
    assert sim.room.state is S.STARTING and sim.room.op is op
    if op is Op.START:
        sim.feed(JobStarted(seq=sim.room.op_seq, job_id=JOB))
        assert sim.room.job_id == JOB and sim.room.state is S.STARTING
    else:
        sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
        assert isinstance(sim.one(StartJob), StartJob)
    assert not [a for a in sim.actions if isinstance(a, StopJob)]


def test_a_start_of_unknown_outcome_while_stopping_is_not_retried_blind() -> None:
    """Order OFF while a start is in flight; its outcome is unknown; the room lists. The order
    comes back ON before that list answers: an empty answer backs off before a new start (the
    job may just not be listed yet), as after any unknown start."""
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(OrderChanged(order=Order.OFF))
    sim.feed(JobStartFailed(seq=sim.room.op_seq, error="timeout", outcome_unknown=True))
    assert sim.room.state is S.STOPPING and sim.room.op is Op.LIST
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    assert not [a for a in sim.actions if isinstance(a, StartJob)]
    assert sim.room.state is S.BACKOFF


def test_an_unknown_start_settled_by_stopping_does_not_delay_the_next_window() -> None:
    sim = Sim()
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(OrderChanged(order=Order.OFF))
    sim.feed(JobStartFailed(seq=sim.room.op_seq, error="timeout", outcome_unknown=True))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))  # nothing was started after all
    assert sim.room.state is S.IDLE and not sim.room.start_unknown
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    assert isinstance(sim.one(StartJob), StartJob)


def test_order_off_again_before_the_listing_answers_stops_the_job() -> None:
    sim = live_in_window()
    stop = closing_in_a_storm(sim, failures=0)
    sim.feed(StopFailed(seq=stop.seq, job_id=JOB, error=THROTTLED))
    next_window(sim)
    lst = sim.one(ListJobs)
    assert isinstance(lst, ListJobs)
    sim.feed(WindowClosed(window_id="w2"))
    sim.feed(JobsListed(seq=lst.seq, jobs=running()))
    assert sim.room.state is S.STOPPING
    again = sim.one(StopJob)
    assert isinstance(again, StopJob) and again.job_id == JOB
