"""The Store protocol in memory: the same contract as ``SqlStore``, nothing on disk.

For tests and local experiments. It passes the contract suite in ``tests/store`` (run on SQLite,
PostgreSQL and this), so a test that uses it sees the store's real rules: fencing and leases
(a fenced write checks the room's lease row; taking a free or expired lease increments its
fence; releasing keeps the row so fences stay monotonic), first-wins replies and intents, inbox
deduplication, naive datetimes refused, JSON values copied in and out, stored text capped.

Several ``MemoryStore`` objects share one :class:`MemoryData` (``MemoryStore(data=other.data)``)
the way several ``SqlStore`` share one database. Every method runs without awaiting in between,
so each call is atomic, like a transaction. ``outage`` makes every call raise that error (a
store that stopped answering); :meth:`MemoryStore.close` makes calls fail as on a closed store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.bounds import cap_json, cap_text
from orchestrator.store.base import (
    DEFAULT_PAYLOAD_BYTES,
    DEFAULT_TEXT_BYTES,
    PAYLOAD_FIRST,
    FencedOut,
    InboxItem,
    Lease,
    PruneCutoffs,
    RoomWrite,
    SlaRow,
    StartIntent,
    Store,
    StoreError,
    TenantSweep,
    TransitionRecord,
)
from orchestrator.store.leases import MEMBER_PREFIX, ROLE_PREFIX

SWEEPS_KEPT = 3  # as the SQL store (store.sql_schema.SWEEPS_KEPT)

__all__ = ["AlertRow", "MemoryData", "MemoryStore"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class AlertRow:
    message: str
    raised_at: datetime
    cleared_at: datetime | None = None


@dataclass(slots=True)
class _Intent:
    intent: StartIntent
    updated_at: datetime


@dataclass(slots=True)
class _InboxRow:
    item: InboxItem  # with its id
    processed: bool = False


@dataclass
class MemoryData:
    """The "database": plain containers, readable by tests that check what was stored."""

    rooms: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    transitions: list[TransitionRecord] = field(default_factory=list)  # in insertion order
    intents: dict[tuple[str, str, int], _Intent] = field(default_factory=dict)
    inbox: dict[int, _InboxRow] = field(default_factory=dict)
    inbox_keys: dict[str, int] = field(default_factory=dict)
    replies: dict[str, tuple[Mapping[str, Any], datetime]] = field(default_factory=dict)
    overrides: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    alerts: dict[tuple[str, str], AlertRow] = field(default_factory=dict)
    sla: dict[tuple[str, date], SlaRow] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)  # owner '' = free (released)
    sweeps: dict[int, TenantSweep] = field(default_factory=dict)
    next_inbox_id: int = 1
    next_sweep_id: int = 1

    def start_intents(self, room_id: str) -> list[StartIntent]:
        """A room's intents in the order the SQL store lists them."""
        found = [i.intent for k, i in self.intents.items() if k[0] == room_id]
        return sorted(found, key=lambda i: (i.created_at, i.window_key, i.attempt))

    def active_alerts(self) -> list[tuple[str, str, str, datetime]]:
        """(room_id, kind, message, raised_at) of every uncleared alert, by room and kind."""
        return [(k[0], k[1], a.message, a.raised_at)
                for k, a in sorted(self.alerts.items()) if a.cleared_at is None]  # fmt: skip


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip, as through a JSON column: no aliasing, tuples become lists."""
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(value)))
    except (TypeError, ValueError) as e:
        raise StoreError(f"store write failed: {type(e).__name__}: {e}") from e
    return copied


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        try:
            raise ValueError("naive datetime given to the store; pass an aware (UTC) datetime")
        except ValueError as e:
            raise StoreError(f"store write failed: ValueError: {e}") from e
    return at.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MemoryStore:
    """The Store protocol in memory (see module doc)."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        data: MemoryData | None = None,
        max_payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
        max_text_bytes: int = DEFAULT_TEXT_BYTES,
    ) -> None:
        self.data = data if data is not None else MemoryData()
        self.outage: StoreError | None = None
        """When set, every call raises it (the store stopped answering)."""
        self._clock = clock or _utcnow
        self._max_payload = max_payload_bytes
        self._max_text = max_text_bytes
        self._open = True

    def _check(self) -> MemoryData:
        if self.outage is not None:
            raise self.outage
        if not self._open:
            raise StoreError("store is not open")
        return self.data

    def _check_fence(self, room_id: str, fence: int | None) -> None:
        if fence is None:
            return
        row = self.data.leases.get(room_id)
        if row is None or row.fence != fence or not row.owner:
            current = "none" if row is None else f"{row.fence} owner={row.owner or '-'}"
            raise FencedOut(f"room {room_id}: fence {fence} no longer holds the lease ({current})")

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def ping(self) -> None:
        self._check()

    # --- rooms and transitions ------------------------------------------------------------

    async def load_rooms(self) -> dict[str, Mapping[str, Any]]:
        return {rid: _copy(state) for rid, state in self._check().rooms.items()}

    async def save_room(
        self,
        room_id: str,
        state: Mapping[str, Any],
        *,
        fence: int | None = None,
        transition: TransitionRecord | None = None,
    ) -> None:
        [fenced] = await self.save_rooms([RoomWrite(room_id, state, fence, transition)])
        if fenced is not None:
            raise fenced

    def _transition(self, rec: TransitionRecord) -> TransitionRecord:
        return replace(
            rec, at=_aware(rec.at), from_state=rec.from_state[:32], to_state=rec.to_state[:32],
            event=rec.event[:64], cause=cap_text(rec.cause, self._max_text),
            detail=_copy(cap_json(dict(rec.detail), self._max_text)),
        )  # fmt: skip

    async def save_rooms(self, writes: Sequence[RoomWrite]) -> list[FencedOut | None]:
        db = self._check()
        results: list[FencedOut | None] = []
        rows: dict[str, dict[str, Any]] = {}
        audit: list[TransitionRecord] = []
        for w in writes:  # everything is checked and copied before anything is written
            try:
                self._check_fence(w.room_id, w.fence)
            except FencedOut as exc:
                results.append(exc)
                continue
            results.append(None)
            rows[w.room_id] = _copy(w.state)
            if w.transition is not None:
                audit.append(self._transition(w.transition))
        db.rooms.update(rows)
        db.transitions.extend(audit)
        return results

    async def delete_room(self, room_id: str) -> None:
        self._check().rooms.pop(room_id, None)

    async def transitions(
        self, room_id: str | None = None, *, since: datetime | None = None, limit: int = 100
    ) -> list[TransitionRecord]:
        db = self._check()
        since = None if since is None else _aware(since)
        found = [
            (t.at, n, t)
            for n, t in enumerate(db.transitions)
            if (room_id is None or t.room_id == room_id) and (since is None or t.at >= since)
        ]
        latest = sorted(found, key=lambda x: (x[0], x[1]), reverse=True)[: max(limit, 0)]
        return [replace(t, detail=_copy(t.detail)) for _, _, t in reversed(latest)]

    # --- start intents ------------------------------------------------------------------

    async def put_start_intent(self, intent: StartIntent, *, fence: int | None = None) -> bool:
        db = self._check()
        self._check_fence(intent.room_id, fence)
        key = (intent.room_id, intent.window_key, intent.attempt)
        if key in db.intents:
            return False
        created = _aware(intent.created_at)
        db.intents[key] = _Intent(replace(intent, created_at=created), created)
        return True

    async def resolve_start_intent(
        self, room_id: str, window_key: str, attempt: int, *, outcome: str, job_id: str | None
    ) -> None:
        row = self._check().intents.get((room_id, window_key, attempt))
        if row is None:
            raise StoreError(
                f"no start intent for room {room_id} window {window_key} attempt {attempt}"
            )
        kept = row.intent.job_id if job_id is None else job_id
        row.intent = replace(row.intent, outcome=outcome, job_id=kept)
        row.updated_at = self._clock()

    # --- inbox --------------------------------------------------------------------------

    async def inbox_append(
        self, items: Sequence[InboxItem], *, notify_channel: str | None = None
    ) -> list[bool]:
        db = self._check()
        cap = self._max_payload
        stored = [
            replace(
                it, payload=_copy(cap_json(dict(it.payload), cap, first=PAYLOAD_FIRST)),
                received_at=_aware(it.received_at),
                event_time=None if it.event_time is None else _aware(it.event_time),
            )
            for it in items
        ]  # fmt: skip
        flags: list[bool] = []
        for it in stored:
            if it.dedupe_key in db.inbox_keys:
                flags.append(False)
                continue
            item_id = db.next_inbox_id
            db.next_inbox_id += 1
            db.inbox[item_id] = _InboxRow(replace(it, id=item_id))
            db.inbox_keys[it.dedupe_key] = item_id
            flags.append(True)
        return flags

    async def inbox_pending(self, limit: int = 1000) -> list[InboxItem]:
        db = self._check()
        pending = [db.inbox[i].item for i in sorted(db.inbox) if not db.inbox[i].processed]
        return [replace(it, payload=_copy(it.payload)) for it in pending[: max(limit, 0)]]

    async def inbox_pending_for(
        self, room_ids: Sequence[str], limit: int = 1000
    ) -> list[InboxItem]:
        rooms = set(room_ids)
        pending = [it for it in await self.inbox_pending(len(self._check().inbox))]
        return [it for it in pending if it.room_id in rooms][: max(limit, 0)]

    async def inbox_claim(
        self, ids: Sequence[int], *, owner: str | None, now: datetime
    ) -> list[InboxItem]:
        db = self._check()
        out: list[InboxItem] = []
        for item_id in sorted(set(ids)):
            row = db.inbox.get(item_id)
            if row is None or row.processed:
                continue
            if owner is not None:
                lease = db.leases.get(row.item.room_id or "")
                if lease is None or lease.owner != owner or lease.expires_at <= _aware(now):
                    continue
            row.processed = True
            out.append(replace(row.item, payload=_copy(row.item.payload)))
        return out

    async def inbox_done(self, ids: Sequence[int]) -> None:
        db = self._check()
        for item_id in ids:
            if item_id in db.inbox:
                db.inbox[item_id].processed = True

    async def inbox_done_keys(self, keys: Sequence[str]) -> None:
        db = self._check()
        await self.inbox_done([db.inbox_keys[k] for k in keys if k in db.inbox_keys])

    # --- retention ----------------------------------------------------------------------

    async def prune_older(self, cutoffs: PruneCutoffs) -> dict[str, int]:
        db = self._check()
        c = cutoffs
        counts: dict[str, int] = {}
        if c.inbox is not None:
            cut = c.inbox
            old = [i for i, row in db.inbox.items() if row.item.received_at < cut]
            for i in old:
                del db.inbox_keys[db.inbox.pop(i).item.dedupe_key]
            counts["inbox"] = len(old)
        if c.transitions is not None:
            cut = c.transitions
            kept = [t for t in db.transitions if not t.at < cut]
            counts["transitions"] = len(db.transitions) - len(kept)
            db.transitions[:] = kept
        if c.replies is not None:
            cut = c.replies
            counts["replies"] = _drop(db.replies, lambda r: r[1] < cut)
        if c.jobs is not None:
            counts["jobs"] = 0  # jobs seen are no longer recorded (see store.sql_schema)
        if c.start_intents is not None:
            cut = c.start_intents
            counts["start_intents"] = _drop(
                db.intents, lambda i: i.intent.outcome != "pending" and i.updated_at < cut
            )
        if c.alerts is not None:
            cut = c.alerts
            counts["alerts"] = _drop(
                db.alerts, lambda a: a.cleared_at is not None and a.cleared_at < cut
            )
        if c.sla is not None:
            day = c.sla
            counts["sla"] = _drop(db.sla, lambda r: r.day < day)
        return counts

    # --- command replies ----------------------------------------------------------------

    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None:
        found = self._check().replies.get(command_id)
        return None if found is None else _copy(found[0])

    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool:
        db = self._check()
        if command_id in db.replies:
            return False
        db.replies[command_id] = (_copy(cap_json(dict(reply), self._max_text)), _aware(at))
        return True

    # --- schedule overrides -------------------------------------------------------------

    async def get_overrides(self, room_id: str) -> Mapping[str, Any]:
        found = self._check().overrides.get(room_id)
        return {} if found is None else _copy(found)

    async def all_overrides(self) -> dict[str, Mapping[str, Any]]:
        return {rid: _copy(o) for rid, o in self._check().overrides.items()}

    async def put_overrides(self, room_id: str, overrides: Mapping[str, Any]) -> None:
        self._check().overrides[room_id] = _copy(overrides)

    # --- alerts -------------------------------------------------------------------------

    async def set_alert(self, room_id: str, kind: str, message: str, at: datetime) -> None:
        """Raise (or re-raise) an alert; an alert already active keeps its original time."""
        db = self._check()
        at = _aware(at)
        message = cap_text(message, self._max_text)
        row = db.alerts.get((room_id, kind))
        raised = row.raised_at if row is not None and row.cleared_at is None else at
        db.alerts[(room_id, kind)] = AlertRow(message, raised)

    async def clear_alert(self, room_id: str, kind: str, at: datetime) -> None:
        db = self._check()
        at = _aware(at)
        row = db.alerts.get((room_id, kind))
        if row is not None and row.cleared_at is None:
            row.cleared_at = at

    # --- SLA ----------------------------------------------------------------------------

    async def add_sla_rows(self, rows: Sequence[SlaRow]) -> None:
        db = self._check()
        if len({(r.room_id, r.day) for r in rows}) != len(rows):
            raise ValueError("add_sla_rows: at most one row per room and day")
        for r in rows:
            old = db.sla.get((r.room_id, r.day))
            if old is not None:
                r = SlaRow(
                    r.room_id, r.day, old.scheduled_s + r.scheduled_s, old.live_s + r.live_s,
                    old.drops + r.drops, old.recoveries + r.recoveries,
                    old.recovery_s_total + r.recovery_s_total,
                    max(old.recovery_s_max, r.recovery_s_max),
                )  # fmt: skip
            db.sla[(r.room_id, r.day)] = r

    async def sla(self, since: date, room_id: str | None = None) -> list[SlaRow]:
        rows = self._check().sla.values()
        found = [r for r in rows if r.day >= since and (room_id is None or r.room_id == room_id)]
        return sorted(found, key=lambda r: (r.day, r.room_id))

    # --- leases -------------------------------------------------------------------------

    async def acquire_leases(
        self,
        owner: str,
        room_ids: Sequence[str],
        *,
        ttl_s: float,
        now: datetime,
        max_rooms: int | None = None,
    ) -> list[Lease]:
        """As ``SqlStore.acquire_leases``: renew ours, then take free or expired ones."""
        db = self._check()
        if not owner:
            raise StoreError("lease owner must be a non-empty string")
        wanted = sorted(set(room_ids))
        if not wanted:
            return []
        now = _aware(now)
        expires = now + timedelta(seconds=ttl_s)
        for r in wanted:
            db.leases.setdefault(r, Lease(r, "", 0, _EPOCH))
            if db.leases[r].owner == owner:
                db.leases[r] = replace(db.leases[r], expires_at=expires)
        capacity: int | None = None
        if max_rooms is not None:
            held = sum(
                1
                for x in db.leases.values()
                if x.owner == owner
                and x.expires_at > now
                and not x.room_id.startswith((MEMBER_PREFIX, ROLE_PREFIX))
            )
            capacity = max(0, max_rooms - held)

        def free(x: Lease) -> bool:
            return x.owner != owner and (x.owner == "" or x.expires_at <= now)

        members = [r for r in wanted if r.startswith(MEMBER_PREFIX)]
        take = list(members)  # membership keys never count against max_rooms
        for r in wanted:
            if r in members or not free(db.leases[r]):
                continue
            if capacity is not None and len(take) - len(members) >= capacity:
                break
            take.append(r)
        for r in take:
            x = db.leases[r]
            if free(x):
                db.leases[r] = Lease(r, owner, x.fence + 1, expires)
        return [db.leases[r] for r in wanted if db.leases[r].owner == owner]

    async def release_leases(self, owner: str, room_ids: Sequence[str]) -> None:
        db = self._check()
        for r in set(room_ids):
            x = db.leases.get(r)
            if x is not None and x.owner == owner:
                db.leases[r] = Lease(r, "", x.fence, _EPOCH)

    async def leases(self) -> list[Lease]:
        """Every lease currently assigned to an owner (expired ones included), by room id."""
        db = self._check()
        return [db.leases[r] for r in sorted(db.leases) if db.leases[r].owner]

    # --- tenant sweeps ------------------------------------------------------------------

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
        """As ``SqlStore.put_sweep`` (no signal: memory serves one process)."""
        db = self._check()
        self._check_fence(lease_key, fence)
        sweep_id = db.next_sweep_id
        db.next_sweep_id += 1
        copied = {room: tuple(_copy(j) for j in js) for room, js in jobs.items()}
        db.sweeps[sweep_id] = TenantSweep(sweep_id, reader, _aware(taken_at), jobs_seen, copied)
        for old in [k for k in db.sweeps if k <= sweep_id - SWEEPS_KEPT]:
            del db.sweeps[old]
        return sweep_id

    async def latest_sweep(self, *, after: int = 0) -> TenantSweep | None:
        db = self._check()
        newest = max(db.sweeps, default=0)
        if newest <= after:
            return None
        s = db.sweeps[newest]
        jobs = {room: tuple(_copy(j) for j in js) for room, js in s.jobs.items()}
        return replace(s, jobs=jobs)


def _drop(table: dict[Any, Any], old: Callable[[Any], bool]) -> int:
    gone = [k for k, v in table.items() if old(v)]
    for k in gone:
        del table[k]
    return len(gone)


if TYPE_CHECKING:  # mypy proves the class implements every role

    def _implements(store: MemoryStore) -> Store:
        return store
