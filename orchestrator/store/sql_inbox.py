"""The callback inbox, MQTT command replies and retention, in SQL (the ``InboxStore``,
``ReplyStore`` and ``RetentionStore`` roles)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, delete, select, text, update

from orchestrator.bounds import cap_json
from orchestrator.store.base import PAYLOAD_FIRST as _PAYLOAD_FIRST
from orchestrator.store.base import InboxItem, PruneCutoffs
from orchestrator.store.sql_core import SqlCore
from orchestrator.store.sql_schema import (
    _INBOX_CHUNK,
    _fit,
    _fit_opt,
    alerts,
    command_replies,
    inbox,
    jobs_seen,
    leases,
    sla_daily,
    start_intents,
    transitions,
)

__all__ = ["SqlInbox"]

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (store.notify.MAX_PAYLOAD_BYTES;
# not imported: the store's parts import no other adapter).
_NOTIFY_MAX_BYTES = 7999

# Rows deleted per prune transaction: a big backlog is pruned in steps, so callbacks and
# room writes queue behind the prune for milliseconds, not for one long transaction.
_PRUNE_CHUNK = 5000


class SqlInbox(SqlCore):
    """Inbox rows are deduplicated by key; payloads and identifiers are bounded on the way in."""

    # --- inbox --------------------------------------------------------------------------

    async def inbox_append(
        self, items: Sequence[InboxItem], *, notify_channel: str | None = None
    ) -> list[bool]:
        """One transaction for the whole batch (group commit): the caller batches, we commit once.

        Duplicates (already stored, or repeated within the batch) are skipped by
        ``ON CONFLICT DO NOTHING``; the returned flags say which items were new. New
        ``for_owner`` items are announced on ``notify_channel`` (PostgreSQL) before the commit,
        so the owner hears of exactly the rows that exist.
        """
        if not items:
            return []
        # Everything here came from a caller: identifiers are made to fit their columns and the
        # payload is capped (2,000 x 30 KB callbacks once made a 248 MB SQLite file).
        rows = [
            {
                "dedupe_key": _fit(it.dedupe_key, 512),
                "room_id": _fit_opt(it.room_id, 128),
                "job_id": _fit_opt(it.job_id, 128),
                "event_type": _fit(it.event_type, 64),
                "payload": cap_json(dict(it.payload), self._max_payload, first=_PAYLOAD_FIRST),
                "received_at": it.received_at,
                "event_time": it.event_time,
                "processed": False,
            }
            for it in items
        ]
        stmt = (
            self._insert(inbox)
            .on_conflict_do_nothing()
            .returning(inbox.c.dedupe_key, inbox.c.id, inbox.c.room_id, inbox.c.job_id)
        )
        inserted: set[str] = set()
        owners = {_fit(it.dedupe_key, 512) for it in items if it.for_owner}
        announce: list[list[Any]] = []
        async with self._write("inbox_append") as conn:
            for start in range(0, len(rows), _INBOX_CHUNK):
                result = await conn.execute(stmt, rows[start : start + _INBOX_CHUNK])
                for r in result:
                    inserted.add(r.dedupe_key)
                    if r.dedupe_key in owners:
                        announce.append([r.id, r.room_id, r.job_id])
            if announce and notify_channel is not None and not self._is_sqlite:
                for payload in _notify_payloads(announce):
                    await conn.execute(
                        text("SELECT pg_notify(:c, :p)").bindparams(c=notify_channel, p=payload)
                    )
        flags: list[bool] = []
        for row in rows:
            new = row["dedupe_key"] in inserted
            inserted.discard(row["dedupe_key"])  # a repeat within the batch is a duplicate
            flags.append(new)
        return flags

    async def inbox_pending(self, limit: int = 1000) -> list[InboxItem]:
        stmt = select(inbox).where(inbox.c.processed.is_(False)).order_by(inbox.c.id).limit(limit)
        async with self._read("inbox_pending") as conn:
            result = await conn.execute(stmt)
            return [_item(r) for r in result]

    async def inbox_pending_for(
        self, room_ids: Sequence[str], limit: int = 1000
    ) -> list[InboxItem]:
        rooms = sorted({_fit(r, 128) for r in room_ids})
        if not rooms:
            return []
        out: list[InboxItem] = []
        async with self._read("inbox_pending_for") as conn:
            for start in range(0, len(rooms), _INBOX_CHUNK):
                stmt = (
                    select(inbox)
                    .where(
                        inbox.c.processed.is_(False),
                        inbox.c.room_id.in_(rooms[start : start + _INBOX_CHUNK]),
                    )
                    .order_by(inbox.c.id)
                    .limit(limit)
                )
                out.extend(_item(r) for r in await conn.execute(stmt))
        out.sort(key=lambda it: it.id or 0)
        return out[:limit]

    async def inbox_claim(
        self, ids: Sequence[int], *, owner: str | None, now: datetime
    ) -> list[InboxItem]:
        """One ``UPDATE ... WHERE NOT processed RETURNING``: two claimants of one item (the
        owner's signal and its resync, or an old and a new owner) cannot both get it."""
        if not ids:
            return []
        out: list[InboxItem] = []
        async with self._write("inbox_claim") as conn:
            for start in range(0, len(ids), _INBOX_CHUNK):
                stmt = (
                    update(inbox)
                    .where(
                        inbox.c.id.in_(list(ids[start : start + _INBOX_CHUNK])),
                        inbox.c.processed.is_(False),
                    )
                    .values(processed=True, processed_at=now)
                    .returning(*inbox.c)
                )
                if owner is not None:
                    held = select(leases.c.room_id).where(
                        leases.c.owner == owner, leases.c.expires_at > now
                    )
                    stmt = stmt.where(inbox.c.room_id.in_(held))
                out.extend(_item(r) for r in await conn.execute(stmt))
        out.sort(key=lambda it: it.id or 0)
        return out

    async def inbox_done(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = self._clock()
        async with self._write("inbox_done") as conn:
            for start in range(0, len(ids), _INBOX_CHUNK):
                chunk = list(ids[start : start + _INBOX_CHUNK])
                await conn.execute(
                    update(inbox)
                    .where(inbox.c.id.in_(chunk), inbox.c.processed.is_(False))
                    .values(processed=True, processed_at=now)
                )

    async def inbox_done_keys(self, keys: Sequence[str]) -> None:
        """Like :meth:`inbox_done`, by the unique dedupe key: the live intake marks what it
        just handed to a room without reading pending rows back to learn their ids."""
        if not keys:
            return
        now = self._clock()
        async with self._write("inbox_done_keys") as conn:
            for start in range(0, len(keys), _INBOX_CHUNK):
                chunk = [_fit(k, 512) for k in keys[start : start + _INBOX_CHUNK]]
                await conn.execute(
                    update(inbox)
                    .where(inbox.c.dedupe_key.in_(chunk), inbox.c.processed.is_(False))
                    .values(processed=True, processed_at=now)
                )

    async def prune_older(self, cutoffs: PruneCutoffs) -> dict[str, int]:
        c = cutoffs
        counts: dict[str, int] = {}
        if c.inbox is not None:
            cond = inbox.c.received_at < c.inbox
            counts["inbox"] = await self._prune_by_id("inbox", inbox, inbox.c.id, cond)
        if c.transitions is not None:
            counts["transitions"] = await self._prune_by_id(
                "transitions", transitions, transitions.c.id, transitions.c.at < c.transitions
            )
        plain: list[tuple[str, Table, Any]] = []
        if c.replies is not None:
            plain.append(("replies", command_replies, command_replies.c.at < c.replies))
        if c.jobs is not None:
            plain.append(("jobs", jobs_seen, jobs_seen.c.last_seen < c.jobs))
        if c.start_intents is not None:
            resolved = start_intents.c.outcome != "pending"
            old = start_intents.c.updated_at < c.start_intents
            plain.append(("start_intents", start_intents, resolved & old))
        if c.alerts is not None:
            cleared = alerts.c.cleared_at.is_not(None) & (alerts.c.cleared_at < c.alerts)
            plain.append(("alerts", alerts, cleared))
        if c.sla is not None:
            plain.append(("sla", sla_daily, sla_daily.c.day < c.sla))
        for name, table, cond in plain:
            async with self._write(f"prune_{name}") as conn:
                counts[name] = (await conn.execute(delete(table).where(cond))).rowcount
        return counts

    async def _prune_by_id(self, name: str, table: Table, id_col: Any, cond: Any) -> int:
        """Delete in chunks of ``_PRUNE_CHUNK`` rows, one transaction each (see there why)."""
        total = 0
        while True:
            chunk = select(id_col).where(cond).order_by(id_col).limit(_PRUNE_CHUNK)
            async with self._write(f"prune_{name}") as conn:
                ids = list((await conn.execute(chunk)).scalars())
                if ids:
                    await conn.execute(delete(table).where(id_col.in_(ids)))
            total += len(ids)
            if len(ids) < _PRUNE_CHUNK:
                return total

    # --- command replies ----------------------------------------------------------------

    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None:
        async with self._read("get_reply") as conn:
            stmt = select(command_replies.c.reply).where(
                command_replies.c.id == _fit(command_id, 256)
            )
            reply: Mapping[str, Any] | None = (await conn.execute(stmt)).scalar()
            return reply

    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool:
        stmt = (
            self._insert(command_replies)
            .values(id=_fit(command_id, 256), reply=cap_json(dict(reply), self._max_text), at=at)
            .on_conflict_do_nothing()
            .returning(command_replies.c.id)
        )
        async with self._write("put_reply") as conn:
            return (await conn.execute(stmt)).first() is not None


def _item(r: Row[Any]) -> InboxItem:
    return InboxItem(
        dedupe_key=r.dedupe_key,
        room_id=r.room_id,
        job_id=r.job_id,
        event_type=r.event_type,
        payload=r.payload,
        received_at=r.received_at,
        event_time=r.event_time,
        id=r.id,
    )


def _notify_payloads(entries: Sequence[list[Any]]) -> list[str]:
    """``[[id, room, job], ...]`` split into payloads PostgreSQL accepts (ids, never data)."""
    out: list[str] = []
    batch: list[list[Any]] = []
    size = 2
    for e in entries:
        n = len(json.dumps(e, separators=(",", ":")).encode()) + 1
        if batch and size + n > _NOTIFY_MAX_BYTES:
            out.append(json.dumps(batch, separators=(",", ":")))
            batch, size = [], 2
        batch.append(e)
        size += n
    if batch:
        out.append(json.dumps(batch, separators=(",", ":")))
    return out
