"""The JSON bodies the daemon publishes about rooms (pure: no I/O, no clock, no MQTT).

One module for every consumer, so a shape cannot drift between them:

* :func:`snapshot_json` — a room's state: the retained MQTT ``rooms/{room}/state`` payload and
  the ``GET /rooms`` entries of the ops API (it was written twice, in ``mqtt.topics`` and
  ``ops.http``).
* :func:`transition_event` — one change of a room's snapshot (``rooms/{room}/events``).
* :func:`alert_event` — an alert raised or cleared: the MQTT event and the webhook body.
* :func:`callback_event` — a script callback passed on (``SHOOT_SCRIPT_SWITCH`` /
  ``REPLY_COMMAND_FINISH``), in the shape docs/mqtt.md documents.

Secrets are masked by the publishers (``orchestrator.redaction``), not here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from orchestrator.rooms.model import Snapshot

__all__ = ["alert_event", "callback_event", "snapshot_json", "transition_event"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    """A :class:`Snapshot` as a JSON-able dict.

    Core keys always appear (``null`` when unknown); ``extra`` (e.g. ``sla`` counters) is
    merged in without overriding a core key.
    """
    core: dict[str, Any] = {
        "room_id": snap.room_id,
        "state": str(snap.state),
        "order": str(snap.order),
        "job_id": snap.job_id,
        "since": _iso(snap.since),
        "attempt": snap.attempt,
        "next_retry_at": _iso(snap.next_retry_at),
        "last_error": snap.last_error,
        "alert": snap.alert,
    }
    extra: Mapping[str, object] = snap.extra
    return {**{str(k): v for k, v in extra.items() if k not in core}, **core}


# --- rooms/{room}/events payloads: one "type" per kind, always room_id + at -----------------


def transition_event(
    room_id: str,
    *,
    from_state: str,
    to_state: str,
    event: str,
    at: datetime,
    cause: str = "",
    detail: Mapping[str, Any] | None = None,
    alerts: Iterable[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """A state-machine transition (``event`` is the event class name, e.g. ``JobObserved``);
    ``alerts`` (kind, status, message) appear only when the step raised or cleared some."""
    out: dict[str, Any] = {
        "type": "transition",
        "room_id": room_id,
        "at": at.isoformat(),
        "from": from_state,
        "to": to_state,
        "event": event,
        "cause": cause,
        "detail": dict(detail or {}),
    }
    changes = [{"kind": k, "status": s, "message": m} for k, s, m in alerts]
    if changes:
        out["alerts"] = changes
    return out


def alert_event(
    room_id: str,
    *,
    kind: str,
    status: Literal["SET", "CLEARED"],
    at: datetime,
    message: str = "",
) -> dict[str, Any]:
    """An alert raised (``SET``) or cleared (``CLEARED``); ``kind`` is stable (e.g. quarantined)."""
    return {
        "type": "alert",
        "room_id": room_id,
        "at": at.isoformat(),
        "kind": kind,
        "status": status,
        "message": message,
    }


def callback_event(
    event_type: str,
    *,
    job_id: str | None,
    scene_script_name: str | None = None,
    shoot_script_sequence_no: str | None = None,
    shoot_script_title: str | None = None,
    reply_id: str | None = None,
) -> dict[str, Any]:
    """A script callback of the service passed on for shop backends; ``type`` is the service's
    own event type. (It carries neither ``room_id`` nor ``at``: the topic names the room.)"""
    return {
        "type": event_type,
        "job_id": job_id,
        "scene_script_name": scene_script_name,
        "shoot_script_sequence_no": shoot_script_sequence_no,
        "shoot_script_title": shoot_script_title,
        "reply_id": reply_id,
    }
