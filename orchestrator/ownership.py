"""Room ownership between several daemons sharing one PostgreSQL: leases, fences, rebalancing.

PostgreSQL is the only arbiter. Each instance runs one :class:`OwnershipManager` loop that,
every ``ttl/3`` (jittered downwards, never later), renews and takes leases in one
``acquire_leases`` batch for every configured room plus its own membership key
(:func:`~orchestrator.store.leases.member_key`). What it holds afterwards is what it works on:

* a room it now holds and did not before is *gained* → ``on_gained({room: fence})``
  (the supervisor loads the room's last state, reconciles with list-and-adopt, never a blind start);
* a room it held and no longer holds, or whose fence moved, is *lost* → ``on_lost([room])``
  (stand down without stopping the job: the other instance adopts it).

Why a safety margin: our lease may expire while we are paused (GC, SIGSTOP, a slow PostgreSQL).
:meth:`is_owned` turns False ``margin`` (default ``ttl/3``) *before* ``expires_at``, so this
instance stops acting before anyone else can take the room. A write that slips past anyway
carries the lease's fence and the store refuses it (``FencedOut``). Clocks of the instances
must agree to well within the margin (NTP).

Why a fair share: with ``n`` rooms and ``k`` live instances, nobody takes more than
``ceil(n/k)`` rooms (or ``max_rooms`` if lower). When a newcomer appears, instances over the
share release their excess (``plan_balance``): stand down first, then release the lease, and
the newcomer adopts the running jobs. Leases are acquired with the share computed on the
*previous* tick, so after a PostgreSQL outage an instance does not grab rooms whose owners have
simply not renewed yet.

Why some ticks come early (``run``): a dead instance's rooms should be owned again within
``ttl`` and a few seconds, not ``ttl`` plus two tick periods. The loop therefore also wakes just
after the earliest expiry of another instance's lease it has seen (a live instance renews long
before: no extra tick in steady state), and one second after a tick that saw free rooms while
this instance is under its share (released for it, or expired). That second tick is the
"previous tick" of the rule above, one second later instead of ``ttl/3``.

Why a settle time at start (``join_settle_s``): instances started together would otherwise
see only those that announced before them; the first takes every room and then hands most of
them back. An instance announces itself, waits ``join_settle_s``, then reads who is there.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from orchestrator.clock import Clock
from orchestrator.store.base import Lease, LeaseStore, StoreError
from orchestrator.store.leases import (
    ROLE_PREFIX,
    fair_share,
    is_member_key,
    live_instances,
    member_key,
    plan_balance,
)

__all__ = ["ROLE_PREFIX", "OwnershipManager", "RoomLease", "role_key"]

log = structlog.get_logger(__name__)

_NOBODY = "~nobody"  # placeholder owner of unassigned rooms for plan_balance (never live)


def role_key(role: str) -> str:
    return ROLE_PREFIX + role


GainedCallback = Callable[[Mapping[str, int]], Awaitable[None]]
RoleCallback = Callable[[str, bool], Awaitable[None]]
ChangeCallback = Callable[["OwnershipManager"], None]
LostCallback = Callable[[Sequence[str], str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RoomLease:
    """A room this instance holds: the fence every write for the room must carry."""

    room_id: str
    fence: int
    expires_at: datetime


async def _nothing_gained(rooms: Mapping[str, int]) -> None:
    return None


async def _nothing_lost(rooms: Sequence[str], cause: str) -> None:
    return None


async def _no_role_change(role: str, held: bool) -> None:
    return None


def _no_change(manager: OwnershipManager) -> None:
    return None


class OwnershipManager:
    """Keeps this instance's leases and tells the supervisor which rooms to work on.

    ``on_lost(rooms, cause)`` receives ``cause`` ``"lease:lost"`` (another instance holds it now),
    ``"lease:expiring"`` (we could not renew in time) or ``"lease:rebalance"`` (we give it up
    for a newcomer; the lease is released right after the callback returns, so the callback
    must have stopped acting on the room by then).

    ``roles`` are fleet-wide duties held by one instance at a time (the tenant reader): each
    is a lease of its own, taken when free and renewed like a room's, with the same safety
    margin, so two instances never both think they hold it (clocks within the margin).
    ``on_role(role, held)`` is told when this instance takes or loses one.

    ``on_change(manager)`` (synchronous) is called whenever what this instance holds may have
    changed: after gains and losses are settled, after the roles, before rooms given away for
    balance are released, and at the end of every tick (a failed one too). The shared API
    budget is recomputed there (:meth:`budget_view`).
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        owner: str,
        room_ids: Callable[[], Sequence[str]],
        ttl_s: float,
        max_rooms: int | None,
        clock: Clock,
        rng: random.Random | None = None,
        safety_margin_s: float | None = None,
        on_gained: GainedCallback = _nothing_gained,
        on_lost: LostCallback = _nothing_lost,
        roles: Sequence[str] = (),
        on_role: RoleCallback = _no_role_change,
        on_change: ChangeCallback = _no_change,
        join_settle_s: float = 0.0,
        soon_s: float = 1.0,
    ) -> None:
        if not owner:
            raise ValueError("owner must be a non-empty string")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.owner = owner
        self._store = store
        self._room_ids = room_ids
        self._ttl_s = ttl_s
        self._max_rooms = max_rooms
        self._clock = clock
        self._rng = rng or random.Random()
        self._margin = timedelta(seconds=ttl_s / 3 if safety_margin_s is None else safety_margin_s)
        self.on_gained = on_gained
        self.on_lost = on_lost
        self._held: dict[str, RoomLease] = {}  # what the store said on the last good tick
        self._reported: dict[str, int] = {}  # rooms handed to on_gained (room → fence)
        self._owners: dict[str, str] = {}  # last known owner of every room (unexpired leases)
        self._share: int | None = None
        self._roles = tuple(roles)
        self.on_role = on_role
        self._role_leases: dict[str, RoomLease] = {}  # role → our lease on it
        self._roles_reported: set[str] = set()
        self.on_change = on_change
        self.live = 0
        """Live instances (membership leases) at the last good read; 0 before the first."""
        self._room_count = 0  # configured rooms at the last tick
        self.ticks = 0
        self.first_tick = asyncio.Event()
        self._tick_started: datetime | None = None  # a tick in progress since (keep_alive)
        self.keep_alives = 0
        self._renewing = asyncio.Lock()  # one lease statement of ours at a time
        self._settle_s = join_settle_s
        self._soon_s = soon_s
        self._announced = False
        self._next_in: float | None = None  # seconds to the next tick, when not the period
        self._wake_at: datetime | None = None  # just after another instance's earliest expiry

    # ------------------------------------------------------------------ views

    def owned(self, now: datetime | None = None) -> list[str]:
        """Rooms this instance works on now (gained and still safely inside the lease)."""
        at = now if now is not None else self._clock.now()
        return sorted(r for r in self._reported if self.is_owned(r, at))

    def fence(self, room_id: str) -> int | None:
        """The fencing token of our lease on ``room_id`` (None when we do not hold it)."""
        lease = self._held.get(room_id)
        return lease.fence if lease is not None else None

    def is_owned(self, room_id: str, now: datetime) -> bool:
        """True while we hold the lease and ``now`` is before ``expires_at - margin``."""
        lease = self._held.get(room_id)
        return lease is not None and now < lease.expires_at - self._margin

    def holds_role(self, role: str, now: datetime | None = None) -> bool:
        """True while we hold ``role``'s lease, ``margin`` before it expires (like a room)."""
        lease = self._role_leases.get(role)
        at = now if now is not None else self._clock.now()
        return lease is not None and at < lease.expires_at - self._margin

    def role_fence(self, role: str) -> int | None:
        lease = self._role_leases.get(role)
        return lease.fence if lease is not None else None

    def budget_view(self, now: datetime | None = None) -> tuple[int, int, int]:
        """``(rooms we count as ours, configured rooms, live instances)`` for the API budget.

        A room counts while its lease is still ours one tick from now (``now + ttl/3``): after
        one failed renewal the share drops at once, well before the lease can expire and
        another instance can count the room too (shares must never add up to more than 1).
        """
        at = (now if now is not None else self._clock.now()) + timedelta(seconds=self._ttl_s / 3)
        mine = sum(1 for r in self._held if self.is_owned(r, at))
        return mine, max(self._room_count, mine), self.live

    def owner_of(self, room_id: str) -> str | None:
        """Who held ``room_id`` at the last tick (None: nobody / unknown)."""
        return self._owners.get(room_id)

    def forget(self, room_id: str) -> None:
        """The supervisor dropped the room on its own (fenced out, lease expiring).

        The next tick decides again: still held with the same fence → gained once more
        (reconcile), otherwise it stays with whoever holds it.
        """
        self._reported.pop(room_id, None)

    def dropped(self, room_id: str, reason: str) -> None:
        """``RoomSupervisor(on_dropped=...)`` hook: same as :meth:`forget` (reason is logged)."""
        log.info("room_dropped_by_supervisor", owner=self.owner, room_id=room_id, reason=reason)
        self.forget(room_id)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Tick every ``ttl/3`` times 0.8 to 1.0 until cancelled (sooner when :meth:`next_delay`
        says so); errors are logged, never fatal. Beside it, :meth:`keep_alive` renews what
        we hold while a tick is stuck in a long hand-over."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.keep_alive(), name="lease-keep-alive")
            while True:
                await self.tick()
                delay = self.next_delay(self._clock.now())
                await self._clock.sleep_until(self._clock.now() + timedelta(seconds=delay))

    async def keep_alive(self) -> None:
        """Renew our leases while a tick has been running for ``ttl/6`` or more.

        A tick waits for ``on_gained``/``on_lost``: taking over or standing down thousands of
        rooms can take longer than the safety margin (the fleet bench at 10,000 rooms: 16 s to
        stand 5,000 rooms down), and leases that are not renewed meanwhile expire, are taken by
        another instance, and the rooms churn back and forth. This renews exactly what the last
        good tick said we hold (same fences) and takes nothing new.
        """
        step = self._ttl_s / 6
        while True:
            await self._clock.sleep_until(self._clock.now() + timedelta(seconds=step))
            started = self._tick_started
            if started is None or (self._clock.now() - started).total_seconds() < step:
                continue
            await self.renew_held()

    async def renew_held(self) -> None:
        """Extend the leases we hold (rooms, membership, roles) without taking any."""
        now = self._clock.now()
        keys = [*sorted(self._held), member_key(self.owner),
                *(role_key(r) for r in sorted(self._role_leases))]  # fmt: skip
        try:
            async with self._renewing:
                held = await self._store.acquire_leases(
                    self.owner, keys, ttl_s=self._ttl_s, now=now, max_rooms=0
                )
        except StoreError as exc:
            log.warning("lease_keep_alive_failed", owner=self.owner, error=str(exc)[:300])
            return
        renewed = 0
        for lease in held:
            mine = self._held.get(lease.room_id)
            if mine is not None and mine.fence == lease.fence:
                self._held[lease.room_id] = RoomLease(lease.room_id, lease.fence, lease.expires_at)
                renewed += 1
            elif lease.room_id.startswith(ROLE_PREFIX):
                role = lease.room_id[len(ROLE_PREFIX) :]
                had = self._role_leases.get(role)
                if had is not None and had.fence == lease.fence:
                    self._role_leases[role] = RoomLease(
                        lease.room_id, lease.fence, lease.expires_at
                    )
        self.keep_alives += 1
        log.info("lease_keep_alive", owner=self.owner, renewed=renewed)

    def next_delay(self, now: datetime) -> float:
        """Seconds to the next tick: the jittered period, or sooner (see the module doc)."""
        delay = self._ttl_s / 3 * (0.8 + 0.2 * self._rng.random())
        if self._next_in is not None:
            delay = min(delay, self._next_in)
        if self._wake_at is not None and self._wake_at > now:
            delay = min(delay, (self._wake_at - now).total_seconds())
        return max(0.0, delay)

    async def tick(self) -> None:
        """One round: renew/take, tell gains and losses, rebalance, learn the next share."""
        self._tick_started = self._clock.now()
        try:
            await self._tick()
        finally:
            self._tick_started = None

    async def _tick(self) -> None:
        now = self._clock.now()
        rooms = sorted({r for r in self._room_ids() if not is_member_key(r)})
        self._room_count = len(rooms)
        me = member_key(self.owner)
        self._next_in = None
        try:
            if self._share is None:
                # announce ourselves before taking rooms, so simultaneous starters see each other
                await self._store.acquire_leases(self.owner, [me], ttl_s=self._ttl_s, now=now)
                if not self._announced and self._settle_s > 0:
                    self._announced = True
                    self._next_in = self._settle_s
                    log.info("instance_announced", owner=self.owner, settle_s=self._settle_s)
                    return
                first = await self._observe(rooms, now)
                live = set(live_instances(first, now)) | {self.owner}
                self.live = len(live)
                self._share = self._cap(fair_share(len(rooms), len(live)))
            async with self._renewing:
                held = await self._store.acquire_leases(
                    self.owner, [*rooms, me], ttl_s=self._ttl_s, now=now, max_rooms=self._share
                )
        except StoreError as exc:
            log.warning("lease_renew_failed", owner=self.owner, error=str(exc)[:300])
            await self._expire(self._clock.now())
            await self._settle_roles(self._clock.now())
            self._changed()
            return
        self._held = {
            lease.room_id: RoomLease(lease.room_id, lease.fence, lease.expires_at)
            for lease in held
            if not is_member_key(lease.room_id)
        }
        for room in self._held:
            self._owners[room] = self.owner
        await self._settle(self._clock.now())
        self._changed()
        # the hand-over above may have taken seconds: what follows judges expiry (ours and
        # others') at the time it runs, not at the tick's start
        await self._renew_roles(self._clock.now())
        self._changed()
        now = self._clock.now()
        try:
            leases = await self._observe(rooms, now)
        except StoreError as exc:
            log.warning("lease_read_failed", owner=self.owner, error=str(exc)[:300])
        else:
            await self._rebalance(rooms, leases, now)
            self._plan_next(rooms, leases, self._clock.now())
        self._changed()
        self.ticks += 1
        self.first_tick.set()

    async def release_all(self) -> None:
        """Graceful stop: hand every room over now instead of after the TTL (jobs keep running).

        Call only once nothing acts on the rooms any more (supervisor stopped).
        """
        rooms = sorted(self._held)
        roles = [role_key(r) for r in sorted(self._role_leases)]
        self._held.clear()
        self._reported.clear()
        self._role_leases.clear()
        self._roles_reported.clear()
        await self._store.release_leases(self.owner, [*rooms, *roles, member_key(self.owner)])

    # ------------------------------------------------------------------ internals

    def _plan_next(self, rooms: Sequence[str], leases: Sequence[Lease], now: datetime) -> None:
        """Tick early: free rooms while under our share; just after another's lease expires."""
        share = self._share if self._share is not None else len(rooms)
        if len(self._held) < share and any(r not in self._owners for r in rooms):
            self._next_in = self._soon_s
        others = [lease.expires_at for lease in leases
                  if lease.owner != self.owner and lease.expires_at > now]  # fmt: skip
        self._wake_at = min(others) + timedelta(seconds=0.25) if others else None

    def _cap(self, share: int) -> int:
        return share if self._max_rooms is None else min(share, self._max_rooms)

    async def _observe(self, rooms: Sequence[str], now: datetime) -> list[Lease]:
        """Read the lease table; remember owners; return the leases that matter for balance."""
        configured = set(rooms)
        leases = [
            lease
            for lease in await self._store.leases()
            if lease.room_id in configured or is_member_key(lease.room_id)
        ]
        self._owners = {
            lease.room_id: lease.owner
            for lease in leases
            if not is_member_key(lease.room_id) and lease.expires_at > now
        }
        return leases

    async def _settle(self, now: datetime) -> None:
        """Turn the difference between held and reported into on_lost/on_gained calls."""
        lost = [
            r
            for r, fence in self._reported.items()
            if r not in self._held or self._held[r].fence != fence
        ]
        if lost:
            for r in lost:
                del self._reported[r]
            log.warning("rooms_lease_lost", owner=self.owner, rooms=sorted(lost))
            await self._call_lost(sorted(lost), "lease:lost")
        expiring = [r for r in self._reported if not self.is_owned(r, now)]
        if expiring:
            await self._drop_expiring(expiring)
        gained = {
            r: lease.fence
            for r, lease in sorted(self._held.items())
            if r not in self._reported and self.is_owned(r, now)
        }
        if gained:
            self._reported.update(gained)
            log.info("rooms_lease_gained", owner=self.owner, rooms=sorted(gained))
            try:
                await self.on_gained(gained)
            except Exception as exc:  # the supervisor failed to take them: retry next tick
                log.error("rooms_gain_failed", owner=self.owner, error=str(exc)[:300])
                for r in gained:
                    self._reported.pop(r, None)

    async def _expire(self, now: datetime) -> None:
        """No renewal this tick: stop working on rooms whose lease is about to run out."""
        expiring = [r for r in self._reported if not self.is_owned(r, now)]
        if expiring:
            await self._drop_expiring(expiring)

    async def _drop_expiring(self, rooms: Sequence[str]) -> None:
        for r in rooms:
            self._reported.pop(r, None)
        log.warning("rooms_lease_expiring", owner=self.owner, rooms=sorted(rooms))
        await self._call_lost(sorted(rooms), "lease:expiring")

    async def _rebalance(
        self, rooms: Sequence[str], leases: Sequence[Lease], now: datetime
    ) -> None:
        live = sorted(set(live_instances(leases, now)) | {self.owner})
        self.live = len(live)
        self._share = self._cap(fair_share(len(rooms), len(live)))
        # plan_balance counts assigned leases only; a configured room nobody holds (released,
        # never taken) still needs an owner, so it enters as a lease of nobody.
        listed = {lease.room_id for lease in leases}
        free = [Lease(r, _NOBODY, 0, now) for r in rooms if r not in listed]
        excess = [
            r
            for r in plan_balance([*leases, *free], live, now).get(self.owner, [])
            if r in self._held
        ]
        if not excess:
            return
        log.info("rooms_rebalance", owner=self.owner, release=excess, instances=len(live))
        reported = [r for r in excess if r in self._reported]
        for r in excess:
            self._reported.pop(r, None)
            self._held.pop(r, None)
        self._changed()  # our share shrinks before the newcomer can take these rooms
        if reported:
            await self._call_lost(reported, "lease:rebalance")
        try:
            await self._store.release_leases(self.owner, excess)
        except StoreError as exc:  # still ours then: the next tick renews it and gains it again
            log.warning("lease_release_failed", owner=self.owner, error=str(exc)[:300])

    async def _renew_roles(self, now: datetime) -> None:
        """Renew or take the role leases (a batch of their own: roles are not rooms)."""
        if not self._roles:
            return
        try:
            async with self._renewing:
                held = await self._store.acquire_leases(
                    self.owner, [role_key(r) for r in self._roles], ttl_s=self._ttl_s, now=now
                )
        except StoreError as exc:  # not renewed: the margin ends them in time
            log.warning("role_renew_failed", owner=self.owner, error=str(exc)[:300])
        else:
            self._role_leases = {
                lease.room_id[len(ROLE_PREFIX) :]: RoomLease(
                    lease.room_id, lease.fence, lease.expires_at
                )
                for lease in held
            }
        await self._settle_roles(self._clock.now())

    async def _settle_roles(self, now: datetime) -> None:
        for role in self._roles:
            holds = self.holds_role(role, now)
            if holds == (role in self._roles_reported):
                continue
            if holds:
                self._roles_reported.add(role)
            else:
                self._roles_reported.discard(role)
            log.info("role_changed", owner=self.owner, role=role, held=holds)
            try:
                await self.on_role(role, holds)
            except Exception as exc:  # a failing role hook must not stop the leases
                log.error("role_hook_failed", owner=self.owner, role=role, error=str(exc)[:300])

    def _changed(self) -> None:
        try:
            self.on_change(self)
        except Exception as exc:  # a failing budget hook must not stop the leases
            log.error("ownership_change_hook_failed", owner=self.owner, error=str(exc)[:300])

    async def _call_lost(self, rooms: Sequence[str], cause: str) -> None:
        try:
            await self.on_lost(rooms, cause)
        except Exception as exc:  # standing down must not kill the ownership loop
            log.error(
                "rooms_stand_down_failed", owner=self.owner, cause=cause, error=str(exc)[:300]
            )
