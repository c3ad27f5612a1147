"""What one step of a room leaves behind: its stored state and audit row, its alert rows, and
the :class:`Transition` its listeners (MQTT, metrics, SLA) hear of — durable first.

Listeners only ever hear of a durable state. A step that changes nothing but observation stamps
and counters (:data:`_NOT_DURABLE`) is worth no write and no transition: most steps of a quiet
daemon are polls that confirm a LIVE room.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, Literal

import structlog

from orchestrator.payloads import transition_event
from orchestrator.rooms.explain import explain
from orchestrator.rooms.model import (
    Action,
    ClearAlert,
    Event,
    RaiseAlert,
    Room,
    RoomState,
    Snapshot,
)
from orchestrator.rooms.worker import short
from orchestrator.store.base import FencedOut, RoomWrite, Store, StoreError, TransitionRecord
from orchestrator.store.roomwriter import RoomWriter

__all__ = ["AlertChange", "Recorder", "Transition", "durable_change"]

log = structlog.get_logger(__name__)

_NOT_DURABLE = frozenset({"last_observed_at", "rtmp_at", "seq", "timer_seq", "op_seq", "push"})
"""Room fields whose change alone is worth no store write and no transition. Observation
stamps (of the job and of its link) and sequence counters change on every poll of a healthy
LIVE room; after a restart a room reconciles from UNKNOWN anyway, so writing them would cost
one transaction per room per poll (measured: most of a quiet 10,000-room daemon's CPU) and buy
nothing. (rtmp_at only orders callbacks against reads, in memory.) Every field a snapshot shows,
except last_observed_at, is outside this set."""
_durable_key = attrgetter(*(f.name for f in fields(Room) if f.name not in _NOT_DURABLE))


def durable_change(before: Room, after: Room) -> bool:
    """Did anything but :data:`_NOT_DURABLE` change? (Asked for every event: 10,000 polled
    rooms = 500 a second, so no copies are built.)"""
    if after is before:
        return False
    return bool(_durable_key(after) != _durable_key(before))  # two tuples built in C


AlertChange = tuple[str, Literal["SET", "CLEARED"], str]
"""(kind, SET|CLEARED, message)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """What listeners (MQTT, metrics, SLA) learn about each change of a room's snapshot."""

    room_id: str
    at: datetime
    before: Snapshot
    after: Snapshot
    event: str
    cause: str
    alerts: tuple[AlertChange, ...] = ()
    """Every alert raised or cleared by this step, in order (one step can clear ``unrecovered``
    and raise ``quarantined``: a pager must hear both)."""
    drop_since: datetime | None = None
    """When the room's open drop began: when the stream stopped, which a read or the probe can
    show to be earlier than ``at`` (the SLA and recovery figures count the outage from it)."""

    @property
    def alert(self) -> AlertChange | None:
        """The last alert change of this step (most callers care about one)."""
        return self.alerts[-1] if self.alerts else None

    def to_json(self) -> dict[str, Any]:
        """The non-retained MQTT event (:func:`orchestrator.payloads.transition_event`)."""
        after = self.after
        return transition_event(
            self.room_id,
            from_state=self.before.state.value,
            to_state=after.state.value,
            event=self.event,
            at=self.at,
            cause=self.cause,
            detail={
                "job_id": after.job_id,
                "attempt": after.attempt,
                "next_retry_at": after.next_retry_at.isoformat() if after.next_retry_at else None,
                "last_error": after.last_error,
            },
            alerts=self.alerts,
        )


def alert_changes(actions: Sequence[Action]) -> tuple[AlertChange, ...]:
    out: list[AlertChange] = []
    for action in actions:
        if isinstance(action, RaiseAlert):
            out.append((action.kind, "SET", action.message))
        elif isinstance(action, ClearAlert):
            out.append((action.kind, "CLEARED", ""))
    return tuple(out)


class Recorder:
    """Stores each step and tells the listeners, in that order."""

    def __init__(
        self,
        store: Store,
        listeners: Sequence[Callable[[Transition], None]],
        changed: asyncio.Event,
    ) -> None:
        self._store = store
        self._writer = RoomWriter(store)  # rooms changing together share commits
        self.listeners = list(listeners)
        self._changed = changed  # set on every transition (``stop_all`` waits on it)

    async def record(
        self,
        rid: str,
        fence: int | None,
        before: Room,
        after: Room,
        event: Event,
        now: datetime,
        actions: Sequence[Action],
        changed: bool,
    ) -> None:
        """The step's state and audit row, then its alert rows, then the listeners."""
        if changed:
            await self._persist(rid, before, after, event, now, fence)
        alerts = alert_changes(actions)
        for action in actions:
            if isinstance(action, RaiseAlert | ClearAlert):
                await self._alert(rid, action, now)
        if changed or alerts:
            self.notify(Transition(
                room_id=rid, at=now, before=before.snapshot(), after=after.snapshot(),
                event=type(event).__name__, cause=event.cause, alerts=alerts,
                drop_since=after.drop_since,
            ))  # fmt: skip

    async def _persist(
        self, rid: str, before: Room, after: Room, event: Event, now: datetime, fence: int | None
    ) -> None:
        record = None
        if after.state is not before.state or after.alert != before.alert:
            record = TransitionRecord(
                room_id=rid,
                at=now,
                from_state=before.state.value,
                to_state=after.state.value,
                event=type(event).__name__,
                cause=event.cause,
                detail={
                    "job_id": after.job_id,
                    "last_error": after.last_error,
                    "why": explain(event, before, after),  # the cause in words, for people
                    # the stream stopped before we noticed: the timeline draws the outage
                    # from here
                    **(
                        {"drop_since": after.drop_since.isoformat()}
                        if after.drop_since is not None and before.state is RoomState.LIVE
                        else {}
                    ),
                },
            )
        try:
            # state and its audit row in one transaction: half the commits on the drop path
            await self._writer.save(RoomWrite(rid, after.to_json(), fence, record))
        except FencedOut:
            raise
        except StoreError as exc:
            # The machine state stays authoritative in memory; the next change retries.
            log.error("room_persist_failed", room_id=rid, error=short(exc))

    async def _alert(self, rid: str, action: RaiseAlert | ClearAlert, now: datetime) -> None:
        try:
            if isinstance(action, RaiseAlert):
                log.warning("room_alert_set", room_id=rid, kind=action.kind, message=action.message)
                await self._store.set_alert(rid, action.kind, action.message, now)
            else:
                log.info("room_alert_cleared", room_id=rid, kind=action.kind)
                await self._store.clear_alert(rid, action.kind, now)
        except StoreError as exc:
            log.error("room_alert_persist_failed", room_id=rid, error=short(exc))

    async def drain(self) -> None:
        """Wait for the state writes of rooms cancelled mid-save (they still commit)."""
        await self._writer.drain()

    def notify(self, transition: Transition) -> None:
        self._changed.set()
        for listener in self.listeners:
            try:
                listener(transition)
            except Exception as exc:  # a listener bug must not stall the room
                log.error(
                    "transition_listener_failed", room_id=transition.room_id, error=short(exc)
                )

    async def flush_many(
        self, rooms: Sequence[tuple[str, Room, int | None]], cause: str, *, batch: int = 500
    ) -> None:
        """:meth:`flush` for many rooms, ``batch`` rooms per transaction."""
        for start in range(0, len(rooms), batch):
            part = rooms[start : start + batch]
            writes = [RoomWrite(rid, room.to_json(), fence=fence) for rid, room, fence in part]
            try:
                results = await self._store.save_rooms(writes)
            except StoreError as exc:
                log.warning("room_flush_failed", rooms=len(part), cause=cause, error=short(exc))
                continue
            for (rid, _, fence), result in zip(part, results, strict=True):
                if result is not None:
                    log.warning("room_fenced_out", room_id=rid, fence=fence, cause=cause)

    async def flush(self, rid: str, room: Room, fence: int | None, cause: str) -> None:
        """Save the room's last state under its fence (a moved lease makes this a no-op)."""
        try:
            await self._store.save_room(rid, room.to_json(), fence=fence)
        except FencedOut:
            log.warning("room_fenced_out", room_id=rid, fence=fence, cause=cause)
        except StoreError as exc:
            log.warning("room_flush_failed", room_id=rid, cause=cause, error=short(exc))
