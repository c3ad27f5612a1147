"""Lease renewal and fenced room writes of one instance never deadlock on PostgreSQL (#25).

The fleet bench saw ``deadlock detected`` from ``acquire_leases`` with one instance at 3,000
rooms: the renewal ``UPDATE`` locked lease rows in scan order while the room writer's batched
fenced ``save_rooms`` locked the same rows ``FOR SHARE`` one by one in arrival order. Here both
run at once over 3,000 rooms, the writes in an order unrelated to room order.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from orchestrator.store.base import RoomWrite
from tests.support.storekit import StoreTarget

pytestmark = pytest.mark.external_service

ROOMS = 3000
OWNER = "inst-a"


async def test_renewal_and_fenced_batches_do_not_deadlock(pg_target: StoreTarget) -> None:
    store = await pg_target.make()
    rooms = [f"room-{i:05d}" for i in range(ROOMS)]
    now = pg_target.clock()
    held = await store.acquire_leases(OWNER, rooms, ttl_s=30, now=now)
    fences = {lease.room_id: lease.fence for lease in held}
    assert len(fences) == ROOMS
    rng = random.Random(25)
    renewals = 0
    batches = 0

    async def renew() -> None:
        nonlocal renewals
        for i in range(40):
            got = await store.acquire_leases(OWNER, rooms, ttl_s=30, now=now + timedelta(seconds=i))
            assert len(got) == ROOMS
            renewals += 1

    async def write(worker: int) -> None:
        nonlocal batches
        for n in range(25):
            batch = rng.sample(rooms, 400)  # arrival order, not room order
            results = await store.save_rooms(
                [RoomWrite(r, {"worker": worker, "n": n}, fences[r]) for r in batch]
            )
            assert results == [None] * len(batch)
            batches += 1

    async with asyncio.timeout(120), asyncio.TaskGroup() as tg:  # one failure cancels the rest
        tg.create_task(renew())
        for w in range(3):
            tg.create_task(write(w))
    assert renewals == 40
    assert batches == 75


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_conflict_is_temporary_and_retried(pg_target: StoreTarget, sqlstate: str) -> None:
    """A deadlock/serialization failure is StoreUnavailable, and the store reruns it."""
    from sqlalchemy import text

    from orchestrator.store.base import StoreUnavailable

    store = await pg_target.make()
    raise_it = text(f"DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '{sqlstate}'; END $$")
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        async with store._write("probe") as conn:
            if calls < 3:
                await conn.execute(raise_it)
        return "done"

    assert await store._retry_conflicts("probe", attempt) == "done"
    assert calls == 3

    async def always() -> None:
        async with store._write("probe") as conn:
            await conn.execute(raise_it)

    with pytest.raises(StoreUnavailable, match="transaction conflict"):
        await store._retry_conflicts("probe", always)


async def test_takeover_skips_a_room_whose_fenced_write_is_in_flight(
    pg_target: StoreTarget,
) -> None:
    """FOR KEY SHARE (the fence check) lets the renewal through but holds off a takeover."""
    import asyncpg

    from tests.support.pgcluster import PG_DSN

    a = await pg_target.make()
    b = await pg_target.make()
    now = pg_target.clock.now
    [lease] = await a.acquire_leases("a", ["r1"], ttl_s=30, now=now)
    writer = await asyncpg.connect(PG_DSN, server_settings={"search_path": str(pg_target.schema)})
    try:
        fenced_write = writer.transaction()
        await fenced_write.start()
        # what _check_fences runs inside a fenced write's transaction
        await writer.execute("SELECT fence FROM leases WHERE room_id = 'r1' FOR KEY SHARE")
        # the owner's renewal does not wait for the in-flight write
        renewed = await asyncio.wait_for(
            a.acquire_leases("a", ["r1"], ttl_s=30, now=now + timedelta(seconds=1)), timeout=10
        )
        assert [x.fence for x in renewed] == [lease.fence]
        later = now + timedelta(seconds=120)  # a's lease has expired
        assert await b.acquire_leases("b", ["r1"], ttl_s=30, now=later) == []
        await fenced_write.commit()
        [taken] = await b.acquire_leases("b", ["r1"], ttl_s=30, now=later)
        assert taken.fence == lease.fence + 1
    finally:
        await writer.close()
