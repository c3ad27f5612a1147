"""The start-confirmation timer reads before it restarts (soak room bench-00030, issue 24).

``start_confirm_s`` running out means only that the room has not *applied* a CONNECTED: under
load a callback can be accepted seconds late and still sit in the room's queue behind the timer.
Stopping the job then was an action on belief; the timer now reads the job, and only a read
showing it not on air (WAITING, or PROCESSING with no push) or dead restarts it.
Pure machine scenarios with explicit times (no jitter: u = 0.5).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.rooms.model import (
    JobObserved,
    JobsListed,
    JobStarted,
    Op,
    Order,
    OrderChanged,
    Poked,
    QueryFailed,
    RtmpStateReported,
    SetTimer,
    ShowJob,
    StopJob,
    TimerFired,
    Wait,
)
from orchestrator.rooms.policy import Policy
from tests.rooms.test_machine_ladder import S, Sim

JOB = "job-1"


def started(policy: Policy | None = None) -> Sim:
    """STARTING on ``JOB`` (start answered at t=0), its confirmation timer armed."""
    sim = Sim(policy=policy or Policy(start_confirm_s=2.0))
    sim.feed(OrderChanged(order=Order.ON))
    sim.feed(JobsListed(seq=sim.room.op_seq, jobs=()))
    sim.feed(JobStarted(seq=sim.room.op_seq, job_id=JOB))
    assert sim.room.state is S.STARTING and sim.room.wait is Wait.START_CONFIRM
    return sim


def fire_confirm(sim: Sim) -> ShowJob:
    """Fire the room's pending timer (set by an earlier step: ``sim.actions`` may not hold it)."""
    assert sim.room.wait is Wait.START_CONFIRM
    sim.now += timedelta(seconds=2)
    sim.feed(TimerFired(seq=sim.room.timer_seq))
    stops = [a for a in sim.actions if isinstance(a, StopJob)]
    assert not stops, "the timer alone must not stop the job"
    assert sim.room.state is S.STARTING
    show = sim.one(ShowJob)
    assert isinstance(show, ShowJob) and show.job_id == JOB
    return show


def no_stop_ever(sim: Sim, actions: list[object]) -> None:
    assert not [a for a in actions if isinstance(a, StopJob)]


def test_a_connected_applied_after_the_timer_fired_keeps_the_job() -> None:
    """bench-00030: CONNECTED accepted 6.6 s late, queued behind the timer; applied just after."""
    sim = started()
    fire_confirm(sim)
    seen = list(sim.actions)
    late = sim.now - timedelta(seconds=7)  # signed when it happened, applied now
    sim.feed(RtmpStateReported(job_id=JOB, rtmp_state="CONNECTED", at=late))
    seen += sim.actions
    assert sim.room.state is S.LIVE and sim.room.job_id == JOB
    # the confirmation read's answer, arriving in LIVE, changes nothing
    sim.feed(JobObserved(seq=sim.room.op_seq, job_id=JOB, state="PROCESSING", duration=3.0,
                         stream_duration=2.5))  # fmt: skip
    seen += sim.actions
    assert sim.room.state is S.LIVE
    no_stop_ever(sim, seen)


def test_a_read_showing_the_push_goes_live() -> None:
    sim = started()
    sim.at(1).rtmp("CONNECTING")  # the CONNECTED after it is still queued
    show = fire_confirm(sim)
    sim.feed(JobObserved(seq=show.seq, job_id=JOB, state="PROCESSING", duration=3.0,
                         stream_duration=2.0))  # fmt: skip
    assert sim.room.state is S.LIVE
    no_stop_ever(sim, sim.actions)


