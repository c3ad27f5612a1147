"""Error translation at the store boundary: driver errors become StoreError, chained."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from orchestrator.errors import PermanentError, TemporaryError
from orchestrator.store import FencedOut, SqlStore, StoreError, StoreUnavailable
from tests.support.pgcluster import PG_DSN
from tests.support.ports import free_port
from tests.support.storekit import StoreTarget


async def test_unreachable_postgres_is_temporary_and_chained() -> None:
    store = SqlStore(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test")
    with pytest.raises(StoreUnavailable, match="temporary") as info:
        await store.open()
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value, TemporaryError)  # retry loops wait it out like a 5xx
    assert info.value.temporary is True
    assert info.value.__cause__ is not None
    await store.close()


def test_store_unavailable_sits_in_the_temporary_branch() -> None:
    exc = StoreUnavailable("store load_rooms failed: PostgreSQL unreachable", retry_after=2.0)
    assert isinstance(exc, StoreError) and isinstance(exc, TemporaryError)
    assert not isinstance(exc, PermanentError)
    assert (exc.retry_after, exc.temporary) == (2.0, True)
    assert str(exc) == "store load_rooms failed: PostgreSQL unreachable"  # nothing added
    caught: list[BaseException] = []
    for handler in (TemporaryError, StoreError):  # a retry loop's clause, a store caller's
        try:
            raise exc
        except handler as e:
            caught.append(e)
    assert caught == [exc, exc]
    assert not isinstance(StoreError("disk full"), TemporaryError)  # the rest stays permanent


async def test_unreadable_sqlite_path_is_a_permanent_store_error() -> None:
    store = SqlStore("sqlite+aiosqlite:////proc/nonexistent-dir/x.db")
    with pytest.raises(StoreError) as info:
        await store.open()
    assert not isinstance(info.value, StoreUnavailable)
    assert not isinstance(info.value, TemporaryError)


def test_unsupported_backend_is_refused() -> None:
    with pytest.raises(StoreError, match="unsupported"):
        SqlStore("mysql+aiomysql://x@localhost/db")


async def test_use_before_open_is_a_store_error() -> None:
    store = SqlStore("sqlite+aiosqlite:///:memory:")
    with pytest.raises(StoreError, match="not open"):
        await store.load_rooms()


@pytest.mark.external_service
async def test_killed_postgres_connections_are_replaced(pg_target: StoreTarget) -> None:
    target = pg_target
    store = await target.make()
    await store.save_room("r1", {"v": 1})
    conn = await asyncpg.connect(PG_DSN)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            f"liveorch:{target.schema}",
        )
    finally:
        await conn.close()
    assert killed >= 1
    # pool_pre_ping notices the dead connection and reconnects instead of failing the call
    assert await store.load_rooms() == {"r1": {"v": 1}}


@pytest.mark.external_service
async def test_fenced_write_waits_for_a_takeover_in_flight_then_fails(
    pg_target: StoreTarget,
) -> None:
    """The fence check holds the lease row (FOR KEY SHARE) in the write's own transaction.

    The takeover is done the way ``acquire_leases`` does it: the row locked ``FOR UPDATE``
    first (the lock that conflicts with ``KEY SHARE``; a bare UPDATE of non-key columns would
    not), then the fence bumped.
    """
    store = await pg_target.make()
    await store.acquire_leases("a", ["r1"], ttl_s=30, now=pg_target.clock.now)
    other = await asyncpg.connect(PG_DSN, server_settings={"search_path": str(pg_target.schema)})
    watcher = await asyncpg.connect(PG_DSN)  # outside the transaction: fresh activity snapshots
    try:
        takeover = other.transaction()
        await takeover.start()
        await other.execute("SELECT room_id FROM leases WHERE room_id = 'r1' FOR UPDATE")
        await other.execute("UPDATE leases SET owner = 'b', fence = fence + 1 WHERE room_id = 'r1'")
        write = asyncio.create_task(store.save_room("r1", {"late": True}, fence=1))
        # wait until the write is blocked on the row lock held by the takeover
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND wait_event_type = 'Lock'",
            f"liveorch:{pg_target.schema}",
        ):
            assert not write.done(), "the fenced write did not wait for the lease row"
        await takeover.commit()
        with pytest.raises(FencedOut):
            await asyncio.wait_for(write, timeout=5)
    finally:
        await other.close()
        await watcher.close()
    assert await store.load_rooms() == {}
