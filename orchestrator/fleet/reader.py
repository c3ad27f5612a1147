"""One tenant read for the whole fleet: the elected reader lists, every owner gets its part.

Several instances each listing the whole tenant every period would read it N times and spend
N times the query budget on the same answer. Instead:

* the instance holding the ``tenant-reader`` role (a lease, ``orchestrator.ownership``) lists
  the tenant's running jobs once per poll period, stores the listing in PostgreSQL as one
  *sweep* (``SweepStore.put_sweep``, fenced by the role's lease) and sends ``NOTIFY`` with the
  sweep's id in the same transaction; it hands its own rooms their part at once;
* every other instance LISTENs (``store.notify.PgSignals``), reads the newest sweep when told
  and posts its own rooms' observations exactly as its own poll would (``apply_listing``). On
  every (re)connect of the listening connection it reads the newest sweep first (a
  notification sent while it was away is lost, the row is not);
* the guarantee that every room is read at least every ``poll_interval_s`` stays with the
  owner: when no sweep has arrived for that long (the reader died and its lease has not
  expired yet, PostgreSQL or the listener is down), the owner lists the tenant itself for its
  own rooms, within its own share of the query budget, until sweeps arrive again.

A room's own reads (show-job before acting, the list-and-adopt of a gained room) never go
through here: they stay with its owner.

The reader starts a sweep every ``period * (0.7 to 0.9)`` (start to start, ``period`` from
``rooms.policy.poll_period``), so its sweeps arrive before an owner's ``poll_interval_s``
deadline even when one listing takes longer than the one before.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from orchestrator.clock import Clock
from orchestrator.errors import OrchestratorError
from orchestrator.fleet.share import TENANT_READER
from orchestrator.ops import systemd
from orchestrator.ownership import role_key
from orchestrator.rooms.model import ObservedJob
from orchestrator.rooms.policy import poll_period
from orchestrator.settings import Settings, StoreSettings
from orchestrator.store.base import FencedOut, StoreError, SweepStore, TenantSweep
from orchestrator.store.notify import LocalSignals, PgSignals, Signals, channel_name

__all__ = [
    "SWEEP_TOPIC",
    "FleetTenantRead",
    "fleet_signals",
    "gain_hints",
    "job_from_json",
    "job_to_json",
    "sweep_channel",
]

log = structlog.get_logger(__name__)

SWEEP_TOPIC = "sweep"
"""The signal topic a new sweep is announced on (payload: the sweep id)."""

_TICK_S = 1.0  # the loop checks its deadlines this often at most (a comparison when idle)


class Listings(Protocol):
    """What the fleet read needs of the room supervisor."""

    @property
    def tenant_jobs_seen(self) -> int: ...
    @property
    def room_count(self) -> int: ...
    async def poll_once(self) -> None: ...
    async def list_tenant_jobs(self) -> dict[str, list[ObservedJob]]: ...
    async def apply_listing(
        self, by_room: Mapping[str, Sequence[ObservedJob]], *, jobs_seen: int
    ) -> None: ...


class Roles(Protocol):
    """What the fleet read needs of the ownership manager."""

    owner: str

    def holds_role(self, role: str, now: datetime | None = None) -> bool: ...
    def role_fence(self, role: str) -> int | None: ...
    def owned(self, now: datetime | None = None) -> list[str]: ...


def fleet_signals(store: StoreSettings) -> Signals:
    """LISTEN/NOTIFY on the store's PostgreSQL (namespaced by its schema); in-process otherwise."""
    if not store.url.startswith("postgresql"):
        return LocalSignals()
    from sqlalchemy.engine import make_url  # the URL parser only; the driver is asyncpg's own

    dsn = make_url(store.url).set(drivername="postgresql")
    return PgSignals(dsn.render_as_string(hide_password=False), store.pg_schema or "")


def sweep_channel(store: StoreSettings) -> str:
    """The channel a new sweep is announced on (what :func:`fleet_signals` listens to)."""
    return channel_name(store.pg_schema or "", SWEEP_TOPIC)


def job_to_json(job: ObservedJob) -> dict[str, Any]:
    out: dict[str, Any] = {"job_id": job.job_id, "state": job.state}
    for key in ("rtmp_state", "duration", "stream_duration"):
        value = getattr(job, key)
        if value is not None:
            out[key] = value
    return out


def job_from_json(raw: Mapping[str, Any]) -> ObservedJob:
    return ObservedJob(
        job_id=str(raw["job_id"]),
        state=str(raw["state"]),
        rtmp_state=raw.get("rtmp_state"),
        duration=raw.get("duration"),
        stream_duration=raw.get("stream_duration"),
    )


async def gain_hints(
    store: SweepStore,
    room_ids: Sequence[str],
    *,
    now: datetime,
    max_age_s: float,
) -> dict[str, tuple[ObservedJob, ...]]:
    """Running jobs of ``room_ids`` from the fleet's latest sweep, if it is fresh.

    Rooms gained from another instance take these as their first list's answer, instead of
    one list call each (3,000 rooms = 150 s at 20 queries/s). Only rooms the sweep shows with
    a job are answered: an empty answer could lead to a start, so it is always asked for real.
    """
    sweep = await store.latest_sweep()
    if sweep is None or now - sweep.taken_at > timedelta(seconds=max_age_s):
        return {}
    out: dict[str, tuple[ObservedJob, ...]] = {}
    for room in room_ids:
        raw = sweep.jobs.get(room)
        if raw:
            out[room] = tuple(job_from_json(j) for j in raw)
    return out


