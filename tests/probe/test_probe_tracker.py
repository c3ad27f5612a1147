"""ProbeTracker: when a room counts as dead, with explicit times (no clock, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.probe import PROBE_CAUSE, ProbeResult, ProbeTracker
from orchestrator.rooms.model import Order, RoomState, RtmpStateReported, Snapshot

T0 = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)
OK = ProbeResult(True, "ok", video=True, audio=True)
DEAD = ProbeResult(False, "timeout")
BROKEN_PROBE = ProbeResult(False, "spawn_failed:FileNotFoundError", conclusive=False)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def snap(
    state: RoomState = RoomState.LIVE,
    *,
    job_id: str | None = "job-1",
    since: datetime | None = T0,
    rtmp: str | None = "CONNECTED",
) -> Snapshot:
    return Snapshot(
        room_id="room-1",
        state=state,
        order=Order.ON,
        job_id=job_id,
        since=since,
        attempt=1,
        next_retry_at=None,
        last_error=None,
        alert=None,
        extra={"rtmp_state": rtmp},
    )


def feed(
    tracker: ProbeTracker, steps: Sequence[tuple[float, ProbeResult]], s: Snapshot | None = None
) -> tuple[ProbeTracker, list[str], list[RtmpStateReported]]:
    transitions: list[str] = []
    events: list[RtmpStateReported] = []
    for t, result in steps:
        tracker, decision = tracker.observe(result, at(t), s or snap())
        transitions.append(decision.transition)
        if decision.event is not None:
            events.append(decision.event)
    return tracker, transitions, events


def test_dead_for_fail_after_emits_exactly_one_disconnected() -> None:
    tracker = ProbeTracker(fail_after_s=30)
    steps = [(0, OK), (15, DEAD), (30, DEAD), (44.9, DEAD), (45, DEAD), (60, DEAD), (75, DEAD)]
    tracker, transitions, events = feed(tracker, steps)
    assert transitions == ["ok", "failed", "failed", "failed", "dead", "still_dead", "still_dead"]
    assert len(events) == 1
    event = events[0]
    assert event.job_id == "job-1"
    assert event.rtmp_state == "DISCONNECTED"
    assert event.at == at(45)
    assert event.cause == PROBE_CAUSE == "probe:playback_dead"


def test_success_in_between_restarts_the_count() -> None:
    steps = [(0, DEAD), (20, DEAD), (25, OK), (30, DEAD), (50, DEAD), (60, DEAD)]
    _, transitions, events = feed(ProbeTracker(fail_after_s=30), steps)
    assert transitions == ["failed", "failed", "recovered", "failed", "failed", "dead"]
    assert len(events) == 1


def test_recovery_after_dead_resets_and_emits_nothing() -> None:
    tracker, transitions, events = feed(ProbeTracker(fail_after_s=10), [(0, DEAD), (10, DEAD)])
    assert transitions[-1] == "dead" and tracker.fired
    tracker, decision = tracker.observe(OK, at(12), snap())
    assert decision.transition == "recovered"
    assert decision.event is None
    assert decision.dead_for_s == pytest.approx(12)
    assert tracker.dead_since is None and not tracker.fired
    # a new outage is a new episode: it may be reported again
    _, transitions, events = feed(tracker, [(20, DEAD), (30, DEAD)])
    assert transitions == ["failed", "dead"] and len(events) == 1


def test_fail_after_zero_reports_on_the_first_failure() -> None:
    _, transitions, events = feed(ProbeTracker(fail_after_s=0), [(0, DEAD)])
    assert transitions == ["dead"] and len(events) == 1


@pytest.mark.parametrize(
    "s",
    [
        snap(RoomState.DEGRADED),
        snap(RoomState.STARTING),
        snap(RoomState.REFRESHING),
        snap(rtmp="RECONNECTING"),
        snap(job_id=None),
    ],
    ids=["degraded", "starting", "refreshing", "live-but-reconnecting", "no-job"],
)
def test_only_a_live_connected_room_counts(s: Snapshot) -> None:
    tracker, transitions, events = feed(ProbeTracker(fail_after_s=0), [(0, DEAD), (60, DEAD)], s)
    assert transitions == ["ignored", "ignored"]
    assert events == []
    assert tracker.dead_since is None


def test_live_without_known_rtmp_state_counts_as_connected() -> None:
    _, transitions, events = feed(ProbeTracker(fail_after_s=0), [(0, DEAD)], snap(rtmp=None))
    assert transitions == ["dead"] and len(events) == 1


def test_leaving_live_forgets_the_count() -> None:
    tracker, _, _ = feed(ProbeTracker(fail_after_s=30), [(0, DEAD), (20, DEAD)])
    tracker, decision = tracker.observe(DEAD, at(25), snap(RoomState.DEGRADED))
    assert decision.transition == "ignored"
    _, transitions, _ = feed(tracker, [(40, DEAD), (60, DEAD)])
    assert transitions == ["failed", "failed"]  # 20 s since 40, not 60 s since 0


def test_re_entering_live_after_the_ladder_is_a_new_episode() -> None:
    """CONNECTED again (new ``since``) but still dead to viewers: report again."""
    tracker, _, events = feed(ProbeTracker(fail_after_s=10), [(0, DEAD), (10, DEAD)])
    assert len(events) == 1
    relive = snap(since=at(50))
    tracker, transitions, events = feed(tracker, [(55, DEAD), (60, DEAD), (65, DEAD)], relive)
    assert transitions == ["failed", "failed", "dead"]
    assert events[0].at == at(65)


def test_a_new_job_is_a_new_episode() -> None:
    tracker, _, _ = feed(ProbeTracker(fail_after_s=10), [(0, DEAD), (10, DEAD)])
    tracker, decision = tracker.observe(DEAD, at(11), snap(job_id="job-2"))
    assert decision.transition == "failed" and decision.event is None
    tracker, decision = tracker.observe(DEAD, at(21), snap(job_id="job-2"))
    assert decision.event is not None and decision.event.job_id == "job-2"


def test_inconclusive_probe_neither_counts_nor_resets() -> None:
    tracker, _, _ = feed(ProbeTracker(fail_after_s=30), [(0, DEAD)])
    tracker, decision = tracker.observe(BROKEN_PROBE, at(100), snap())
    assert decision.transition == "ignored" and decision.event is None
    assert tracker.dead_since == at(0)
    # a broken probe alone never makes a room dead
    alone, transitions, events = feed(ProbeTracker(fail_after_s=0), [(0, BROKEN_PROBE)] * 3)
    assert set(transitions) == {"ignored"} and events == [] and alone.dead_since is None


def test_tracker_is_frozen_and_observe_returns_a_new_one() -> None:
    tracker = ProbeTracker(fail_after_s=30)
    after, _ = tracker.observe(DEAD, at(0), snap())
    assert tracker.dead_since is None and after.dead_since == at(0)
    with pytest.raises(AttributeError):
        tracker.fired = True  # type: ignore[misc]
    assert replace(after, fail_after_s=5).dead_since == at(0)
