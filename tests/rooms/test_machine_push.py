"""A dead push noticed from the job's own reads when every callback is lost.

The job read carries no RTMP state, but ``duration`` grows while the job is live and
``stream_duration`` only while it pushes (metastudio-api.md §3.2). Times are explicit and jitter
is off (u = 0.5), like the ladder scenarios.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.rooms.model import (
    CommandSucceeded,
    JobObserved,
    JobsListed,
    ObservedJob,
    Order,
    Poked,
    QueryFailed,
    RefreshOutput,
    ResetExitConfig,
    Room,
    RoomState,
    ShowJob,
    Wait,
)
from orchestrator.rooms.policy import Policy
from tests.rooms.test_machine_ladder import T0, S, Sim


def read(sim: Sim, at: float, duration: float, stream: float, *, seq: int | None = None) -> None:
    """A read of the room's job (a poll when ``seq`` is None, else the answer to a show)."""
    assert sim.room.job_id is not None
    sim.at(at).feed(
        JobObserved(
            seq=seq,
            job_id=sim.room.job_id,
            state="PROCESSING",
            duration=duration,
            stream_duration=stream,
            cause="poll",
        )
    )


def armed(policy: Policy | None = None) -> Sim:
    """LIVE since t=0 (the job went live at duration 2 s), two reads 30 s apart showing a
    whole interval of pushing: the check is armed with a lag of 2 s."""
    sim = Sim(policy=policy or Policy())
    sim.go_live()
    read(sim, 30, 32, 30)
    read(sim, 60, 62, 60)
    assert sim.room.push is not None and sim.room.push.lag_ref == 2
    assert sim.room.state is S.LIVE
    return sim


def test_a_push_dead_since_the_last_read_degrades_with_the_grace_already_spent() -> None:
    sim = armed()
    read(sim, 90, 92, 66)  # pushed 6 of the last 30 s: dead since t=66, 24 s ago
    assert sim.room.state is S.REFRESHING  # 24 s down > 10 s grace: repair at once
    assert sim.room.drop_since == T0 + timedelta(seconds=66)
    assert sim.room.rtmp_state == "DISCONNECTED"
    assert "push stalled" in (sim.room.last_error or "")
    assert [type(a) for a in sim.actions] == [ResetExitConfig]


def test_a_short_stall_gets_the_rest_of_the_grace() -> None:
    sim = armed(Policy(stall_after_s=5))
    read(sim, 90, 92, 84)  # dead since t=84: 6 s
    assert sim.room.state is S.DEGRADED
    assert sim.timer().at == T0 + timedelta(seconds=94)  # 84 + 10 s grace


def test_a_stall_below_the_threshold_only_schedules_a_read_and_accumulates() -> None:
    sim = armed()
    read(sim, 63, 65, 60)  # no push for 3 s: under the 10 s threshold
    assert sim.room.state is S.LIVE
    assert sim.timer().at == T0 + timedelta(seconds=70)  # read again when it would be 10 s
    read(sim, 68, 70, 60)  # 8 s (a poll came first)
    assert sim.room.state is S.LIVE
    read(sim, 71, 73, 60)  # 11 s
    assert sim.room.state is S.REFRESHING


def test_slow_drift_within_the_slack_never_accumulates() -> None:
    """A stream_duration that runs a little slow (rounding, frame counting) must not add up
    to a false stall over hours: each interval that pushed throughout is the new reference."""
    sim = armed()
    d, s = 62.0, 60.0
    for t in range(90, 3600 * 4, 30):
        d, s = d + 30, s + 29  # 1 s behind every 30 s
        read(sim, t, d, s)
        assert sim.room.state is S.LIVE, t


def test_unarmed_when_the_service_does_not_fill_stream_duration_while_live() -> None:
    sim = Sim()
    sim.go_live()
    for t in range(30, 600, 30):
        read(sim, t, t + 2, 0)  # stream_duration stays 0: maybe filled only at the end
        assert sim.room.state is S.LIVE, t
    assert sim.room.push is not None and sim.room.push.lag_ref is None


def test_off_when_stall_after_s_is_zero() -> None:
    sim = armed(Policy(stall_after_s=0))
    read(sim, 200, 202, 60)
    assert sim.room.state is S.LIVE


