"""The Store contract, run unchanged on SQLite, PostgreSQL and in memory (the ``target`` fixture).

Tests about SQL itself (schema versions, connections) take ``sql_target`` instead."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import func, select

from orchestrator.store import (
    SCHEMA_VERSION,
    FencedOut,
    InboxItem,
    PruneCutoffs,
    RoomWrite,
    SlaRow,
    StartIntent,
    StoreError,
    TransitionRecord,
    member_key,
)
from orchestrator.store.roomwriter import RoomWriter
from orchestrator.store.sql import schema_version
from tests.support.pgcluster import PG_DSN
from tests.support.storekit import AnyStore, AnyTarget, StoreTarget
from tests.support.storepeek import active_alerts, start_intents_of

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def item(key: str, *, room: str | None = "r1", at: datetime = T0) -> InboxItem:
    return InboxItem(
        dedupe_key=key,
        room_id=room,
        job_id="job-1",
        event_type="RTMP_STATE",
        payload={"key": key, "nested": {"n": [1, 2]}},
        received_at=at,
        event_time=at - timedelta(seconds=1),
    )


# --- schema / lifecycle --------------------------------------------------------------------


async def test_open_twice_and_reopen_migrates_once(sql_target: StoreTarget) -> None:
    target = sql_target
    first = await target.make()
    await first.open()  # a second open on the same instance is a no-op
    await first.save_room("r1", {"state": "LIVE"})
    await first.close()
    second = await target.make()
    async with second.engine.connect() as conn:
        versions = (await conn.execute(select(schema_version.c.version))).scalars().all()
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert await second.load_rooms() == {"r1": {"state": "LIVE"}}


async def test_schema_newer_than_this_build_is_refused(sql_target: StoreTarget) -> None:
    target = sql_target
    first = await target.make()
    async with first.engine.begin() as conn:
        await conn.execute(schema_version.insert().values(version=99, applied_at=T0))
    with pytest.raises(StoreError, match="newer than this build"):
        await target.make()


async def test_two_instances_opening_at_once_both_succeed(sql_target: StoreTarget) -> None:
    target = sql_target
    a, b = target.new(), target.new()
    await asyncio.gather(a.open(), b.open())
    await a.save_room("r1", {"n": 1})
    assert await b.load_rooms() == {"r1": {"n": 1}}
    async with b.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(schema_version))).scalar()
    assert count == SCHEMA_VERSION


async def test_ping_succeeds_on_open_store_and_fails_when_closed(store: AnyStore) -> None:
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.ping()


# --- rooms ---------------------------------------------------------------------------------


async def test_rooms_save_load_overwrite_delete(store: AnyStore) -> None:
    assert await store.load_rooms() == {}
    await store.save_room("r1", {"state": "IDLE", "attempt": 0})
    await store.save_room("r2", {"state": "LIVE", "job_id": "j"})
    await store.save_room("r1", {"state": "STARTING", "attempt": 1})
    assert await store.load_rooms() == {
        "r1": {"state": "STARTING", "attempt": 1},
        "r2": {"state": "LIVE", "job_id": "j"},
    }
    await store.delete_room("r1")
    await store.delete_room("missing")
    assert await store.load_rooms() == {"r2": {"state": "LIVE", "job_id": "j"}}


# --- transitions ---------------------------------------------------------------------------


async def test_transitions_filter_since_and_limit_oldest_first(store: AnyStore) -> None:
    for i in range(5):
        rid = "r1" if i % 2 == 0 else "r2"
        await store.save_room(
            rid,
            {"i": i},
            transition=TransitionRecord(
                room_id="r1" if i % 2 == 0 else "r2",
                at=T0 + timedelta(minutes=i),
                from_state="IDLE",
                to_state=f"S{i}",
                event="OrderChanged",
                cause=f"mqtt:{i}",
                detail={"i": i},
            ),
        )
    everything = await store.transitions()
    assert [t.to_state for t in everything] == ["S0", "S1", "S2", "S3", "S4"]
    assert everything[0].detail == {"i": 0}
    assert everything[0].at == T0
    assert everything[0].at.tzinfo is not None
    assert [t.to_state for t in await store.transitions("r1")] == ["S0", "S2", "S4"]
    since = await store.transitions(since=T0 + timedelta(minutes=2))
    assert [t.to_state for t in since] == ["S2", "S3", "S4"]
    assert [t.to_state for t in await store.transitions(limit=2)] == ["S3", "S4"]


# --- start intents -------------------------------------------------------------------------


async def test_start_intent_is_unique_per_room_window_attempt(store: AnyStore) -> None:
    intent = StartIntent(room_id="r1", window_key="w-2025-03-01T20", attempt=1, created_at=T0)
    assert await store.put_start_intent(intent) is True
    assert await store.put_start_intent(intent) is False
    changed = StartIntent(
        room_id="r1", window_key="w-2025-03-01T20", attempt=1, created_at=T0, outcome="failed"
    )
    assert await store.put_start_intent(changed) is False  # the first record wins
    assert await store.put_start_intent(
        StartIntent(room_id="r1", window_key="w-2025-03-01T20", attempt=2, created_at=T0)
    )
    assert await store.put_start_intent(
        StartIntent(room_id="r2", window_key="w-2025-03-01T20", attempt=1, created_at=T0)
    )
    stored = await start_intents_of(store, "r1")
    assert [(i.attempt, i.outcome, i.job_id) for i in stored] == [
        (1, "pending", None),
        (2, "pending", None),
    ]


async def test_resolve_start_intent_and_pending_only(store: AnyStore) -> None:
    for attempt in (1, 2):
        await store.put_start_intent(
            StartIntent(room_id="r1", window_key="w", attempt=attempt, created_at=T0)
        )
    await store.resolve_start_intent("r1", "w", 1, outcome="started", job_id="job-9")
    await store.resolve_start_intent("r1", "w", 1, outcome="adopted", job_id=None)
    pending = await start_intents_of(store, "r1", pending_only=True)
    assert [i.attempt for i in pending] == [2]
    first = (await start_intents_of(store, "r1"))[0]
    assert (first.outcome, first.job_id) == ("adopted", "job-9")
    with pytest.raises(StoreError, match="no start intent"):
        await store.resolve_start_intent("r1", "w", 3, outcome="failed", job_id=None)


# --- inbox ---------------------------------------------------------------------------------


async def test_inbox_dedupes_across_and_within_batches(store: AnyStore) -> None:
    assert await store.inbox_append([]) == []
    flags = await store.inbox_append([item("a"), item("b"), item("a"), item("c")])
    assert flags == [True, True, False, True]
    assert await store.inbox_append([item("b"), item("d")]) == [False, True]
    pending = await store.inbox_pending()
    assert [p.dedupe_key for p in pending] == ["a", "b", "c", "d"]
    first = pending[0]
    assert first.id is not None
    assert first.payload == {"key": "a", "nested": {"n": [1, 2]}}
    assert first.received_at == T0
    assert first.event_time == T0 - timedelta(seconds=1)
    assert (first.room_id, first.job_id, first.event_type) == ("r1", "job-1", "RTMP_STATE")


async def test_inbox_pending_limit_and_done(store: AnyStore) -> None:
    await store.inbox_append([item(f"k{i:03}", room=None) for i in range(250)])
    batch = await store.inbox_pending(limit=100)
    assert [b.dedupe_key for b in batch] == [f"k{i:03}" for i in range(100)]
    await store.inbox_done([b.id for b in batch if b.id is not None])
    await store.inbox_done([])
    rest = await store.inbox_pending(limit=1000)
    assert [b.dedupe_key for b in rest] == [f"k{i:03}" for i in range(100, 250)]
    assert rest[0].room_id is None
    # a processed item still dedupes a late duplicate
    assert await store.inbox_append([item("k000")]) == [False]


async def test_inbox_done_keys_marks_by_dedupe_key(store: AnyStore) -> None:
    await store.inbox_append([item(f"d{i:04}") for i in range(1200)])
    await store.inbox_done_keys([f"d{i:04}" for i in range(0, 1200, 2)] + ["absent"])
    await store.inbox_done_keys([])
    rest = await store.inbox_pending(limit=5000)
    assert [p.dedupe_key for p in rest] == [f"d{i:04}" for i in range(1, 1200, 2)]
    await store.inbox_done_keys(["d0000", "d0001"])  # already done + still pending
    assert (await store.inbox_pending(limit=1))[0].dedupe_key == "d0003"
    assert await store.inbox_append([item("d0000")]) == [False]  # still dedupes


async def test_inbox_large_batch_spans_chunks(store: AnyStore) -> None:
    flags = await store.inbox_append([item(f"x{i}") for i in range(2500)] + [item("x0")])
    assert flags.count(True) == 2500
    assert flags[-1] is False
    assert len(await store.inbox_pending(limit=5000)) == 2500


async def test_prune_removes_old_processed_rows(store: AnyStore) -> None:
    await store.inbox_append([item("old", at=T0), item("new", at=T0 + timedelta(days=2))])
    ids = [p.id for p in await store.inbox_pending() if p.id is not None]
    await store.inbox_done(ids)
    await store.put_reply("c-old", {"status": "ok"}, T0)
    cut = T0 + timedelta(days=1)
    deleted = await store.prune_older(PruneCutoffs(inbox=cut, replies=cut, transitions=cut))
    assert sum(deleted.values()) == 2
    assert await store.get_reply("c-old") is None
    assert await store.inbox_append([item("old"), item("new")]) == [True, False]


# --- command replies -----------------------------------------------------------------------


async def test_reply_is_idempotent_first_wins(store: AnyStore) -> None:
    assert await store.get_reply("cmd-1") is None
    assert await store.put_reply("cmd-1", {"id": "cmd-1", "status": "ok", "data": {}}, T0)
    assert not await store.put_reply("cmd-1", {"id": "cmd-1", "status": "error"}, T0)
    assert await store.get_reply("cmd-1") == {"id": "cmd-1", "status": "ok", "data": {}}


# --- overrides -----------------------------------------------------------------------------


async def test_overrides_roundtrip(store: AnyStore) -> None:
    assert await store.get_overrides("r1") == {}
    await store.put_overrides("r1", {"paused": True})
    await store.put_overrides("r1", {"paused": False, "skips": ["2025-03-02"]})
    assert await store.get_overrides("r1") == {"paused": False, "skips": ["2025-03-02"]}
    assert await store.get_overrides("r2") == {}
    await store.put_overrides("r3", {"output": {"url": "rtmp://x/live"}})
    assert await store.all_overrides() == {
        "r1": {"paused": False, "skips": ["2025-03-02"]},
        "r3": {"output": {"url": "rtmp://x/live"}},
    }


# --- alerts --------------------------------------------------------------------------------


async def test_alerts_keep_first_raise_time_until_cleared(store: AnyStore) -> None:
    await store.set_alert("r1", "quarantined", "restart ladder exhausted", T0)
    await store.set_alert("r1", "quarantined", "still exhausted", T0 + timedelta(minutes=5))
    await store.set_alert("r2", "stale", "no observation", T0)
    assert await active_alerts(store) == [
        ("r1", "quarantined", "still exhausted", T0),
        ("r2", "stale", "no observation", T0),
    ]
    await store.clear_alert("r1", "quarantined", T0 + timedelta(minutes=6))
    await store.clear_alert("r9", "nothing", T0)
    assert await active_alerts(store) == [("r2", "stale", "no observation", T0)]
    later = T0 + timedelta(hours=1)
    await store.set_alert("r1", "quarantined", "again", later)
    assert ("r1", "quarantined", "again", later) in await active_alerts(store)


# --- SLA -----------------------------------------------------------------------------------


async def test_sla_accumulates_per_room_and_day(store: AnyStore) -> None:
    d1, d2 = date(2025, 3, 1), date(2025, 3, 2)
    await store.add_sla_rows([SlaRow("r1", d1, 3600, 3500, 0, 0, 0.0, 0.0)])
    await store.add_sla_rows([SlaRow("r1", d1, 0, 50, 1, 1, 12.5, 12.5)])
    await store.add_sla_rows([SlaRow("r1", d1, 0, 0, 1, 1, 4.0, 4.0)])
    await store.add_sla_rows([SlaRow("r2", d2, 10, 0, 0, 0, 0.0, 0.0)])
    rows = await store.sla(d1)
    assert [(r.room_id, r.day) for r in rows] == [("r1", d1), ("r2", d2)]
    r1 = rows[0]
    assert (r1.scheduled_s, r1.live_s, r1.drops, r1.recoveries) == (3600, 3550, 2, 2)
    assert (r1.recovery_s_total, r1.recovery_s_max) == (16.5, 12.5)
    assert [r.room_id for r in await store.sla(d2)] == ["r2"]
    assert [r.day for r in await store.sla(d1, "r1")] == [d1]
    # the batch form: one transaction, one row per (room, day), adding to what is there
    await store.add_sla_rows([
        SlaRow("r1", d1, 10, 10, 1, 2, 30.0, 20.0),
        SlaRow("r3", d1, 5, 0, 0, 0, 0.0, 0.0),
    ])  # fmt: skip
    r1, r3 = [r for r in await store.sla(d1) if r.room_id in ("r1", "r3")]
    assert (r1.scheduled_s, r1.drops, r1.recoveries) == (3610, 3, 4)
    assert (r1.recovery_s_total, r1.recovery_s_max) == (46.5, 20.0)
    assert (r3.room_id, r3.scheduled_s) == ("r3", 5)
    with pytest.raises(ValueError):
        await store.add_sla_rows([SlaRow("r1", d1, 1, 1, 0, 0, 0, 0)] * 2)


# --- bad input -----------------------------------------------------------------------------


async def test_naive_datetime_is_refused_and_chained(store: AnyStore) -> None:
    with pytest.raises(StoreError, match="naive datetime") as info:
        await store.set_alert("r1", "k", "m", datetime(2025, 3, 1, 12, 0))
    assert info.value.__cause__ is not None
    assert await active_alerts(store) == []


# --- fencing -------------------------------------------------------------------------------


async def test_fenced_writes_need_the_current_lease(target: AnyTarget) -> None:
    store = await target.make()
    now = target.clock.now
    [lease] = await store.acquire_leases("a", ["r1"], ttl_s=30, now=now)
    assert lease.fence == 1
    await store.save_room("r1", {"v": 1}, fence=1)
    intent = StartIntent(room_id="r1", window_key="w", attempt=1, created_at=now)
    rec = TransitionRecord("r1", now, "IDLE", "STARTING", "WindowOpened")
    with pytest.raises(FencedOut):
        await store.save_room("r1", {"v": 2}, fence=0)
    with pytest.raises(FencedOut):
        await store.save_room("r1", {"v": 7}, fence=7, transition=rec)
    with pytest.raises(FencedOut):
        await store.put_start_intent(intent, fence=2)
    with pytest.raises(FencedOut):
        await store.save_room("r-unleased", {"v": 1}, fence=1)
    # nothing written by the refused calls
    assert await store.load_rooms() == {"r1": {"v": 1}}
    assert await store.transitions() == []
    assert await start_intents_of(store, "r1") == []
    # the right fence works, and fence=None is unconditional (single instance)
    await store.save_room("r1", {"v": 1}, fence=1, transition=rec)
    assert await store.put_start_intent(intent, fence=1)
    await store.save_room("r1", {"v": 3}, fence=None)
    assert await store.load_rooms() == {"r1": {"v": 3}}


async def test_save_rooms_is_one_transaction_with_per_room_fences(target: AnyTarget) -> None:
    """Group commit: several rooms' writes and audit rows at once; a room whose fence no longer
    holds gets its FencedOut and writes nothing, the others are written."""
    store = await target.make()
    now = target.clock.now
    await store.acquire_leases("a", ["r1", "r2"], ttl_s=30, now=now)
    rec = TransitionRecord("r1", now, "IDLE", "STARTING", "WindowOpened")
    results = await store.save_rooms([
        RoomWrite("r1", {"v": 1}, fence=1, transition=rec),
        RoomWrite("r2", {"v": 1}, fence=9, transition=replace(rec, room_id="r2")),
        RoomWrite("r3", {"v": 1}),
        RoomWrite("r3", {"v": 2}),  # the same room twice: the last write wins
    ])  # fmt: skip
    assert results[0] is None and isinstance(results[1], FencedOut) and results[2:] == [None] * 2
    assert await store.load_rooms() == {"r1": {"v": 1}, "r3": {"v": 2}}
    assert [(t.room_id, t.to_state) for t in await store.transitions()] == [("r1", "STARTING")]
    assert await store.save_rooms([]) == []


async def test_room_writer_shares_commits_and_keeps_each_outcome(target: AnyTarget) -> None:
    store = await target.make()
    now = target.clock.now
    await store.acquire_leases("a", [f"r{i}" for i in range(50)], ttl_s=30, now=now)
    writer = RoomWriter(store)
    outcomes = await asyncio.gather(
        *(writer.save(RoomWrite(f"r{i}", {"i": i}, 1 if i != 7 else 2)) for i in range(50)),
        return_exceptions=True,
    )
    assert [i for i, o in enumerate(outcomes) if o is not None] == [7]
    assert isinstance(outcomes[7], FencedOut)
    assert len(await store.load_rooms()) == 49
    assert writer.commits < 50  # concurrent writes shared transactions (1 lone + the rest)
    assert await asyncio.wait_for(writer.save(RoomWrite("r1", {"alone": True}, 1)), 5) is None


async def test_released_lease_fences_out_its_old_holder(target: AnyTarget) -> None:
    store = await target.make()
    now = target.clock.now
    await store.acquire_leases("a", ["r1"], ttl_s=30, now=now)
    await store.release_leases("a", ["r1"])
    assert await store.leases() == []
    with pytest.raises(FencedOut):
        await store.save_room("r1", {"v": 1}, fence=1)
    [again] = await store.acquire_leases("a", ["r1"], ttl_s=30, now=now)
    assert again.fence == 2  # monotonic even across a release


# --- leases --------------------------------------------------------------------------------


async def test_lease_expiry_takeover_increments_fence(target: AnyTarget) -> None:
    a, b = await target.make(), await target.make()
    clock = target.clock
    held_a = await a.acquire_leases("a", ["r1", "r2"], ttl_s=30, now=clock.now)
    assert [(x.room_id, x.fence) for x in held_a] == [("r1", 1), ("r2", 1)]
    # before expiry b gets nothing; a renews without changing the fence
    assert await b.acquire_leases("b", ["r1", "r2"], ttl_s=30, now=clock.advance(20)) == []
    renewed = await a.acquire_leases("a", ["r1"], ttl_s=30, now=clock.now)
    assert renewed[0].fence == 1
    assert renewed[0].expires_at == clock.now + timedelta(seconds=30)
    # r2 was not renewed: it expires first and b takes it over with fence 2
    taken = await b.acquire_leases("b", ["r1", "r2"], ttl_s=30, now=clock.advance(15))
    assert [(x.room_id, x.owner, x.fence) for x in taken] == [("r2", "b", 2)]
    assert [
        x.room_id for x in await a.acquire_leases("a", ["r1", "r2"], ttl_s=30, now=clock.now)
    ] == ["r1"]
    with pytest.raises(FencedOut):
        await a.save_room("r2", {"stale": True}, fence=1)
    await b.save_room("r2", {"fresh": True}, fence=2)
    assert await a.load_rooms() == {"r2": {"fresh": True}}
    owners = {x.room_id: (x.owner, x.fence) for x in await a.leases()}
    assert owners == {"r1": ("a", 1), "r2": ("b", 2)}


async def test_max_rooms_caps_what_one_instance_takes(target: AnyTarget) -> None:
    store = await target.make()
    now = target.clock.now
    rooms = [f"r{i:02}" for i in range(10)]
    me = member_key("a")
    held = await store.acquire_leases("a", [me, *rooms], ttl_s=30, now=now, max_rooms=3)
    assert sorted(x.room_id for x in held) == sorted([me, "r00", "r01", "r02"])
    again = await store.acquire_leases("a", [me, *rooms], ttl_s=30, now=now, max_rooms=3)
    assert sorted(x.room_id for x in again) == sorted([me, "r00", "r01", "r02"])
    more = await store.acquire_leases("a", rooms, ttl_s=30, now=now, max_rooms=5)
    assert len(more) == 5
    assert await store.acquire_leases("a", [], ttl_s=30, now=now) == []
    with pytest.raises(StoreError):
        await store.acquire_leases("", rooms, ttl_s=30, now=now)


async def test_concurrent_acquire_never_owns_a_room_twice(target: AnyTarget) -> None:
    a, b = await target.make(), await target.make()
    now = target.clock.now
    rooms = [f"room-{i:03}" for i in range(60)]
    for _ in range(3):  # a few rounds: renewals and races on the same rows
        got_a, got_b = await asyncio.gather(
            a.acquire_leases("a", rooms, ttl_s=30, now=now, max_rooms=40),
            b.acquire_leases("b", list(reversed(rooms)), ttl_s=30, now=now, max_rooms=40),
        )
        set_a = {x.room_id for x in got_a}
        set_b = {x.room_id for x in got_b}
        assert not set_a & set_b
        assert set_a | set_b == set(rooms)
    listed = await a.leases()
    assert sorted(x.room_id for x in listed) == rooms
    assert all(x.fence == 1 for x in listed)


# --- resources -----------------------------------------------------------------------------


async def test_pool_connections_are_returned_and_closed(sql_target: StoreTarget) -> None:
    target = sql_target
    store = await target.make()
    now = target.clock.now
    await asyncio.gather(
        *(store.save_room(f"r{i}", {"i": i}) for i in range(20)),
        *(store.inbox_append([item(f"k{i}")]) for i in range(20)),
        store.load_rooms(),
    )
    with pytest.raises(FencedOut):
        await store.save_room("r1", {}, fence=5)
    with pytest.raises(StoreError):
        await store.resolve_start_intent("r1", "w", 1, outcome="failed", job_id=None)
    await store.acquire_leases("a", ["r1"], ttl_s=5, now=now)
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    if target.backend == "postgres":
        assert await _pg_backends(target) >= 1
    await store.close()
    if target.backend == "postgres":
        assert await _pg_backends(target) == 0


async def _pg_backends(target: StoreTarget) -> int:
    conn = await asyncpg.connect(PG_DSN)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            f"liveorch:{target.schema}",
        )
        return count
    finally:
        await conn.close()


async def test_save_room_with_transition_is_one_all_or_nothing_write(
    target: AnyTarget,
) -> None:
    store = await target.make()
    now = target.clock.now
    await store.acquire_leases("a", ["r1"], ttl_s=30, now=now)
    rec = TransitionRecord("r1", now, "LIVE", "DEGRADED", "RtmpStateReported", "callback")
    await store.save_room("r1", {"v": 1}, fence=1, transition=rec)
    assert await store.load_rooms() == {"r1": {"v": 1}}
    assert [(t.from_state, t.to_state) for t in await store.transitions("r1")] == [
        ("LIVE", "DEGRADED")
    ]
    with pytest.raises(FencedOut):  # neither the state nor the transition is written
        await store.save_room("r1", {"v": 2}, fence=0, transition=rec)
    assert await store.load_rooms() == {"r1": {"v": 1}}
    assert len(await store.transitions("r1")) == 1
    await store.save_room("r1", {"v": 3})  # no transition: state only
    assert len(await store.transitions("r1")) == 1
