"""Exhaustive checks of ``step`` over every (state, event) pair and a spread of room shapes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator.rooms.machine import TABLE, mermaid, step
from orchestrator.rooms.model import (
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
    ObservedJob,
    Op,
    Order,
    OrderChanged,
    OutputChanged,
    Poked,
    QueryFailed,
    RefreshRequested,
    Reset,
    RestartRequested,
    Resumed,
    Room,
    RoomState,
    RtmpStateReported,
    StartJob,
    StopFailed,
    TimerFired,
    Wait,
    WindowClosed,
    WindowOpened,
)
from orchestrator.rooms.policy import Policy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)
POLICY = Policy(outputs=2)
NEEDS_JOB = {RoomState.LIVE, RoomState.DEGRADED, RoomState.REFRESHING, RoomState.RESTARTING}


def sample_rooms(state: RoomState) -> list[Room]:
    rooms = []
    for op, job, wait, order in itertools.product(
        [None, *Op], [None, "j1"], [None, *Wait], list(Order)
    ):
        if state in NEEDS_JOB and job is None:
            continue
        rooms.append(
            Room(
                room_id="r1",
                state=state,
                order=order,
                window_id="w",
                window_start=T0,
                job_id=job,
                job_state="PROCESSING" if job else None,
                op=op,
                op_seq=10,
                wait=wait,
                timer_seq=9,
                seq=10,
                since=T0,
                last_observed_at=T0,
            )
        )
    return rooms


def sample_events() -> list[Event]:
    at = T0 + timedelta(minutes=1)
    jobs = [
        ObservedJob("j1", "PROCESSING"),
        ObservedJob("j2", "WAITING"),
        ObservedJob("j3", "FAILED"),
    ]
    events: list[Event] = [
        OrderChanged(order=Order.ON, deadline=NOW + timedelta(hours=1)),
        OrderChanged(order=Order.OFF),
        WindowOpened(window_id="w2", window_start=NOW, deadline=None),
        WindowClosed(window_id="w"),
        WindowClosed(window_id="other"),
        Reset(),
        Resumed(),
        Poked(),
        OutputChanged(),
        RestartRequested(),
        RefreshRequested(),
        JobStarted(seq=10, job_id="j9"),
        JobStarted(seq=3, job_id="j9"),
        JobStopped(seq=10, job_id="j1"),
        StopFailed(seq=10, job_id="j1", error="x", temporary=True),
        StopFailed(seq=10, job_id="j1", error="x", temporary=False),
        CommandSucceeded(seq=10, command="REFRESH_OUTPUT_URL"),
        CommandSucceeded(seq=10, command="RESET_EXIT_CONFIG"),
        CommandFailed(seq=10, command="REFRESH_OUTPUT_URL", error="x"),
        CommandFailed(seq=10, command="RESET_EXIT_CONFIG", error="x"),
        TimerFired(seq=9),
        TimerFired(seq=8),
        InsertScriptRequested(request_id=1, text="hello", play_type="PLAY_NOW"),
    ]
    for seq in (10, None, 4):
        for k in range(len(jobs) + 1):
            events.append(JobsListed(seq=seq, jobs=tuple(jobs[:k])))
        events.append(JobsListed(seq=seq, jobs=(ObservedJob("j2", "PROCESSING"),)))
    for temporary, unknown in itertools.product([True, False], repeat=2):
        events.append(
            JobStartFailed(seq=10, error="x", temporary=temporary, outcome_unknown=unknown)
        )
    for op, temporary in itertools.product(["list", "show"], [True, False]):
        events.append(QueryFailed(seq=10, op=op, error="x", temporary=temporary))
    for job in ("j1", "j2", None):
        for state in ("WAITING", "PROCESSING", "SUCCEED", "FAILED", "BLOCKED", None):
            for rtmp in (None, "CONNECTED", "DISCONNECTED", "END"):
                events.append(JobObserved(job_id=job, state=state, rtmp_state=rtmp))
                events.append(JobObserved(seq=10, job_id=job, state=state, rtmp_state=rtmp))
    for job in ("j1", "j2"):
        for rtmp in ("CONNECTING", "CONNECTED", "DISCONNECTED", "RECONNECTING", "END"):
            for when in (at, T0 - timedelta(minutes=1)):
                events.append(RtmpStateReported(job_id=job, rtmp_state=rtmp, at=when))
    return events


EVENTS = sample_events()


@pytest.mark.parametrize("state", list(RoomState))
def test_every_pair_lands_in_a_declared_state(state: RoomState) -> None:
    seen_types = set()
    for room in sample_rooms(state):
        for ev in EVENTS:
            seen_types.add(type(ev))
            new, actions = step(room, ev, NOW, POLICY)
            assert isinstance(new.state, RoomState)
            rule = TABLE.get((state, type(ev)))
            allowed = {state} | (set(rule.targets) if rule else set())
            assert new.state in allowed, (room, ev, new.state)
            if new.state is not state:
                assert new.since == NOW
            if state is RoomState.QUARANTINED and not isinstance(ev, Reset):
                assert actions == [], (room, ev)
            if any(isinstance(a, StartJob) for a in actions):
                # only in answer to the room's own list, with nothing running, nothing in flight
                assert isinstance(ev, JobsListed) and ev.seq == room.op_seq
                assert room.op is Op.LIST
                assert not [j for j in ev.jobs if j.state in ("WAITING", "PROCESSING")]
                assert room.order is Order.ON
    assert len(seen_types) >= 19


SCRIPT_ACCEPTED = {RoomState.LIVE, RoomState.DEGRADED}


@pytest.mark.parametrize("state", list(RoomState))
def test_a_script_is_said_only_by_a_job_held_live(state: RoomState) -> None:
    """Every room shape in every state: InsertScript for the room's own job exactly when the
    room is LIVE or DEGRADED on a job (else nothing: the driver answers not_live), and the
    request never moves the room, takes its call slot or touches its timer."""
    ev = InsertScriptRequested(request_id=42, text="hello", play_type="APPEND", cause="mqtt:c1")
    for room in sample_rooms(state):
        new, actions = step(room, ev, NOW, POLICY)
        scripts = [a for a in actions if isinstance(a, InsertScript)]
        if state in SCRIPT_ACCEPTED and room.job_id is not None:
            assert scripts == [InsertScript(42, room.job_id, "hello", "APPEND")], room
        else:
            assert scripts == [], room
        assert (new.state, new.op, new.op_seq, new.wait, new.timer_seq, new.job_id) == (
            room.state, room.op, room.op_seq, room.wait, room.timer_seq, room.job_id,
        ), room  # fmt: skip
        assert (TABLE.get((state, InsertScriptRequested)) is not None) == (state in SCRIPT_ACCEPTED)


def test_stale_results_and_timers_change_nothing() -> None:
    room = Room(room_id="r1", state=RoomState.STARTING, order=Order.ON, op=Op.LIST, op_seq=7,
                seq=7, wait=Wait.START_CONFIRM, timer_seq=5)  # fmt: skip
    for ev in (JobsListed(seq=6), JobStarted(seq=3, job_id="x"), TimerFired(seq=4)):
        assert step(room, ev, NOW, POLICY) == (room, [])


def test_a_callback_older_than_the_last_observation_is_ignored() -> None:
    room = Room(room_id="r1", state=RoomState.LIVE, order=Order.ON, job_id="j1",
                job_state="PROCESSING", last_observed_at=NOW)  # fmt: skip
    seen, _ = step(room, JobObserved(job_id="j1", state="PROCESSING", rtmp_state="CONNECTED"),
                   NOW, POLICY)  # fmt: skip
    old = RtmpStateReported(job_id="j1", rtmp_state="DISCONNECTED", at=NOW - timedelta(seconds=1))
    assert step(seen, old, NOW, POLICY) == (seen, [])
    # a read without link state (the real API) does not make the report stale
    new, _ = step(room, old, NOW, POLICY)
    assert new.state is RoomState.DEGRADED
    other = RtmpStateReported(job_id="j0", rtmp_state="DISCONNECTED", at=NOW)
    assert step(room, other, NOW, POLICY) == (room, [])


def test_json_round_trip_keeps_every_field() -> None:
    room = Room(
        room_id="r1", state=RoomState.BACKOFF, order=Order.ON, deadline=NOW, window_id="w",
        window_start=T0, job_id="j", retired=("a", "b"), op=Op.STOP, wait=Wait.RETRY,
        restart_failures=(T0, NOW), next_retry_at=NOW, last_error="boom", alert="quarantined",
        drop_since=T0, rtmp_at=T0, last_observed_at=NOW, since=T0,
    )  # fmt: skip
    assert Room.from_json(room.to_json()) == room
    assert Room.from_json({"room_id": "x", "future_field": 1}) == Room(room_id="x")
    snap = room.snapshot()
    assert snap.state is RoomState.BACKOFF
    assert snap.next_retry_at == NOW
    assert replace(room, state=RoomState.LIVE).snapshot().state is RoomState.LIVE


def test_docs_embed_the_current_diagram() -> None:
    doc = Path(__file__).parents[2] / "docs" / "state-machine.md"
    text = doc.read_text(encoding="utf-8")
    assert "```mermaid\n" + mermaid() + "```" in text, (
        "docs/state-machine.md is out of date: paste orchestrator.rooms.machine.mermaid()"
    )
