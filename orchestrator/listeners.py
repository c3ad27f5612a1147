"""Fan-out of what rooms and callbacks tell the daemon: metrics, SLA, MQTT, alerts, logs.

The room supervisor persists every transition itself and then calls its listeners with the
durable change; :class:`TransitionFanout` is the daemon's listener. It counts the transition
(``liveorch_transitions_total``) and, during a drop, the recovery by the ladder rung that did it;
feeds the SLA accumulator; publishes the retained state and the transition event on MQTT; and
sends each alert the transition raised or cleared to MQTT and the webhook.

Listeners run on the room's worker, between two events: nothing here blocks or awaits (the MQTT
bridge and the webhook sender queue and return).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import structlog

from orchestrator.alerts import Alert
from orchestrator.callbacks.parse import CallbackEvent
from orchestrator.ops.metrics import Metrics
from orchestrator.payloads import callback_event
from orchestrator.rooms import model
from orchestrator.rooms.supervisor import Transition
from orchestrator.sla import SlaAccumulator

__all__ = ["AlertSink", "EventPublisher", "TransitionFanout"]

log = structlog.get_logger(__name__)


class EventPublisher(Protocol):
    """The MQTT bridge's publishing side (queues; never blocks)."""

    def publish_state(self, room_id: str, snapshot: model.Snapshot) -> None: ...
    def publish_event(self, room_id: str, event: Mapping[str, Any]) -> None: ...


class AlertSink(Protocol):
    """The alert webhook sender (queues; never blocks)."""

    def submit(self, alert: Alert) -> None: ...


class TransitionFanout:
    """The daemon's transition listener. ``publisher`` and ``alerts`` are set once MQTT and the
    webhook run (they start after the rooms do); until then those outlets are skipped."""

    def __init__(self, metrics: Metrics, sla: SlaAccumulator) -> None:
        self._metrics = metrics
        self._sla = sla
        self.publisher: EventPublisher | None = None
        self.alerts: AlertSink | None = None

    def __call__(self, t: Transition) -> None:
        before, after = t.before, t.after
        if before.state != after.state:
            self._metrics.transition(before.state.value, after.state.value)
            log.info(
                "room_transition",
                room_id=t.room_id,
                from_state=before.state.value,
                to_state=after.state.value,
                trigger=t.event,
                cause=t.cause,
                job_id=after.job_id,
                attempt=after.attempt,
                last_error=after.last_error,
            )
        down_since = self._sla.down_since(t.room_id)  # the open drop, before this step
        self._sla.observe(
            t.room_id, state=after.state.value, order_on=after.order is model.Order.ON, at=t.at,
            down_since=t.drop_since,
        )  # fmt: skip
        if before.state != after.state and down_since is not None:
            _observe_recovery(self._metrics, t, down_since)
        if self.publisher is not None:
            self.publisher.publish_state(t.room_id, after)
            self.publisher.publish_event(t.room_id, t.to_json())
        for kind, status, message in t.alerts:
            alert = Alert(t.room_id, kind, status, message, t.at)
            log.warning("alert", room_id=t.room_id, kind=kind, status=status, message=message)
            if self.publisher is not None:  # the documented {"type": "alert", ...} event
                self.publisher.publish_event(t.room_id, alert.to_json())
            if self.alerts is not None:
                self.alerts.submit(alert)
        # rooms-by-state gauges are computed at scrape time (ops.http), not per transition:
        # with thousands of rooms a per-transition recount would be O(rooms) on the hot path.

    async def on_callback_event(self, event: CallbackEvent, room_id: str | None) -> None:
        """Script switches and reply completions matter to shop backends: publish them."""
        if self.publisher is not None and room_id is not None:
            self.publisher.publish_event(
                room_id,
                callback_event(
                    event.event_type,
                    job_id=event.job_id,
                    scene_script_name=event.scene_script_name,
                    shoot_script_sequence_no=event.shoot_script_sequence_no,
                    shoot_script_title=event.shoot_script_title,
                    reply_id=event.reply_id,
                ),
            )


_S = model.RoomState
_RUNG_FAILED = frozenset({_S.RESTARTING, _S.BACKOFF, _S.QUARANTINED})


def _rung(snap: model.Snapshot) -> str:
    """The ladder rung a room was on (its state before LIVE, or before the next rung)."""
    if snap.state is _S.DEGRADED:
        return "self"  # the service's own reconnect, within the grace
    if snap.state is _S.REFRESHING:
        index = snap.extra.get("output_index")
        return "backup_output" if isinstance(index, int) and index > 0 else "refresh"
    return "restart"


def _observe_recovery(metrics: Metrics, t: Transition, down_since: datetime) -> None:
    """A state change during a drop that opened at ``down_since`` (when the stream stopped,
    as the SLA counts it): back on air, by the rung that did it, or a rung that gave up."""
    before, after = t.before.state, t.after.state
    if after is _S.LIVE:
        metrics.recovery(_rung(t.before), "ok", (t.at - down_since).total_seconds())
    elif before is _S.DEGRADED and after is _S.REFRESHING:
        metrics.recovery("self", "failed")
    elif before in (_S.REFRESHING, _S.STARTING) and after in _RUNG_FAILED:
        metrics.recovery(_rung(t.before), "failed")
