"""The store contract: our only source of truth for desired state and our memory across restarts.

One implementation (``store.sql.SqlStore``) serves SQLite and PostgreSQL through SQLAlchemy Core;
the contract tests in ``tests/store`` run against both. Records are frozen dataclasses; JSON
columns hold plain dicts. Every write that concerns one room may carry a ``fence`` (the lease's
fencing token, multi-instance only): a write whose fence is older than the room's current lease
raises :class:`FencedOut` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from orchestrator.errors import OrchestratorError


class StoreError(OrchestratorError):
    """The store failed (I/O, schema). Temporary for PostgreSQL connection loss."""


class FencedOut(StoreError):
    """This instance no longer owns the room: stop acting on it."""


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    room_id: str
    at: datetime
    from_state: str
    to_state: str
    event: str  # event class name
    cause: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoomWrite:
    """One room's ``save_room``, for :meth:`Store.save_rooms`."""

    room_id: str
    state: Mapping[str, Any]
    fence: int | None = None
    transition: TransitionRecord | None = None


@dataclass(frozen=True, slots=True)
class StartIntent:
    """Written *before* a start call: (room, window_key, attempt) is the idempotency key."""

    room_id: str
    window_key: str
    attempt: int
    created_at: datetime
    job_id: str | None = None
    outcome: str = "pending"  # pending | started | failed | unknown | adopted


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One verified callback, durable before we answer 200. ``id`` is set once stored."""

    dedupe_key: str
    room_id: str | None
    job_id: str | None
    event_type: str
    payload: Mapping[str, Any]
    received_at: datetime
    event_time: datetime | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    room_id: str
    owner: str
    fence: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SlaRow:
    room_id: str
    day: date
    scheduled_s: float
    live_s: float
    drops: int
    recoveries: int
    recovery_s_total: float
    recovery_s_max: float


@dataclass(frozen=True, slots=True)
class PruneCutoffs:
    """For :meth:`Store.prune_older`: rows older than each cutoff go (None: keep that table).

    What still matters is never pruned whatever the cutoff: rooms, leases, overrides, active
    alerts and pending start intents."""

    inbox: datetime | None = None
    """Callback inbox rows received before this (processed or not)."""
    replies: datetime | None = None
    """MQTT command replies stored before this."""
    transitions: datetime | None = None
    jobs: datetime | None = None
    """Jobs last seen before this."""
    start_intents: datetime | None = None
    """Resolved start intents last updated before this."""
    alerts: datetime | None = None
    """Alerts cleared before this."""
    sla: date | None = None
    """SLA rows of days before this."""


class Store(Protocol):
    """Async store. All methods are safe to call concurrently from many room workers."""

    async def open(self) -> None:
        """Connect and create/migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the store is reachable and writable (readiness)."""

    # rooms' runtime state (snapshot JSON of rooms.model.Room)
    async def load_rooms(self) -> dict[str, Mapping[str, Any]]: ...
    async def save_room(
        self,
        room_id: str,
        state: Mapping[str, Any],
        *,
        fence: int | None = None,
        transition: TransitionRecord | None = None,
    ) -> None:
        """Upsert the room's state; with ``transition``, append it in the same transaction."""

    async def save_rooms(self, writes: Sequence[RoomWrite]) -> list[FencedOut | None]:
        """Several rooms' :meth:`save_room` in one transaction (group commit). A write whose
        fence no longer holds gets its ``FencedOut`` in its slot and writes nothing; the others
        are written. A store failure raises for the whole batch."""

    async def delete_room(self, room_id: str) -> None: ...

    # audit log
    async def append_transition(
        self, rec: TransitionRecord, *, fence: int | None = None
    ) -> None: ...
    async def transitions(
        self, room_id: str | None = None, *, since: datetime | None = None, limit: int = 100
    ) -> list[TransitionRecord]: ...

    # jobs seen
    async def record_job(self, room_id: str, job_id: str, state: str, at: datetime) -> None: ...

    # start intents (never a duplicate push)
    async def put_start_intent(self, intent: StartIntent, *, fence: int | None = None) -> bool:
        """False when this (room, window_key, attempt) was already recorded."""

    async def resolve_start_intent(
        self, room_id: str, window_key: str, attempt: int, *, outcome: str, job_id: str | None
    ) -> None: ...
    async def start_intents(
        self, room_id: str, *, pending_only: bool = False
    ) -> list[StartIntent]: ...

    # callback inbox
    async def inbox_append(self, items: Sequence[InboxItem]) -> list[bool]:
        """Store new items in one transaction; per item False when it was a duplicate."""

    async def inbox_pending(self, limit: int = 1000) -> list[InboxItem]: ...
    async def inbox_done(self, ids: Sequence[int]) -> None: ...
    async def inbox_done_keys(self, keys: Sequence[str]) -> None:
        """Mark items processed by dedupe key (the live intake knows keys, not ids)."""

    async def prune_older(self, cutoffs: PruneCutoffs) -> dict[str, int]:
        """Delete what is older than the cutoffs, table by table in bounded transactions;
        returns the rows deleted per table (retention, see ``settings.RetentionSettings``)."""

    # MQTT command idempotency
    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None: ...
    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool:
        """False when a reply for this id already exists (the stored one wins)."""

    # schedule overrides made at runtime (pause/resume, one-off windows, skips)
    async def get_overrides(self, room_id: str) -> Mapping[str, Any]: ...
    async def all_overrides(self) -> dict[str, Mapping[str, Any]]:
        """Every room's overrides in one read (startup: one query, not one per room)."""

    async def put_overrides(self, room_id: str, overrides: Mapping[str, Any]) -> None: ...

    # alerts
    async def set_alert(self, room_id: str, kind: str, message: str, at: datetime) -> None: ...
    async def clear_alert(self, room_id: str, kind: str, at: datetime) -> None: ...
    async def active_alerts(self) -> list[tuple[str, str, str, datetime]]: ...

    # SLA accounting (seconds accumulate per room and day)
    async def add_sla(
        self,
        room_id: str,
        day: date,
        *,
        scheduled_s: float = 0.0,
        live_s: float = 0.0,
        drops: int = 0,
        recovery_s: float | None = None,
    ) -> None: ...
    async def add_sla_rows(self, rows: Sequence[SlaRow]) -> None:
        """Accumulate every row into its (room, day) totals in one transaction (at most one row
        per room and day); ``recovery_s_max`` keeps the larger value."""

    async def sla(self, since: date, room_id: str | None = None) -> list[SlaRow]: ...

    # leases (multi-instance; with one instance every room is simply owned)
    async def acquire_leases(
        self,
        owner: str,
        room_ids: Sequence[str],
        *,
        ttl_s: float,
        now: datetime,
        max_rooms: int | None = None,
    ) -> list[Lease]:
        """Take free or expired leases and renew ours in one batch; returns the leases we hold."""

    async def release_leases(self, owner: str, room_ids: Sequence[str]) -> None: ...
    async def leases(self) -> list[Lease]: ...
