"""The tenant reader's sweeps (``SweepStore``): the same contract on SQLite, PostgreSQL and in
memory, and on PostgreSQL the NOTIFY sent in the sweep's own transaction."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from orchestrator.ownership import role_key
from orchestrator.store import FencedOut
from orchestrator.store.notify import channel_name
from tests.support.pgcluster import PG_DSN
from tests.support.storekit import AnyTarget, StoreTarget

KEY = role_key("tenant-reader")
JOBS = {"r1": [{"job_id": "j1", "state": "PROCESSING", "rtmp_state": "CONNECTED"}], "r2": []}


async def test_sweeps_are_fenced_by_the_role_lease_and_the_newest_wins(target: AnyTarget) -> None:
    store = await target.make()
    now = target.clock.now
    assert await store.latest_sweep() is None
    [lease] = await store.acquire_leases("a", [KEY], ttl_s=30, now=now)
    first = await store.put_sweep(
        reader="a", lease_key=KEY, fence=lease.fence, taken_at=now, jobs_seen=1, jobs=JOBS
    )
    got = await store.latest_sweep()
    assert got is not None
    assert (got.sweep_id, got.reader, got.taken_at, got.jobs_seen) == (first, "a", now, 1)
    assert {r: list(js) for r, js in got.jobs.items()} == JOBS
    assert await store.latest_sweep(after=first) is None

    # another instance takes the role after expiry: the old reader's sweep is refused
    later = now + timedelta(seconds=31)
    [taken] = await store.acquire_leases("b", [KEY], ttl_s=30, now=later)
    assert taken.fence == lease.fence + 1
    with pytest.raises(FencedOut):
        await store.put_sweep(
            reader="a", lease_key=KEY, fence=lease.fence, taken_at=later, jobs_seen=0, jobs={}
        )
    second = await store.put_sweep(
        reader="b", lease_key=KEY, fence=taken.fence, taken_at=later, jobs_seen=0, jobs={}
    )
    assert second > first
    newest = await store.latest_sweep(after=first)
    assert newest is not None and (newest.reader, dict(newest.jobs)) == ("b", {})
    # only the last few are kept, ids keep increasing
    ids = [
        await store.put_sweep(
            reader="b", lease_key=KEY, fence=taken.fence, taken_at=later, jobs_seen=0, jobs={}
        )
        for _ in range(5)
    ]
    assert ids == sorted(ids) and ids[0] > second
    top = await store.latest_sweep()
    assert top is not None and top.sweep_id == ids[-1]


async def test_a_sweep_notifies_listeners_on_commit_only(pg_target: StoreTarget) -> None:
    store = await pg_target.make()
    now = pg_target.clock.now
    [lease] = await store.acquire_leases("a", [KEY], ttl_s=30, now=now)
    channel = channel_name(pg_target.schema or "", "sweep")
    got: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.add_listener(channel, lambda *a: got.put_nowait(a[-1]))
        with pytest.raises(FencedOut):  # refused: rolled back, so nothing is sent
            await store.put_sweep(
                reader="a", lease_key=KEY, fence=lease.fence + 1, taken_at=now, jobs_seen=0,
                jobs={}, notify_channel=channel,
            )  # fmt: skip
        sweep_id = await store.put_sweep(
            reader="a", lease_key=KEY, fence=lease.fence, taken_at=now, jobs_seen=1, jobs=JOBS,
            notify_channel=channel,
        )  # fmt: skip
        assert await asyncio.wait_for(got.get(), 10) == str(sweep_id)
        assert got.empty()
    finally:
        await conn.close()


async def test_a_role_lease_does_not_count_against_max_rooms(target: AnyTarget) -> None:
    """The reader holding its role takes its whole share of rooms (found by a SIGKILL test:
    the survivor, reader too, stopped one room short of all of them)."""
    store = await target.make()
    now = target.clock.now
    await store.acquire_leases("a", [KEY], ttl_s=30, now=now)
    held = await store.acquire_leases("a", ["r1", "r2"], ttl_s=30, now=now, max_rooms=2)
    assert [x.room_id for x in held] == ["r1", "r2"]
