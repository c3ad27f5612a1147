"""One payload module: every consumer publishes the shapes of orchestrator.payloads.

The snapshot was written twice (MQTT state and ops ``/rooms``), the transition event twice
(``mqtt.topics`` and the supervisor's ``Transition.to_json``); these tests pin the one shape
each consumer publishes today.
"""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.alerts import Alert
from orchestrator.ops.http import SnapshotRooms
from orchestrator.payloads import alert_event, callback_event, snapshot_json, transition_event
from orchestrator.rooms.model import Order, RoomState, Snapshot
from orchestrator.rooms.supervisor import Transition

AT = datetime(2026, 11, 25, 12, tzinfo=UTC)


def _snap(st: RoomState = RoomState.BACKOFF, **extra: object) -> Snapshot:
    return Snapshot("room-a", st, Order.ON, "job-1", AT, 2, AT, "APIGW.0308", None, extra=extra)


def test_snapshot_json_shape() -> None:
    snap = _snap(sla={"live_s": 10}, state="ignored")
    assert snapshot_json(snap) == {
        "room_id": "room-a",
        "state": "BACKOFF",
        "order": "ON",
        "job_id": "job-1",
        "since": "2026-11-25T12:00:00+00:00",
        "attempt": 2,
        "next_retry_at": "2026-11-25T12:00:00+00:00",
        "last_error": "APIGW.0308",
        "alert": None,
        "sla": {"live_s": 10},
    }


def test_ops_rooms_and_mqtt_state_publish_the_same_snapshot() -> None:
    snap = _snap(sla={"live_s": 10}, job_id="shadowed")
    rooms = SnapshotRooms(lambda: [snap])
    assert rooms.room_state("room-a") == snapshot_json(snap)
    assert rooms.room_state("room-a")["job_id"] == "job-1"  # a core key wins over extra


def test_event_payloads() -> None:
    t = transition_event(
        "r", from_state="LIVE", to_state="DEGRADED", event="RtmpStateReported", at=AT
    )
    assert (t["type"], t["from"], t["to"], t["at"]) == (
        "transition", "LIVE", "DEGRADED", "2026-11-25T12:00:00+00:00",
    )  # fmt: skip
    assert "alerts" not in t  # present only when the step raised or cleared an alert
    a = alert_event("r", kind="quarantined", status="CLEARED", at=AT)
    assert (a["type"], a["status"], a["kind"]) == ("alert", "CLEARED", "quarantined")


def test_the_supervisors_transition_event_has_the_payload_shape() -> None:
    before, after = _snap(RoomState.LIVE), _snap(RoomState.DEGRADED)
    alerts = (("unrecovered", "CLEARED", ""), ("quarantined", "SET", "ladder exhausted"))
    t = Transition("room-a", AT, before, after, "RtmpStateReported", "callback", alerts)
    assert t.to_json() == transition_event(
        "room-a",
        from_state="LIVE",
        to_state="DEGRADED",
        event="RtmpStateReported",
        at=AT,
        cause="callback",
        detail={
            "job_id": "job-1",
            "attempt": 2,
            "next_retry_at": "2026-11-25T12:00:00+00:00",
            "last_error": "APIGW.0308",
        },
        alerts=alerts,
    )
    assert t.to_json()["alerts"][1] == {
        "kind": "quarantined",
        "status": "SET",
        "message": "ladder exhausted",
    }


def test_alert_event_is_the_webhook_and_mqtt_body() -> None:
    alert = Alert("r1", "quarantined", "SET", "start refused", AT)
    assert alert.to_json() == alert_event(
        "r1", kind="quarantined", status="SET", at=AT, message="start refused"
    )


def test_callback_event_is_the_documented_script_event() -> None:
    # docs/mqtt.md: the service's own type, no room_id/at (the topic names the room)
    assert callback_event("SHOOT_SCRIPT_SWITCH", job_id="j", scene_script_name="s2") == {
        "type": "SHOOT_SCRIPT_SWITCH",
        "job_id": "j",
        "scene_script_name": "s2",
        "shoot_script_sequence_no": None,
        "shoot_script_title": None,
        "reply_id": None,
    }
