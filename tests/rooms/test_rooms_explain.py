"""Causes in words: what the status page and ``liveorch status ROOM`` show for a transition."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from orchestrator.rooms import model as m
from orchestrator.rooms.explain import describe_record, explain, who

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LIVE = m.Room(room_id="r", state=m.RoomState.LIVE, job_id="j1", order=m.Order.ON)
DEGRADED = replace(LIVE, state=m.RoomState.DEGRADED)


def test_a_stalled_push_found_by_a_read() -> None:
    after = replace(
        DEGRADED,
        last_error="push stalled: stream_duration 12s behind duration, no callback",
    )
    ev = m.JobObserved(seq=None, job_id="j1", state="PROCESSING", cause="poll")
    assert explain(ev, LIVE, after) == "push stalled 12 s, no callback"


def test_a_callback_names_the_state_it_reported() -> None:
    ev = m.RtmpStateReported(job_id="j1", rtmp_state="DISCONNECTED", at=NOW, cause="callback")
    assert explain(ev, LIVE, DEGRADED) == "callback DISCONNECTED"
    probe = replace(ev, cause="probe:playback_dead")
    assert explain(probe, LIVE, DEGRADED).startswith("playback probe")


@pytest.mark.parametrize(
    ("event", "words"),
    [
        (m.RestartRequested(cause="mqtt:cmd-7"), "operator restart via MQTT"),
        (m.RestartRequested(cause="mqtt:panel:cmd-7"), "operator restart via MQTT (panel)"),
        (m.Reset(cause="ops:reset"), "operator reset via ops HTTP"),
        (m.OrderChanged(order=m.Order.OFF, cause="mqtt:c1"), "operator stop via MQTT"),
        (
            m.WindowOpened(window_id="w", window_start=NOW, deadline=None, cause="schedule:open"),
            "schedule window opened",
        ),
        (m.WindowClosed(window_id="w", cause="schedule:close"), "schedule window closed"),
    ],
)
def test_operator_and_schedule_causes(event: m.Event, words: str) -> None:
    assert explain(event, LIVE, DEGRADED) == words


def test_grace_timer() -> None:
    before = replace(DEGRADED, wait=m.Wait.GRACE)
    after = replace(DEGRADED, state=m.RoomState.REFRESHING)
    ev = m.TimerFired(seq=1, cause="timer")
    assert explain(ev, before, after) == "still down after the grace period: repairing"


def test_who() -> None:
    assert who("mqtt:cmd-1") == "via MQTT"
    assert who("ops:reset") == "via ops HTTP"
    assert who("signal:SIGHUP") == "on SIGHUP"
    assert who("") == ""


def test_stored_sentence_wins_and_old_rows_still_read() -> None:
    assert describe_record("X", "c", "LIVE", "DEGRADED", {"why": "callback DISCONNECTED"}) == (
        "callback DISCONNECTED"
    )
    stalled = {"last_error": "push stalled: stream_duration 10s behind duration, no callback"}
    assert describe_record("JobObserved", "poll", "LIVE", "DEGRADED", stalled) == (
        "push stalled 10 s, no callback"
    )
    assert describe_record("Reset", "mqtt:c", "QUARANTINED", "UNKNOWN", {}) == (
        "operator reset via MQTT"
    )
