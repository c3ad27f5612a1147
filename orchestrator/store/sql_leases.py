"""Leases between instances, in SQL (the ``LeaseStore`` role); fencing is in ``sql_core``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.store.base import Lease, StoreError
from orchestrator.store.leases import MEMBER_PREFIX, ROLE_PREFIX
from orchestrator.store.sql_core import SqlCore, log
from orchestrator.store.sql_schema import _EPOCH, _INBOX_CHUNK, leases

__all__ = ["SqlLeases"]


class SqlLeases(SqlCore):
    """Taking a free or expired lease increments its fence; releasing keeps the row."""

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
        """Renew ours, then take free/expired ones (fence + 1) up to ``max_rooms``; one transaction.

        Returns the leases ``owner`` holds among ``room_ids`` afterwards, sorted by room id.
        ``max_rooms`` counts every unexpired room lease of ``owner`` (membership and role keys
        excluded).
        Expiry is judged by the caller's ``now``: keep ``ttl_s`` well above clock skew.
        On PostgreSQL takeover candidates are locked ``FOR UPDATE SKIP LOCKED`` (in room order),
        so two instances acquiring at once take disjoint rooms instead of waiting on each other;
        ``FOR UPDATE`` is also what makes a takeover wait for (skip) a room whose fenced write is
        in flight (``FOR KEY SHARE``, see ``sql_core``). Our own rows are locked ``FOR NO KEY
        UPDATE`` in room order before the renewal updates them, which does not conflict with a
        fenced write at all. A deadlock/serialization failure reruns the transaction.
        """
        if not owner:
            raise StoreError("lease owner must be a non-empty string")
        wanted = sorted(set(room_ids))
        if not wanted:
            return []
        return await self._retry_conflicts(
            "acquire_leases",
            lambda: self._acquire_once(owner, wanted, ttl_s=ttl_s, now=now, max_rooms=max_rooms),
        )

    async def _acquire_once(
        self,
        owner: str,
        wanted: list[str],
        *,
        ttl_s: float,
        now: datetime,
        max_rooms: int | None,
    ) -> list[Lease]:
        expires = now + timedelta(seconds=ttl_s)
        async with self._write("acquire_leases") as conn:
            for start in range(0, len(wanted), _INBOX_CHUNK):
                chunk = wanted[start : start + _INBOX_CHUNK]
                await conn.execute(
                    self._insert(leases).on_conflict_do_nothing(),
                    [{"room_id": r, "owner": "", "fence": 0, "expires_at": _EPOCH} for r in chunk],
                )
            # renew ours (an expired lease nobody took is still ours: its fence did not move)
            await self._lock_own(conn, owner, wanted)
            await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.room_id.in_(wanted))
                .values(expires_at=expires)
            )
            capacity: int | None = None
            if max_rooms is not None:
                held = (
                    await conn.execute(
                        select(func.count())
                        .select_from(leases)
                        .where(
                            leases.c.owner == owner,
                            leases.c.expires_at > now,
                            ~leases.c.room_id.startswith(MEMBER_PREFIX, autoescape=True),
                            ~leases.c.room_id.startswith(ROLE_PREFIX, autoescape=True),
                        )
                    )
                ).scalar_one()
                capacity = max(0, max_rooms - held)
            free = or_(leases.c.owner == "", leases.c.expires_at <= now)
            candidates = (
                select(leases.c.room_id)
                .where(leases.c.room_id.in_(wanted), leases.c.owner != owner, free)
                .order_by(leases.c.room_id)
                .with_for_update(skip_locked=True)
            )
            members = [r for r in wanted if r.startswith(MEMBER_PREFIX)]
            take = list(members)  # membership keys never count against max_rooms
            for room in (await conn.execute(candidates)).scalars():
                if room in members:
                    continue
                if capacity is not None and len(take) - len(members) >= capacity:
                    break
                take.append(room)
            taken = 0
            if take:
                taken = (
                    await conn.execute(
                        update(leases)
                        .where(leases.c.room_id.in_(take), leases.c.owner != owner, free)
                        .values(owner=owner, fence=leases.c.fence + 1, expires_at=expires)
                    )
                ).rowcount
            result = await conn.execute(
                select(leases)
                .where(leases.c.owner == owner, leases.c.room_id.in_(wanted))
                .order_by(leases.c.room_id)
            )
            held_now = [_lease(r) for r in result]
        if taken:
            log.info("leases_taken", owner=owner, taken=taken, held=len(held_now))
        return held_now

    async def release_leases(self, owner: str, room_ids: Sequence[str]) -> None:
        """Give rooms up now (the row and its fence stay, so the next holder's fence is higher)."""
        wanted = sorted(set(room_ids))
        if not wanted:
            return

        async def once() -> None:
            async with self._write("release_leases") as conn:
                await self._lock_own(conn, owner, wanted)
                await conn.execute(
                    update(leases)
                    .where(leases.c.owner == owner, leases.c.room_id.in_(wanted))
                    .values(owner="", expires_at=_EPOCH)
                )

        await self._retry_conflicts("release_leases", once)
        log.info("leases_released", owner=owner, rooms=len(wanted))

    async def _lock_own(self, conn: AsyncConnection, owner: str, wanted: list[str]) -> None:
        """Lock ``owner``'s rows among ``wanted`` in room order before a multi-row UPDATE.

        A bare UPDATE locks rows in scan order, which is not room order; ``FOR NO KEY UPDATE``
        is the lock the UPDATE takes anyway (owner/fence/expiry are no key columns), so fenced
        writes (``FOR KEY SHARE``) are not blocked by it.
        """
        if self._is_sqlite:
            return  # BEGIN IMMEDIATE already serialises writers
        for start in range(0, len(wanted), _INBOX_CHUNK):
            chunk = wanted[start : start + _INBOX_CHUNK]
            await conn.execute(
                select(leases.c.room_id)
                .where(leases.c.owner == owner, leases.c.room_id.in_(chunk))
                .order_by(leases.c.room_id)
                .with_for_update(key_share=True)
            )

    async def leases(self) -> list[Lease]:
        """Every lease currently assigned to an owner (expired ones included), by room id."""
        stmt = select(leases).where(leases.c.owner != "").order_by(leases.c.room_id)
        async with self._read("leases") as conn:
            return [_lease(r) for r in await conn.execute(stmt)]


def _lease(row: Any) -> Lease:
    return Lease(room_id=row.room_id, owner=row.owner, fence=row.fence, expires_at=row.expires_at)
