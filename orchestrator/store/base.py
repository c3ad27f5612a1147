"""The store contract: our only source of truth for desired state and our memory across restarts.

``Store`` is the union of role protocols (rooms, transitions, intents, inbox, replies, overrides,
alerts, SLA, leases, retention); a caller that needs one role is typed with that role.
``store.sql.SqlStore`` serves SQLite and PostgreSQL through SQLAlchemy Core and
``store.memory.MemoryStore`` keeps everything in memory; the contract tests in ``tests/store`` run
against all three. Records are frozen dataclasses; JSON columns hold plain dicts. Every write that
concerns one room may carry a ``fence`` (the lease's fencing token, multi-instance only): a write
whose fence is older than the room's current lease raises :class:`FencedOut` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from orchestrator.errors import OrchestratorError, TemporaryError

# Defaults of the caps on stored free text from outside (settings [limits] override them).
DEFAULT_PAYLOAD_BYTES = 8192
DEFAULT_TEXT_BYTES = 16384

# What replay needs to route a stored callback: kept first when a payload must be cut.
PAYLOAD_FIRST = (
    "event_type",
    "message",
    "hw_time",
    "job_id",
    "room_id",
    "state",
    "output_url",
    "reply_id",
    "scene_script_name",
    "shoot_script_sequence_no",
)


class StoreError(OrchestratorError):
    """The store failed (I/O, schema); :class:`StoreUnavailable` when it is temporary."""


class FencedOut(StoreError):
    """This instance no longer owns the room: stop acting on it."""


class StoreUnavailable(StoreError, TemporaryError):
    """Temporary: the database connection was lost or refused (PostgreSQL). Retry later.

    A StoreError (existing ``except StoreError`` handlers still catch it) and a TemporaryError
    (retry loops treat a store outage like a cloud outage). ``temporary`` stays for callers
    that test the flag instead of the class.
    """

    temporary = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


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
    for_owner: bool = False
    """Left in the inbox for the owner of its room, another instance (several instances): the
    store signals it on commit (``inbox_append(notify_channel=...)``); not stored as such."""


@dataclass(frozen=True, slots=True)
class Lease:
    room_id: str
    owner: str
    fence: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class TenantSweep:
    """One listing of the tenant's running jobs by the fleet's tenant reader.

    ``jobs`` maps a room id to its jobs' observations (JSON objects as the reader wrote them);
    a room absent from it had no running job. ``taken_at`` is when the listing began, so an
    observation is never older than the sweep says.
    """

    sweep_id: int
    reader: str
    taken_at: datetime
    jobs_seen: int
    jobs: Mapping[str, Sequence[Mapping[str, Any]]]


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


class StoreLifecycle(Protocol):
    """Opening, closing and readiness: every store has them."""

    async def open(self) -> None:
        """Connect and create/migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError unless the store is reachable and writable (readiness)."""


class RoomStore(Protocol):
    """Rooms' runtime state (snapshot JSON of ``rooms.model.Room``) and its audit rows."""

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


class TransitionStore(Protocol):
    """The audit log, written by :meth:`RoomStore.save_room` and read here."""

    async def transitions(
        self, room_id: str | None = None, *, since: datetime | None = None, limit: int = 100
    ) -> list[TransitionRecord]:
        """The latest ``limit`` transitions (at or after ``since``), returned oldest first."""


class IntentStore(Protocol):
    """Start intents: never a duplicate push."""

    async def put_start_intent(self, intent: StartIntent, *, fence: int | None = None) -> bool:
        """False when this (room, window_key, attempt) was already recorded."""

    async def resolve_start_intent(
        self, room_id: str, window_key: str, attempt: int, *, outcome: str, job_id: str | None
    ) -> None:
        """Set the outcome; ``job_id=None`` keeps a job id already recorded. Raises StoreError
        when no such intent exists."""


