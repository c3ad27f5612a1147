"""Rooms' state, their audit log and start intents, in SQL (the ``RoomStore``,
``TransitionStore`` and ``IntentStore`` roles)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from orchestrator.bounds import cap_json, cap_text
from orchestrator.store.base import FencedOut, RoomWrite, StartIntent, StoreError, TransitionRecord
from orchestrator.store.sql_core import SqlCore
from orchestrator.store.sql_schema import rooms, start_intents, transitions

__all__ = ["SqlRooms"]


class SqlRooms(SqlCore):
    """Room state with its transition in one transaction; fenced writes (see ``sql_core``)."""

    # --- rooms --------------------------------------------------------------------------

    async def load_rooms(self) -> dict[str, Mapping[str, Any]]:
        async with self._read("load_rooms") as conn:
            result = await conn.execute(select(rooms.c.room_id, rooms.c.state))
            return {row.room_id: row.state for row in result}

    async def save_room(
        self,
        room_id: str,
        state: Mapping[str, Any],
        *,
        fence: int | None = None,
        transition: TransitionRecord | None = None,
    ) -> None:
        # state and its audit row in one transaction: the one-room case of save_rooms
        [fenced] = await self.save_rooms([RoomWrite(room_id, state, fence, transition)])
        if fenced is not None:
            raise fenced

    def _room_upsert(self) -> Any:
        # Built once, executed with parameters: constructing the upsert with .values() took
        # ~half of save_room's CPU (every room saves on each poll observation).
        if self._save_room_stmt is None:
            upsert = self._insert(rooms)
            self._save_room_stmt = upsert.on_conflict_do_update(
                index_elements=[rooms.c.room_id],
                set_={
                    "state": upsert.excluded.state,
                    "updated_at": upsert.excluded.updated_at,
                    "fence": upsert.excluded.fence,
                },
            )
        return self._save_room_stmt

    async def save_rooms(self, writes: Sequence[RoomWrite]) -> list[FencedOut | None]:
        if not writes:
            return []
        return await self._retry_conflicts("save_rooms", lambda: self._save_rooms_once(writes))

    async def _save_rooms_once(self, writes: Sequence[RoomWrite]) -> list[FencedOut | None]:
        results: list[FencedOut | None] = []
        now = self._clock()
        rows: dict[str, dict[str, Any]] = {}  # one row per room: the last write wins
        audit: list[dict[str, Any]] = []
        async with self._write("save_rooms") as conn:
            # Every fenced room's lease row in one statement, locked in room order (not in the
            # writes' arrival order), then each write judged against it.
            fences: dict[str, int] = {}
            for w in writes:
                if w.fence is not None:
                    fences.setdefault(w.room_id, w.fence)
            stale = await self._check_fences(conn, fences)
            for w in writes:
                if w.fence is not None and fences[w.room_id] != w.fence:
                    # the same room twice with different fences in one batch: judge it alone
                    try:
                        await self._check_fence(conn, w.room_id, w.fence)
                    except FencedOut as exc:
                        results.append(exc)
                        continue
                elif w.room_id in stale and w.fence is not None:
                    results.append(stale[w.room_id])
                    continue
                results.append(None)
                rows.pop(w.room_id, None)
                rows[w.room_id] = {
                    "room_id": w.room_id, "state": dict(w.state), "updated_at": now,
                    "fence": w.fence,
                }  # fmt: skip
                if w.transition is not None:
                    audit.append(self._transition_row(w.transition, w.fence))
            if rows:
                # room order, so two batches touching the same rooms lock them in one order
                await conn.execute(self._room_upsert(), [rows[r] for r in sorted(rows)])
            if audit:
                await conn.execute(transitions.insert(), audit)
        return results

    async def delete_room(self, room_id: str) -> None:
        async with self._write("delete_room") as conn:
            await conn.execute(delete(rooms).where(rooms.c.room_id == room_id))

    # --- transitions --------------------------------------------------------------------

    def _transition_row(self, rec: TransitionRecord, fence: int | None) -> dict[str, Any]:
        # the cause and detail can carry cloud error text: bounded like any outside text
        return {
            "room_id": rec.room_id, "at": rec.at, "from_state": rec.from_state[:32],
            "to_state": rec.to_state[:32], "event": rec.event[:64],
            "cause": cap_text(rec.cause, self._max_text),
            "detail": cap_json(dict(rec.detail), self._max_text), "fence": fence,
        }  # fmt: skip

    async def transitions(
        self, room_id: str | None = None, *, since: datetime | None = None, limit: int = 100
    ) -> list[TransitionRecord]:
        """The latest ``limit`` transitions (at or after ``since``), returned oldest first."""
        stmt = select(transitions).order_by(transitions.c.at.desc(), transitions.c.id.desc())
        if room_id is not None:
            stmt = stmt.where(transitions.c.room_id == room_id)
        if since is not None:
            stmt = stmt.where(transitions.c.at >= since)
        async with self._read("transitions") as conn:
            result = await conn.execute(stmt.limit(limit))
            rows = list(result)
        return [
            TransitionRecord(
                room_id=r.room_id,
                at=r.at,
                from_state=r.from_state,
                to_state=r.to_state,
                event=r.event,
                cause=r.cause,
                detail=r.detail,
            )
            for r in reversed(rows)
        ]

    # --- start intents ------------------------------------------------------------------

    async def put_start_intent(self, intent: StartIntent, *, fence: int | None = None) -> bool:
        stmt = (
            self._insert(start_intents)
            .values(
                room_id=intent.room_id,
                window_key=intent.window_key,
                attempt=intent.attempt,
                created_at=intent.created_at,
                updated_at=intent.created_at,
                job_id=intent.job_id,
                outcome=intent.outcome,
                fence=fence,
            )
            .on_conflict_do_nothing()
            .returning(start_intents.c.attempt)
        )
        async with self._write("put_start_intent") as conn:
            await self._check_fence(conn, intent.room_id, fence)
            return (await conn.execute(stmt)).first() is not None

    async def resolve_start_intent(
        self, room_id: str, window_key: str, attempt: int, *, outcome: str, job_id: str | None
    ) -> None:
        """Set the outcome; ``job_id=None`` keeps a job id already recorded."""
        values: dict[str, Any] = {"outcome": outcome, "updated_at": self._clock()}
        if job_id is not None:
            values["job_id"] = job_id
        stmt = (
            update(start_intents)
            .where(
                start_intents.c.room_id == room_id,
                start_intents.c.window_key == window_key,
                start_intents.c.attempt == attempt,
            )
            .values(**values)
        )
        async with self._write("resolve_start_intent") as conn:
            if (await conn.execute(stmt)).rowcount != 1:
                raise StoreError(
                    f"no start intent for room {room_id} window {window_key} attempt {attempt}"
                )
