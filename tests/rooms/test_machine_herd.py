"""Herd control: the expected start delay from the scheduler is visible in the room state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from orchestrator.rooms.machine import step
from orchestrator.rooms.model import Room, RoomState, WindowOpened
from orchestrator.rooms.policy import Policy
from orchestrator.schedule.scheduler import expected_start_delay

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _open(room: Room, delay: float) -> Room:
    ev = WindowOpened(
        window_id="w", window_start=NOW, deadline=NOW + timedelta(hours=1), expected_delay_s=delay
    )
    after, _ = step(room, ev, NOW, Policy())
    return after


def test_a_thousand_rooms_see_their_own_expected_start_time() -> None:
    rooms = [Room(room_id=f"r{i}", state=RoomState.IDLE) for i in range(1000)]
    opened = [_open(r, expected_start_delay(i, 4.0)) for i, r in enumerate(rooms)]
    starts = [r.snapshot().extra["expected_start_at"] for r in opened]
    assert all(r.state is RoomState.STARTING for r in opened)
    assert starts[0] is None, "the first room starts at once"
    later = [datetime.fromisoformat(str(s)) for s in starts[1:]]
    assert later == sorted(later), "queue order is kept: fair, first come first served"
    assert later[-1] - NOW == timedelta(seconds=expected_start_delay(999, 4.0))
    assert 240 <= (later[-1] - NOW).total_seconds() <= 250, "1,000 starts at 4/s take ~250 s"


def test_expected_start_is_only_shown_while_starting() -> None:
    room = _open(Room(room_id="r", state=RoomState.IDLE), 12.5)
    assert room.snapshot().extra["expected_start_at"] == (NOW + timedelta(seconds=12.5)).isoformat()
    live = replace(room, state=RoomState.LIVE)
    assert live.snapshot().extra["expected_start_at"] is None


def test_a_transition_carries_every_alert_of_its_step() -> None:
    from orchestrator.rooms.supervisor import Transition

    snap = Room(room_id="r", state=RoomState.BACKOFF).snapshot()
    after = Room(room_id="r", state=RoomState.QUARANTINED).snapshot()
    t = Transition(
        room_id="r",
        at=NOW,
        before=snap,
        after=after,
        event="JobStartFailed",
        cause="",
        alerts=(("unrecovered", "CLEARED", ""), ("quarantined", "SET", "ladder exhausted")),
    )
    assert t.alert == ("quarantined", "SET", "ladder exhausted")
    assert [a["kind"] for a in t.to_json()["alerts"]] == ["unrecovered", "quarantined"]