@pytest.mark.parametrize(
    ("state", "stream", "why"),
    [
        ("WAITING", None, "not live within 2s (WAITING)"),
        ("PROCESSING", 0.0, "not live within 2s (PROCESSING, no push seen)"),
        ("FAILED", None, "job FAILED while starting"),
        (None, None, "job gone while starting"),
    ],
)
def test_a_read_showing_the_job_not_on_air_restarts_it(
    state: str | None, stream: float | None, why: str
) -> None:
    sim = started()
    sim.at(1).rtmp("CONNECTING")
    show = fire_confirm(sim)
    sim.feed(JobObserved(seq=show.seq, job_id=JOB, state=state, duration=3.0,
                         stream_duration=stream))  # fmt: skip
    assert sim.room.last_error == why
    if state in ("WAITING", "PROCESSING"):
        assert sim.room.state is S.RESTARTING
        stop = sim.one(StopJob)
        assert isinstance(stop, StopJob) and stop.job_id == JOB
    else:  # dead (or gone: its stop is harmless) — a restart either way
        assert sim.room.state in (S.RESTARTING, S.BACKOFF)


def test_a_failed_confirmation_read_is_asked_again_never_a_stop() -> None:
    sim = started()
    sim.at(1).rtmp("CONNECTING")
    show = fire_confirm(sim)
    seen = list(sim.actions)
    for _ in range(3):  # an API storm: every read fails, the room keeps asking
        sim.feed(QueryFailed(seq=show.seq, op="show", error="503", temporary=True))
        seen += sim.actions
        assert sim.room.state is S.STARTING and sim.room.wait is Wait.START_CONFIRM
        timer = sim.timer()
        assert timer.at > sim.now
        show = fire_confirm(sim)
        seen += sim.actions
    no_stop_ever(sim, seen)
    sim.feed(JobObserved(seq=show.seq, job_id=JOB, state="WAITING"))
    assert sim.room.state is S.RESTARTING


def test_a_retry_after_on_the_failed_read_is_honoured() -> None:
    sim = started()
    show = fire_confirm(sim)
    sim.feed(QueryFailed(seq=show.seq, op="show", error="429", retry_after=30.0))
    assert sim.timer().at == sim.now + timedelta(seconds=30)


def test_a_read_already_in_flight_answers_for_the_timer() -> None:
    sim = started()
    sim.at(1).rtmp("CONNECTING")
    sim.at(1.5).feed(Poked())
    poke = sim.one(ShowJob)
    assert isinstance(poke, ShowJob)
    sim.now += timedelta(seconds=2)
    sim.feed(TimerFired(seq=sim.room.timer_seq))
    assert not [a for a in sim.actions if isinstance(a, ShowJob | StopJob)]
    assert sim.room.op is Op.SHOW and sim.room.wait is None
    sim.feed(JobObserved(seq=poke.seq, job_id=JOB, state="PROCESSING", stream_duration=0.0))
    assert sim.room.state is S.RESTARTING


def test_a_pokes_read_before_the_timer_fires_decides_nothing() -> None:
    """A read with the timer still running that shows no push yet: keep waiting."""
    sim = started()
    sim.at(1).rtmp("CONNECTING")
    sim.feed(Poked())
    poke = sim.one(ShowJob)
    assert isinstance(poke, ShowJob)
    sim.feed(JobObserved(seq=poke.seq, job_id=JOB, state="WAITING"))
    assert sim.room.state is S.STARTING and sim.room.wait is Wait.START_CONFIRM
    sim.feed(QueryFailed(seq=poke.seq, op="show", error="503"))  # stale now: dropped
    assert sim.room.wait is Wait.START_CONFIRM


def test_another_call_in_flight_defers_the_read() -> None:
    sim = started()
    sim.room = replace(sim.room, op=Op.LIST, op_seq=sim.room.seq)  # (defensive: not reached today)
    timer_seq = sim.room.timer_seq
    sim.now = sim.now + timedelta(seconds=2)
    sim.feed(TimerFired(seq=timer_seq))
    assert [type(a) for a in sim.actions] == [SetTimer]
    assert sim.room.state is S.STARTING and sim.room.wait is Wait.START_CONFIRM
