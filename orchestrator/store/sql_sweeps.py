"""The tenant reader's sweeps, in SQL (the ``SweepStore`` role).

One row per sweep, the whole listing as one JSON value: the reader writes once per period and
every owner reads the newest row once per period, which at 10,000 rooms is far cheaper for
PostgreSQL than a row per room and sweep. The write is fenced by the reader role's lease (a
reader that lost the role while paused cannot publish a stale listing) and, on PostgreSQL, the
owners are told by a ``NOTIFY`` in the same transaction (sent on commit, dropped on rollback;
the channel is named by the caller with ``store.notify.channel_name``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text

from orchestrator.store.base import TenantSweep
from orchestrator.store.sql_core import SqlCore
from orchestrator.store.sql_schema import SWEEPS_KEPT, tenant_sweeps

__all__ = ["SqlSweeps"]


class SqlSweeps(SqlCore):
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
        value = {room: [dict(j) for j in js] for room, js in jobs.items()}
        async with self._write("put_sweep") as conn:
            await self._check_fence(conn, lease_key, fence)
            result = await conn.execute(
                tenant_sweeps.insert().values(
                    reader=reader, fence=fence, taken_at=taken_at, jobs_seen=jobs_seen, jobs=value
                )
            )
            key = result.inserted_primary_key
            assert key is not None  # an INSERT of one row always has one
            sweep_id = int(key[0])
            await conn.execute(
                delete(tenant_sweeps).where(tenant_sweeps.c.sweep_id <= sweep_id - SWEEPS_KEPT)
            )
            if notify_channel is not None and not self._is_sqlite:
                await conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": notify_channel, "payload": str(sweep_id)},
                )
        return sweep_id

    async def latest_sweep(self, *, after: int = 0) -> TenantSweep | None:
        stmt = (
            select(tenant_sweeps)
            .where(tenant_sweeps.c.sweep_id > after)
            .order_by(tenant_sweeps.c.sweep_id.desc())
            .limit(1)
        )
        async with self._read("latest_sweep") as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        return TenantSweep(
            sweep_id=int(row.sweep_id),
            reader=row.reader,
            taken_at=row.taken_at,
            jobs_seen=int(row.jobs_seen),
            jobs=row.jobs,
        )
