"""Reading what a store wrote that production never reads back (start intents, alerts).

The Store protocol has no reader for these rows (nothing in the daemon needs one), so tests look
at the rows themselves: SQL tables through the store's engine, or ``MemoryStore.data``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from orchestrator.store import SqlStore, StartIntent, TransitionRecord
from orchestrator.store.memory import MemoryStore
from orchestrator.store.sql_schema import alerts, start_intents, transitions

__all__ = ["active_alerts", "add_transition", "start_intents_of"]


async def start_intents_of(
    store: SqlStore | MemoryStore, room_id: str, *, pending_only: bool = False
) -> list[StartIntent]:
    """A room's start intents, oldest first (created_at, window_key, attempt)."""
    if isinstance(store, MemoryStore):
        found = store.data.start_intents(room_id)
    else:
        t = start_intents.c
        stmt = (
            select(start_intents)
            .where(t.room_id == room_id)
            .order_by(t.created_at, t.window_key, t.attempt)
        )
        async with store.engine.connect() as conn:
            found = [
                StartIntent(r.room_id, r.window_key, r.attempt, r.created_at, r.job_id, r.outcome)
                for r in await conn.execute(stmt)
            ]
    return [i for i in found if not pending_only or i.outcome == "pending"]


async def active_alerts(store: SqlStore | MemoryStore) -> list[tuple[str, str, str, datetime]]:
    """(room_id, kind, message, raised_at) of every uncleared alert, by room and kind."""
    if isinstance(store, MemoryStore):
        return store.data.active_alerts()
    a = alerts.c
    stmt = (
        select(a.room_id, a.kind, a.message, a.raised_at)
        .where(a.cleared_at.is_(None))
        .order_by(a.room_id, a.kind)
    )
    async with store.engine.connect() as conn:
        return [(r.room_id, r.kind, r.message, r.raised_at) for r in await conn.execute(stmt)]


async def add_transition(store: SqlStore, rec: TransitionRecord) -> None:
    """An audit row alone, without touching the room's state (retention tests)."""
    row = {
        "room_id": rec.room_id, "at": rec.at, "from_state": rec.from_state,
        "to_state": rec.to_state, "event": rec.event, "cause": rec.cause,
        "detail": dict(rec.detail), "fence": None,
    }  # fmt: skip
    async with store.engine.begin() as conn:
        await conn.execute(transitions.insert(), row)