class InboxStore(Protocol):
    """The callback inbox: durable before we answer 200, replayed at startup.

    Several instances: an item received by an instance that does not own its room is left
    pending (``for_owner``) and announced in the same transaction; the room's owner *claims*
    it (``inbox_claim``), which marks it processed once, whoever asks twice."""

    async def inbox_append(
        self, items: Sequence[InboxItem], *, notify_channel: str | None = None
    ) -> list[bool]:
        """Store new items in one transaction; per item False when it was a duplicate. On
        PostgreSQL with ``notify_channel``, the new ``for_owner`` items are announced there in
        the same transaction (payload: JSON ``[[id, room_id, job_id], ...]``); SQLite and
        memory serve one instance and send nothing."""

    async def inbox_pending(self, limit: int = 1000) -> list[InboxItem]: ...
    async def inbox_pending_for(
        self, room_ids: Sequence[str], limit: int = 1000
    ) -> list[InboxItem]:
        """Pending items of these rooms, oldest first (an owner's replay of its rooms)."""

    async def inbox_claim(
        self, ids: Sequence[int], *, owner: str | None, now: datetime
    ) -> list[InboxItem]:
        """Mark these items processed and return the ones this call changed (not already
        processed). With ``owner``, only items of rooms whose unexpired lease ``owner`` holds:
        an instance that lost a room cannot take its callbacks from the new owner."""

    async def inbox_done(self, ids: Sequence[int]) -> None: ...
    async def inbox_done_keys(self, keys: Sequence[str]) -> None:
        """Mark items processed by dedupe key (the live intake knows keys, not ids)."""


class ReplyStore(Protocol):
    """MQTT command idempotency."""

    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None: ...
    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool:
        """False when a reply for this id already exists (the stored one wins)."""


class OverrideStore(Protocol):
    """Schedule overrides made at runtime (pause/resume, one-off windows, skips)."""

    async def get_overrides(self, room_id: str) -> Mapping[str, Any]: ...
    async def all_overrides(self) -> dict[str, Mapping[str, Any]]:
        """Every room's overrides in one read (startup: one query, not one per room)."""

    async def put_overrides(self, room_id: str, overrides: Mapping[str, Any]) -> None: ...


class AlertStore(Protocol):
    """Alerts raised and cleared (an alert already active keeps its first raise time)."""

    async def set_alert(self, room_id: str, kind: str, message: str, at: datetime) -> None: ...
    async def clear_alert(self, room_id: str, kind: str, at: datetime) -> None: ...


class SlaStore(Protocol):
    """SLA accounting: seconds accumulate per room and day."""

    async def add_sla_rows(self, rows: Sequence[SlaRow]) -> None:
        """Accumulate every row into its (room, day) totals in one transaction (at most one row
        per room and day, else ValueError); ``recovery_s_max`` keeps the larger value."""

    async def sla(self, since: date, room_id: str | None = None) -> list[SlaRow]: ...


class LeaseStore(Protocol):
    """Leases (multi-instance; with one instance every room is simply owned)."""

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


class SweepStore(Protocol):
    """The tenant reader's listings, shared with every owner (several instances)."""

    async def put_sweep(
        self,
        *,
        reader: str,
        lease_key: str,
        fence: int,
        taken_at: datetime,
        jobs_seen: int,
        jobs: Mapping[str, Sequence[Mapping[str, Any]]],
        notify_channel: str | None = None,
    ) -> int:
        """Store a sweep if ``fence`` still holds ``lease_key`` (else :class:`FencedOut`), keep
        only the last few, and on PostgreSQL ``NOTIFY notify_channel`` with the new sweep id in
        the same transaction (SQLite and memory: no signal; they serve one instance).
        Returns the sweep id (increasing)."""

    async def latest_sweep(self, *, after: int = 0) -> TenantSweep | None:
        """The newest sweep if its id is above ``after`` (None otherwise)."""


class RetentionStore(Protocol):
    """Pruning what is old enough (retention, see ``settings.RetentionSettings``)."""

    async def prune_older(self, cutoffs: PruneCutoffs) -> dict[str, int]:
        """Delete what is older than the cutoffs, table by table in bounded transactions;
        returns the rows deleted per table."""


class Store(
    StoreLifecycle,
    RoomStore,
    TransitionStore,
    IntentStore,
    InboxStore,
    ReplyStore,
    OverrideStore,
    AlertStore,
    SlaStore,
    LeaseStore,
    SweepStore,
    RetentionStore,
    Protocol,
):
    """Every role at once, for the callers that need everything (the daemon's wiring).

    All methods are safe to call concurrently from many room workers. A caller that needs one
    role takes that role's protocol, so a test can hand it a smaller double.
    """
