"""Schedule overrides, alerts and SLA accounting, in SQL (the ``OverrideStore``,
``AlertStore`` and ``SlaStore`` roles)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import case, select, update

from orchestrator.bounds import cap_text
from orchestrator.store.base import SlaRow
from orchestrator.store.sql_core import SqlCore
from orchestrator.store.sql_schema import alerts, schedule_overrides, sla_daily

__all__ = ["SqlRecords"]


class SqlRecords(SqlCore):
    """Per-room records that are upserted whole or accumulated."""

    # --- schedule overrides -------------------------------------------------------------

    async def get_overrides(self, room_id: str) -> Mapping[str, Any]:
        stmt = select(schedule_overrides.c.overrides).where(schedule_overrides.c.room_id == room_id)
        async with self._read("get_overrides") as conn:
            value: Mapping[str, Any] | None = (await conn.execute(stmt)).scalar()
            return value if value is not None else {}

    async def all_overrides(self) -> dict[str, Mapping[str, Any]]:
        async with self._read("all_overrides") as conn:
            rows = await conn.execute(
                select(schedule_overrides.c.room_id, schedule_overrides.c.overrides)
            )
            return {r.room_id: r.overrides for r in rows if r.overrides is not None}

    async def put_overrides(self, room_id: str, overrides: Mapping[str, Any]) -> None:
        stmt = self._insert(schedule_overrides).values(
            room_id=room_id, overrides=dict(overrides), updated_at=self._clock()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[schedule_overrides.c.room_id],
            set_={"overrides": stmt.excluded.overrides, "updated_at": stmt.excluded.updated_at},
        )
        async with self._write("put_overrides") as conn:
            await conn.execute(stmt)

    # --- alerts -------------------------------------------------------------------------

    async def set_alert(self, room_id: str, kind: str, message: str, at: datetime) -> None:
        """Raise (or re-raise) an alert; an alert already active keeps its original time."""
        stmt = self._insert(alerts).values(
            room_id=room_id,
            kind=kind,
            message=cap_text(message, self._max_text),
            raised_at=at,
            cleared_at=None,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[alerts.c.room_id, alerts.c.kind],
            set_={
                "message": stmt.excluded.message,
                "raised_at": case(
                    (alerts.c.cleared_at.is_(None), alerts.c.raised_at),
                    else_=stmt.excluded.raised_at,
                ),
                "cleared_at": None,
            },
        )
        async with self._write("set_alert") as conn:
            await conn.execute(stmt)

    async def clear_alert(self, room_id: str, kind: str, at: datetime) -> None:
        stmt = (
            update(alerts)
            .where(
                alerts.c.room_id == room_id, alerts.c.kind == kind, alerts.c.cleared_at.is_(None)
            )
            .values(cleared_at=at)
        )
        async with self._write("clear_alert") as conn:
            await conn.execute(stmt)

    # --- SLA ----------------------------------------------------------------------------

    async def add_sla_rows(self, rows: Sequence[SlaRow]) -> None:
        if not rows:
            return
        keys = {(r.room_id, r.day) for r in rows}
        if len(keys) != len(rows):
            # one multi-row upsert may not touch a row twice (PostgreSQL refuses)
            raise ValueError("add_sla_rows: at most one row per room and day")
        async with self._write("add_sla_rows") as conn:
            await conn.execute(self._sla_upsert(), [_sla_params(r) for r in rows])

    def _sla_upsert(self) -> Any:
        if self._sla_stmt is None:
            stmt = self._insert(sla_daily)
            ex = stmt.excluded
            c = sla_daily.c
            self._sla_stmt = stmt.on_conflict_do_update(
                index_elements=[c.room_id, c.day],
                set_={
                    "scheduled_s": c.scheduled_s + ex.scheduled_s,
                    "live_s": c.live_s + ex.live_s,
                    "drops": c.drops + ex.drops,
                    "recoveries": c.recoveries + ex.recoveries,
                    "recovery_s_total": c.recovery_s_total + ex.recovery_s_total,
                    "recovery_s_max": case(
                        (ex.recovery_s_max > c.recovery_s_max, ex.recovery_s_max),
                        else_=c.recovery_s_max,
                    ),
                },
            )
        return self._sla_stmt

    async def sla(self, since: date, room_id: str | None = None) -> list[SlaRow]:
        stmt = select(sla_daily).where(sla_daily.c.day >= since)
        if room_id is not None:
            stmt = stmt.where(sla_daily.c.room_id == room_id)
        stmt = stmt.order_by(sla_daily.c.day, sla_daily.c.room_id)
        async with self._read("sla") as conn:
            return [
                SlaRow(
                    room_id=r.room_id,
                    day=r.day,
                    scheduled_s=r.scheduled_s,
                    live_s=r.live_s,
                    drops=r.drops,
                    recoveries=r.recoveries,
                    recovery_s_total=r.recovery_s_total,
                    recovery_s_max=r.recovery_s_max,
                )
                for r in await conn.execute(stmt)
            ]


def _sla_params(r: SlaRow) -> dict[str, Any]:
    return {
        "room_id": r.room_id, "day": r.day, "scheduled_s": r.scheduled_s, "live_s": r.live_s,
        "drops": r.drops, "recoveries": r.recoveries, "recovery_s_total": r.recovery_s_total,
        "recovery_s_max": r.recovery_s_max,
    }  # fmt: skip