def test_a_reported_outage_is_not_counted_twice_but_callbacks_never_disarm_the_check() -> None:
    """The outage callbacks reported (and a read saw end) is the new reference; a later
    silent stall is still seen, whatever callbacks arrived (their body is not signed)."""
    sim = armed()
    sim.at(70).rtmp("DISCONNECTED")
    read(sim, 70, 72, 70, seq=sim.room.op_seq)  # the read at the drop's start
    sim.at(75).rtmp("CONNECTED")
    assert sim.room.state is S.DEGRADED  # a hint: the read decides
    read(sim, 76, 78, 71, seq=sim.one(ShowJob).seq)  # type: ignore[attr-defined]
    assert sim.room.state is S.LIVE
    read(sim, 90, 92, 85)  # pushed throughout since the recovery: the 5 s outage is past
    assert sim.room.state is S.LIVE
    sim.at(95).rtmp("CONNECTED")  # a CONNECTED callback (forged?) while the push is dead
    read(sim, 100, 102, 85)
    assert sim.room.state is S.REFRESHING  # 10 s behind: a drop, repaired at once


def test_a_new_job_starts_a_new_mark() -> None:
    sim = armed()
    room = sim.room
    sim.room = Room(**{**{f: getattr(room, f) for f in room.__slots__}, "job_id": "job-2"})
    read(sim, 90, 5, 0)  # job-2's first read: nothing to compare with
    assert sim.room.state is S.LIVE
    assert sim.room.push is not None and sim.room.push.job_id == "job-2"
    assert sim.room.push.lag_ref is None


def test_older_or_repeated_reads_are_ignored() -> None:
    sim = armed()
    read(sim, 61, 62, 60)  # the same values again
    read(sim, 62, 50, 48)  # an older answer that crossed a newer one
    assert sim.room.push is not None and sim.room.push.duration == 62
    assert sim.room.state is S.LIVE


def _stalled_and_refreshed(sim: Sim) -> RefreshOutput:
    read(sim, 90, 92, 66)
    widen = sim.one(ResetExitConfig)
    sim.feed(CommandSucceeded(seq=widen.seq, command="RESET_EXIT_CONFIG"))
    ref = sim.one(RefreshOutput)
    assert isinstance(ref, RefreshOutput)
    sim.feed(CommandSucceeded(seq=ref.seq, command="REFRESH_OUTPUT_URL"))
    assert sim.room.wait is Wait.REFRESH_CONFIRM
    return ref


def test_refresh_confirmed_by_a_read_when_the_connected_callback_is_lost() -> None:
    sim = armed()
    _stalled_and_refreshed(sim)
    sim.fire()  # refresh_confirm_s passed without CONNECTED: read the job instead of failing
    show = sim.one(ShowJob)
    assert isinstance(show, ShowJob) and sim.room.state is S.REFRESHING
    read(sim, 101, 103, 74, seq=show.seq)  # pushed 8 s since the last read (t=90)
    assert sim.room.state is S.LIVE
    assert sim.room.rtmp_state == "CONNECTED"


def test_a_poll_during_the_refresh_confirmation_also_confirms() -> None:
    sim = armed()
    _stalled_and_refreshed(sim)
    read(sim, 95, 97, 69)
    assert sim.room.state is S.LIVE


def test_refresh_fails_when_the_read_shows_no_push() -> None:
    sim = armed()
    _stalled_and_refreshed(sim)
    sim.fire()
    show = sim.one(ShowJob)
    read(sim, 101, 103, 66, seq=show.seq)
    assert sim.room.state is S.REFRESHING
    assert sim.room.wait is Wait.REFRESH_BACKOFF
    assert "no push within" in (sim.room.last_error or "")


def test_refresh_fails_when_the_confirming_read_fails() -> None:
    sim = armed()
    _stalled_and_refreshed(sim)
    sim.fire()
    show = sim.one(ShowJob)
    sim.feed(QueryFailed(seq=show.seq, op="show", error="503"))
    assert sim.room.state is S.REFRESHING and sim.room.wait is Wait.REFRESH_BACKOFF


def test_a_read_before_the_drop_began_does_not_count_as_pushing_again() -> None:
    """Callback-reported drop: the stream grew between the last read (before the drop) and
    this one, which says nothing about now."""
    sim = armed()
    sim.at(70).rtmp("DISCONNECTED")
    assert sim.room.state is S.DEGRADED
    read(sim, 75, 77, 70)
    assert sim.room.state is S.DEGRADED