class FleetTenantRead:
    """The poller of an instance among several (see the module doc); replaces the lone
    instance's ``TenantPoller``."""

    def __init__(
        self,
        rooms: Listings,
        roles: Roles,
        store: SweepStore,
        signals: Signals,
        *,
        channel: str,
        clock: Clock,
        settings: Callable[[], Settings],
        rng: random.Random,
        status: Callable[[], str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rooms = rooms
        self._roles = roles
        self._store = store
        self._signals = signals
        self._channel = channel
        self._clock = clock
        self._settings = settings
        self._rng = rng
        self._status = status
        self._mono = monotonic
        self._applied = 0  # newest sweep id handed to our rooms
        self._fresh_at = monotonic()  # when our rooms last got a listing (sweep or our own)
        self._next_sweep = 0.0  # monotonic time of the reader's next sweep
        self._told = asyncio.Event()  # a NOTIFY arrived: read the newest sweep
        self._apply_lock = asyncio.Lock()
        self.sweeps_made = 0
        self.sweeps_applied = 0
        self.fallbacks = 0
        signals.subscribe(SWEEP_TOPIC, self._on_signal)
        signals.on_resync(self._resync)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Until cancelled: sweep when reader, apply what is announced, fall back when late."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(), name="sweep-follow")
            while True:
                await self._tick()
                # fine enough to keep the reader's 0.7-0.9 period and the owner's deadline
                await asyncio.sleep(min(_TICK_S, self._settings().recovery.poll_interval_s / 10))

    async def _tick(self) -> None:
        r = self._settings().recovery
        now = self._mono()
        if self._roles.holds_role(TENANT_READER):
            if now >= self._next_sweep:
                period = poll_period(
                    max(self._rooms.tenant_jobs_seen, self._rooms.room_count),
                    longest_s=r.poll_interval_s,
                    shortest_s=r.poll_min_interval_s,
                    queries_per_s=r.poll_queries_per_s,
                )
                self._next_sweep = now + period * (0.7 + 0.2 * self._rng.random())
                await self._sweep()
                systemd.status(self._status())
            return
        self._next_sweep = 0.0  # a role gained later sweeps at once (owners may be late)
        if now - self._fresh_at >= r.poll_interval_s:
            self._fresh_at = now
            if not self._roles.owned():
                return  # nothing of ours to read
            log.info("tenant_read_fallback", owned=len(self._roles.owned()))
            self.fallbacks += 1
            try:
                await self._rooms.poll_once()
            except OrchestratorError as exc:
                log.warning("poll_failed", error=str(exc))
            systemd.status(self._status())

    async def _sweep(self) -> None:
        """List the tenant, store and announce the sweep, hand our own rooms their part."""
        taken_at = self._clock.now()
        try:
            by_room = await self._rooms.list_tenant_jobs()
        except OrchestratorError as exc:
            log.warning("poll_failed", error=str(exc))
            return
        jobs_seen = sum(len(v) for v in by_room.values())
        fence = self._roles.role_fence(TENANT_READER)
        if fence is not None and self._roles.holds_role(TENANT_READER):
            try:
                sweep_id = await self._store.put_sweep(
                    reader=self._roles.owner,
                    lease_key=role_key(TENANT_READER),
                    fence=fence,
                    taken_at=taken_at,
                    jobs_seen=jobs_seen,
                    jobs={room: [job_to_json(j) for j in js] for room, js in by_room.items()},
                    notify_channel=self._channel,
                )
            except FencedOut:
                log.warning("tenant_sweep_fenced_out", fence=fence)
            except StoreError as exc:  # owners fall back on their own reads meanwhile
                log.warning("tenant_sweep_store_failed", error=str(exc)[:300])
            else:
                self._applied = max(self._applied, sweep_id)
                self.sweeps_made += 1
                log.info("tenant_sweep_stored", sweep_id=sweep_id, jobs=jobs_seen)
        # our own rooms take the listing directly (it is fresh, whoever else hears of it)
        async with self._apply_lock:
            self._fresh_at = self._mono()
            await self._rooms.apply_listing(by_room, jobs_seen=jobs_seen)

    # ------------------------------------------------------------------ following sweeps

    def _on_signal(self, payload: str) -> None:
        try:
            announced = int(payload)
        except ValueError:
            log.warning("tenant_sweep_bad_signal", payload=payload[:64])
            return
        if announced > self._applied:
            self._told.set()

    async def _resync(self) -> None:
        """(Re)connected: what was announced while we were away is in the table."""
        await self._apply_newest()

    async def _follow(self) -> None:
        while True:
            await self._told.wait()
            self._told.clear()  # several announcements while busy: one read of the newest
            try:
                await self._apply_newest()
            except StoreError as exc:  # the fallback covers us; the next signal retries
                log.warning("tenant_sweep_read_failed", error=str(exc)[:300])

    async def _apply_newest(self) -> None:
        sweep = await self._store.latest_sweep(after=self._applied)
        if sweep is None or self._roles.holds_role(TENANT_READER):
            return  # nothing new, or our own (already applied when it was made)
        async with self._apply_lock:
            if sweep.sweep_id <= self._applied:
                return
            self._applied = sweep.sweep_id
            if not self._fresh(sweep):
                log.info("tenant_sweep_stale", sweep_id=sweep.sweep_id, reader=sweep.reader)
                return
            self._fresh_at = self._mono()
            self.sweeps_applied += 1
            by_room = {room: [job_from_json(j) for j in js] for room, js in sweep.jobs.items()}
            await self._rooms.apply_listing(by_room, jobs_seen=sweep.jobs_seen)
            log.info("tenant_sweep_applied", sweep_id=sweep.sweep_id, reader=sweep.reader)

    def _fresh(self, sweep: TenantSweep) -> bool:
        """Listed within the last ``poll_interval_s`` (wall clocks agree, as leases need)."""
        age = self._clock.now() - sweep.taken_at
        return age <= timedelta(seconds=self._settings().recovery.poll_interval_s)
