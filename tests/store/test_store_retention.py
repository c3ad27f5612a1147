"""Retention and stored-size caps, on SQLite, PostgreSQL and in memory (``sql_*``: SQL only).

Every table that grows with traffic is pruned by its own cutoff, and nothing a caller sends is
stored whole: 2,000 x 30 KB callbacks once made a 248 MB SQLite file that never shrank.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from orchestrator.bounds import TRUNCATED_KEY
from orchestrator.store import (
    InboxItem,
    PruneCutoffs,
    SlaRow,
    SqlStore,
    StartIntent,
    TransitionRecord,
    sql_inbox,
)
from orchestrator.store import sql as store_sql
from orchestrator.store.sql_schema import jobs_seen
from tests.support.storekit import AnyStore, AnyTarget
from tests.support.storepeek import active_alerts, add_transition, start_intents_of

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def item(key: str, at: datetime, *, payload: dict[str, object] | None = None) -> InboxItem:
    return InboxItem(
        dedupe_key=key,
        room_id="r1",
        job_id="job-1",
        event_type="RTMP_STREAM_STATE_CHANGE",
        payload=payload or {"event_type": "RTMP_STREAM_STATE_CHANGE", "message": {"k": key}},
        received_at=at,
        event_time=at,
    )


async def _count(store: SqlStore, table: str) -> int:
    t = store_sql.metadata.tables[table]
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(t))).scalar_one())


async def test_prune_older_prunes_every_growing_table_by_its_own_cutoff(
    sql_store: SqlStore,
) -> None:
    store = sql_store
    old, new = T0, T0 + 10 * DAY
    await store.inbox_append([item("old-pending", old), item("old-done", old), item("new", new)])
    done = [p.id for p in await store.inbox_pending() if p.dedupe_key == "old-done"]
    await store.inbox_done([i for i in done if i is not None])
    await store.put_reply("c-old", {"status": "ok"}, old)
    await store.put_reply("c-new", {"status": "ok"}, new)
    for at in (old, new):
        await add_transition(store, TransitionRecord("r1", at, "IDLE", "LIVE", "X"))
    # jobs_seen is no longer written (nothing read it), but old databases have rows to prune
    async with store.engine.begin() as conn:
        await conn.execute(jobs_seen.insert(), [
            {"job_id": j, "room_id": "r1", "state": "X", "first_seen": at, "last_seen": at}
            for j, at in (("job-old", old), ("job-new", new))
        ])  # fmt: skip
    await store.put_start_intent(StartIntent("r1", "w-old", 1, old))
    await store.resolve_start_intent("r1", "w-old", 1, outcome="started", job_id="job-old")
    await store.put_start_intent(StartIntent("r1", "w-pending", 1, old))  # never pruned
    await store.set_alert("r1", "cleared-old", "m", old)
    await store.clear_alert("r1", "cleared-old", old)
    await store.set_alert("r1", "active-old", "m", old)  # active: never pruned
    await store.add_sla_rows(
        [SlaRow("r1", d, 60, 60, 0, 0, 0, 0) for d in (date(2025, 3, 1), date(2025, 3, 11))]
    )
    # start intents are stamped with the store's clock on resolve: make "old" really old
    cut = T0 + 5 * DAY
    counts = await store.prune_older(
        PruneCutoffs(
            inbox=cut, replies=cut, transitions=cut, jobs=cut, start_intents=cut + 365 * DAY,
            alerts=cut, sla=date(2025, 3, 5),
        )
    )  # fmt: skip
    assert counts == {
        "inbox": 2, "transitions": 1, "replies": 1, "jobs": 1, "start_intents": 1,
        "alerts": 1, "sla": 1,
    }  # fmt: skip
    assert [p.dedupe_key for p in await store.inbox_pending()] == ["new"]
    assert await store.get_reply("c-old") is None and await store.get_reply("c-new") is not None
    assert [t.at for t in await store.transitions("r1")] == [new]
    async with store.engine.connect() as conn:
        assert list((await conn.execute(select(jobs_seen.c.job_id))).scalars()) == ["job-new"]
    assert [i.window_key for i in await start_intents_of(store, "r1")] == ["w-pending"]
    assert [a[1] for a in await active_alerts(store)] == ["active-old"]
    assert [r.day for r in await store.sla(date(2025, 1, 1))] == [date(2025, 3, 11)]
    assert await store.prune_older(PruneCutoffs(inbox=cut)) == {"inbox": 0}  # idempotent


async def test_prune_deletes_a_backlog_in_bounded_transactions(
    sql_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sql_store
    monkeypatch.setattr(sql_inbox, "_PRUNE_CHUNK", 7)
    await store.inbox_append([item(f"k{i}", T0) for i in range(50)] + [item("keep", T0 + DAY)])
    assert await store.prune_older(PruneCutoffs(inbox=T0 + DAY / 2)) == {"inbox": 50}
    assert await _count(store, "inbox") == 1


async def test_a_huge_callback_is_stored_capped_and_still_routable(target: AnyTarget) -> None:
    store = target.new()
    store._max_payload = 2048
    await store.open()
    junk = {f"junk{i}": "x" * 1000 for i in range(30)}  # 30 KB of unknown fields first …
    message = {**junk, "job_id": "job-1", "state": "DISCONNECTED"}  # … routing fields last
    payload = {"event_type": "RTMP_STREAM_STATE_CHANGE", "message": message, "via": "http"}
    assert await store.inbox_append([item("big", T0, payload=payload)]) == [True]
    [stored] = await store.inbox_pending()
    assert len(json.dumps(stored.payload)) <= 2048 + 64  # JSONB re-renders with spaces
    assert stored.payload[TRUNCATED_KEY] > 30_000
    assert stored.payload["event_type"] == "RTMP_STREAM_STATE_CHANGE"
    assert stored.payload["message"]["job_id"] == "job-1"
    assert stored.payload["message"]["state"] == "DISCONNECTED"
    small = {"event_type": "X", "message": {"job_id": "j"}}
    await store.inbox_append([item("small", T0, payload=small)])
    assert [p.payload for p in await store.inbox_pending() if p.dedupe_key == "small"] == [small]


async def test_identifiers_from_outside_fit_their_columns(store: AnyStore) -> None:
    """A 5,000-character job id or event type failed the whole group commit on PostgreSQL."""
    long_job, long_type = "j" * 5000, "T" * 5000
    items = [
        InboxItem(f"v1|{long_job}|{long_type}|{n}", "r1", long_job, long_type, {}, T0, T0)
        for n in ("a", "b")
    ] + [item("normal", T0)]
    assert await store.inbox_append(items) == [True, True, True]  # distinct keys stay distinct
    assert await store.inbox_append(items[:1]) == [False]  # and still dedupe
    await store.inbox_done_keys([items[0].dedupe_key])
    assert sorted(p.dedupe_key[:6] for p in await store.inbox_pending()) == ["normal", "v1|jjj"]
    long_id = "c" * 1000
    assert await store.put_reply(long_id, {"status": "ok"}, T0)
    assert await store.get_reply(long_id) == {"status": "ok"}
    assert await store.get_reply("c" * 999 + "d") is None


async def test_other_outside_text_is_capped(target: AnyTarget) -> None:
    store = target.new()
    store._max_text = 1000
    await store.open()
    cloud_error = "E" * 50_000
    rec = TransitionRecord(
        "r1", T0, "LIVE", "RESTARTING", "Failed", cloud_error, {"e": cloud_error}
    )
    await store.save_room("r1", {"state": "RESTARTING"}, transition=rec)
    [t] = await store.transitions("r1")
    assert len(t.cause) < 1100 and t.cause.endswith("chars]")
    assert len(json.dumps(t.detail)) < 1100
    await store.set_alert("r1", "unrecovered", cloud_error, T0)
    [(_, _, message, _)] = await active_alerts(store)
    assert len(message) < 1100
    await store.put_reply("c1", {"status": "error", "message": cloud_error}, T0)
    reply = await store.get_reply("c1")
    assert reply is not None and reply["status"] == "error"
    assert len(json.dumps(reply)) < 1100