def test_unarmed_confirmation_keeps_the_old_ladder() -> None:
    sim = Sim()
    sim.go_live()
    sim.at(10).rtmp("DISCONNECTED")
    sim.fire()
    sim.feed(CommandSucceeded(seq=sim.room.op_seq, command="RESET_EXIT_CONFIG"))
    ref = sim.one(RefreshOutput)
    sim.feed(CommandSucceeded(seq=ref.seq, command="REFRESH_OUTPUT_URL"))
    sim.fire()
    assert not [a for a in sim.actions if isinstance(a, ShowJob)]
    assert sim.room.wait is Wait.REFRESH_BACKOFF


def test_the_mark_is_not_persisted() -> None:
    sim = armed()
    data = sim.room.to_json()
    assert "push" not in data
    assert Room.from_json(data).push is None


def test_adopting_a_job_whose_link_is_reported_down_repairs_it() -> None:
    """After a crash, the inbox replays the job's DISCONNECTED before adoption: the same job is
    repaired (grace, then refresh), not awaited as a start that never connects."""
    sim = Sim(room=Room(room_id="r1", state=RoomState.UNKNOWN, order=Order.ON, job_id="job-1",
                        rtmp_state="DISCONNECTED"))  # fmt: skip
    sim.feed(JobsListed(jobs=(ObservedJob("job-1", "PROCESSING"),), cause="startup:adopt"))
    assert sim.room.state is S.DEGRADED and sim.room.job_id == "job-1"
    assert sim.room.wait is Wait.GRACE
    assert sim.timer().at == sim.now + timedelta(seconds=10)


def test_a_pokes_read_during_the_refresh_confirmation_does_not_fail_the_refresh() -> None:
    sim = armed()
    _stalled_and_refreshed(sim)
    sim.at(92).feed(Poked(cause="callback:unknown_job"))
    show = sim.one(ShowJob)
    read(sim, 93, 95, 66, seq=show.seq)  # not pushing yet: the link is still connecting
    assert sim.room.state is S.REFRESHING and sim.room.wait is Wait.REFRESH_CONFIRM


def test_a_push_falling_behind_is_read_again_when_it_would_cross_the_threshold() -> None:
    """A read shows 3 s without push: not a stall yet, but rather than a whole poll interval
    later, the job is read again when the threshold would be reached."""
    sim = armed()
    read(sim, 90, 92, 87)  # no push since t=87: 3 s behind
    assert sim.room.state is S.LIVE and sim.room.wait is Wait.PUSH_CHECK
    assert sim.timer().at == T0 + timedelta(seconds=97)  # 90 + (10 - 3)
    sim.fire()
    show = sim.one(ShowJob)
    read(sim, 97, 99, 87, seq=show.seq)  # 10 s behind now
    assert sim.room.state is S.REFRESHING


def test_a_push_check_that_finds_it_pushing_goes_back_to_the_watchdog() -> None:
    sim = armed()
    read(sim, 90, 92, 87)
    sim.fire()
    show = sim.one(ShowJob)
    read(sim, 97, 99, 94, seq=show.seq)  # pushed the last 7 s: it had only hiccupped
    assert sim.room.state is S.LIVE and sim.room.wait is Wait.STALE
    assert sim.room.push is not None and sim.room.push.stalled_s == 0


def test_a_pokes_failed_read_during_the_refresh_confirmation_changes_nothing() -> None:
    sim = armed()
    _stalled_and_refreshed(sim)
    sim.at(92).feed(Poked(cause="poll:missing"))
    show = sim.one(ShowJob)
    sim.feed(QueryFailed(seq=show.seq, op="show", error="503"))
    assert sim.room.state is S.REFRESHING and sim.room.wait is Wait.REFRESH_CONFIRM


@pytest.mark.parametrize(("stall_after_s", "live"), [(10.0, True), (0.0, False)])
def test_reads_confirm_a_recovery_only_when_the_check_is_on(
    stall_after_s: float, live: bool
) -> None:
    """Callback-reported drop, its CONNECTED lost; reads after the drop show the stream
    growing again. With stall_after_s = 0 the reads are not trusted for anything."""
    sim = armed(Policy(stall_after_s=stall_after_s))
    sim.at(100).rtmp("DISCONNECTED")
    assert sim.room.state is S.DEGRADED
    read(sim, 101, 103, 99)  # after the drop: not pushing
    read(sim, 105, 107, 103)  # pushed since the read at 101
    assert (sim.room.state is S.LIVE) is live
