"""Handing a committed callback event to its room: per-job ordering and re-signed-retry
suppression (:class:`StreamTracker`), the room event it becomes and the ``on_event`` hook
(:class:`Dispatcher`, shared by the live intake and the startup replay), and the counters."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal, Protocol

import structlog

from orchestrator.callbacks.parse import (
    EVENT_REPLY,
    EVENT_RTMP,
    EVENT_SCRIPT,
    RTMP_STATES,
    CallbackEvent,
    discriminator,
)
from orchestrator.rooms.model import Poked, RoomSink, RtmpStateReported
from orchestrator.store.base import InboxItem

log = structlog.get_logger(__name__)

OnEvent = Callable[[CallbackEvent, str | None], Awaitable[None]]
"""Hook for applied events: (event, room id or None). The MQTT bridge publishes from it."""

Outcome = Literal["applied", "duplicate", "stale", "unknown_job", "unknown_room"]


# --- metrics ---------------------------------------------------------------------------------


class CallbackMetrics(Protocol):
    """Counters by event type/result and the signing→receive lag."""

    def callback(self, event_type: str, result: str) -> None: ...

    def lag(self, seconds: float) -> None: ...


class NullMetrics:
    def callback(self, event_type: str, result: str) -> None:
        return None

    def lag(self, seconds: float) -> None:
        return None


class CallbackRoute(Protocol):
    """Several instances: which callbacks this instance hands to a room itself
    (implemented by ``orchestrator.fleet.callbacks``)."""

    channel: str | None
    """Where the store announces items left for their owner (None: no in-transaction signal)."""

    def here(self, event: CallbackEvent) -> bool:
        """True when a room here takes the event (or no instance's room would)."""

    def elsewhere(self, item: InboxItem) -> None:
        """A stored item left pending for its room's owner (announce it if the store did not)."""


# --- ordering + retry suppression ------------------------------------------------------------


class StreamTracker:
    """Per-job ordering and re-signed-retry suppression (in memory, bounded LRU)."""

    def __init__(self, *, retry_window_s: float = 120.0, max_entries: int = 100_000) -> None:
        self._retry_window_s = retry_window_s
        self._max = max_entries
        self._last_at: OrderedDict[tuple[str, str], datetime] = OrderedDict()
        self._last_value: OrderedDict[tuple[str, ...], tuple[str, datetime]] = OrderedDict()

    def _remember(self, d: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > self._max:
            d.popitem(last=False)

    def check(self, event: CallbackEvent, at: datetime) -> Literal["apply", "duplicate", "stale"]:
        """Classify and, when "apply", remember the event."""
        if event.job_id is None:
            return "apply"
        ordered = event.event_type in (EVENT_RTMP, EVENT_SCRIPT)
        order_key = (event.job_id, event.event_type)
        if ordered:
            last = self._last_at.get(order_key)
            if last is not None and at < last:
                return "stale"
        value = discriminator(event)
        if event.event_type == EVENT_RTMP:
            stream: tuple[str, ...] = (event.job_id, event.event_type, event.output_url or "")
        elif event.event_type == EVENT_SCRIPT:
            stream = (event.job_id, event.event_type)
        else:
            stream = (event.job_id, event.event_type, value)
        prev = self._last_value.get(stream)
        if (
            prev is not None
            and prev[0] == value
            and abs((at - prev[1]).total_seconds()) <= self._retry_window_s
        ):
            return "duplicate"
        self._remember(self._last_value, stream, (value, at))
        if ordered:
            self._remember(self._last_at, order_key, at)
        return "apply"


def order_time(item: InboxItem) -> datetime:
    """When an item counts as having happened, for ordering a job's events: its signed time,
    but never later than its receipt (whole seconds, as signed times are). The body is not
    signed and a time ahead within the skew is still accepted: ordered by it, one forged
    callback would make the job's genuine ones "stale" until then."""
    received = item.received_at.replace(microsecond=0)
    return received if item.event_time is None else min(item.event_time, received)


# --- dispatch (shared by live intake and replay) ---------------------------------------------


class Dispatcher:
    """Hands a committed event to its room and the ``on_event`` hook. Synchronous up to the hook."""

    def __init__(
        self,
        *,
        sink: RoomSink,
        room_for_job: Callable[[str], str | None],
        on_event: OnEvent | None = None,
        tracker: StreamTracker | None = None,
        metrics: CallbackMetrics | None = None,
    ) -> None:
        self.sink = sink
        self.room_for_job = room_for_job
        self.on_event = on_event
        self.tracker = tracker or StreamTracker()
        self.metrics: CallbackMetrics = metrics or NullMetrics()

    def post(self, event: CallbackEvent, at: datetime, key: str) -> tuple[Outcome, str | None]:
        """Classify (ordering, retries) and post to the room. Never blocks; returns the room."""
        verdict = self.tracker.check(event, at)
        fields = {"event_type": event.event_type, "job_id": event.job_id, "dedupe_key": key}
        if verdict != "apply":
            log.info(
                "callback_stale" if verdict == "stale" else "callback_retry_suppressed", **fields
            )
            self.metrics.callback(event.event_type, verdict)
            return verdict, None
        room = self.room_for_job(event.job_id) if event.job_id else None
        outcome: Outcome = "applied"
        if room is not None:
            if event.event_type == EVENT_RTMP and event.state in RTMP_STATES:
                assert event.job_id is not None and event.state is not None
                self.sink.post(
                    room,
                    RtmpStateReported(
                        job_id=event.job_id, rtmp_state=event.state, at=at, cause="callback"
                    ),
                )
            elif event.event_type == EVENT_RTMP:
                log.warning("callback_unknown_rtmp_state", room_id=room, **fields)
                self.sink.post(room, Poked(cause="callback:unknown_rtmp_state"))
        elif event.job_id is not None:
            outcome = "unknown_job"
            if event.room_id and self.sink.post(event.room_id, Poked(cause="callback:unknown_job")):
                room = event.room_id
            poked = room is not None
            log.info("callback_unknown_job", room_id=event.room_id, poked=poked, **fields)
        else:
            room = event.room_id
        if event.event_type not in (EVENT_RTMP, EVENT_SCRIPT, EVENT_REPLY):
            log.info("callback_unknown_type", unknown_fields=list(event.unknown_fields), **fields)
        self.metrics.callback(event.event_type, outcome)
        return outcome, room

    async def notify(self, outcome: Outcome, event: CallbackEvent, room: str | None) -> None:
        """Run the ``on_event`` hook for an applied event (failures are logged, not raised)."""
        if self.on_event is None or outcome not in ("applied", "unknown_job"):
            return
        try:
            await self.on_event(event, room)
        except Exception:  # a failing hook must not lose the room's event
            log.exception("callback_hook_failed", event_type=event.event_type, job_id=event.job_id)

    async def dispatch(self, event: CallbackEvent, at: datetime, key: str) -> Outcome:
        outcome, room = self.post(event, at, key)
        await self.notify(outcome, event, room)
        return outcome
