"""Several real daemons on one PostgreSQL: split, failover, fencing, a database restart.

Every test samples the emulator's job list all along (``DuplicateWatch``): two WAITING or
PROCESSING jobs for one room at any moment is a failure, and so is any new start, because
failover and rebalancing must *adopt* the running jobs, never start fresh ones.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.multi.conftest import ROOMS6
from tests.support.multi import TTL_S, Cluster, DuplicateWatch, eventually
from tests.support.pgcluster import PG_DSN, PgCluster

pytestmark = pytest.mark.timeout(90)


def _job_ids(split: dict[str, dict[str, str]]) -> dict[str, str]:
    return {room: job for rooms in split.values() for room, job in rooms.items()}


async def test_sigkill_moves_rooms_to_the_survivor_without_a_duplicate(cluster: Cluster) -> None:
    emu = cluster.emu
    assert emu is not None
    with DuplicateWatch(emu) as watch:
        cluster.start_daemon("A")
        cluster.start_daemon("B")
        split = await cluster.wait_split(["A", "B"], per_instance=3)
        jobs = _job_ids(split)
        starts = await emu.starts()
        assert starts == len(ROOMS6)

        killed_at = time.monotonic()
        cluster.daemons["B"][0].signal(signal.SIGKILL)
        after = await cluster.wait_split(["A"], per_instance=len(ROOMS6))
        failover_s = time.monotonic() - killed_at

        assert _job_ids(after) == jobs  # B's jobs adopted, not restarted
        assert await emu.starts() == starts
    print(f"failover kill->adopted: {failover_s:.2f}s (ttl {TTL_S}s); samples={watch.samples}")
    assert watch.samples > 0
    assert not watch.duplicates, f"duplicate jobs seen: {dict(watch.duplicates)}"
    gained = cluster.daemons["A"][0].events("rooms_lease_gained")
    assert set(split["B"]) <= {r for e in gained for r in e["rooms"]}


async def test_paused_instance_stands_down_and_its_late_writes_are_fenced(
    cluster: Cluster,
) -> None:
    emu = cluster.emu
    assert emu is not None
    with DuplicateWatch(emu) as watch:
        for name in ("A", "B", "C"):
            cluster.start_daemon(name)
        split = await cluster.wait_split(["A", "B", "C"], per_instance=2)
        jobs = _job_ids(split)
        starts = await emu.starts()
        before = await cluster.leases()
        c_rooms = sorted(split["C"])
        c_proc = cluster.daemons["C"][0]

        c_proc.signal(signal.SIGSTOP)
        try:
            taken = await cluster.wait_split(["A", "B"], per_instance=3)
            assert _job_ids(taken) == jobs
            moved = await cluster.leases()
            for room in c_rooms:
                owner, fence = moved[room]
                assert owner in ("A", "B") and fence > before[room][1], (room, moved[room])
        finally:
            c_proc.signal(signal.SIGCONT)

        async def fenced() -> list[str] | None:
            rooms = sorted({e["room_id"] for e in c_proc.events("room_fenced_out")})
            return rooms if rooms == c_rooms else None

        await eventually(fenced, what="C logs room_fenced_out for its old rooms", diag=cluster.diag)
        refused = c_proc.events("store_fenced_out")
        assert {e["room_id"] for e in refused} == set(c_rooms)
        assert all(e["fence"] == before[e["room_id"]][1] for e in refused)
        # the store kept the new owners' leases; C rejoins and gets its fair share back by adoption
        back = await cluster.wait_split(["A", "B", "C"], per_instance=2)
        assert _job_ids(back) == jobs
        assert await emu.starts() == starts
    assert watch.samples > 0
    assert not watch.duplicates, f"duplicate jobs seen: {dict(watch.duplicates)}"


@pytest.fixture
async def private_pg(require_service: Callable[[str], None]) -> AsyncIterator[PgCluster]:
    """A PostgreSQL of this test alone: restarting the shared one breaks every other test."""
    require_service("postgres-server")
    pg = PgCluster()
    try:
        await asyncio.to_thread(pg.start)
        yield pg
    finally:
        await asyncio.to_thread(pg.destroy)


@pytest.fixture
async def private_cluster(tmp_path: Path, private_pg: PgCluster) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, ROOMS6, dsn=private_pg.dsn)
    try:
        await c.start_emulator()
        yield c
    finally:
        await c.aclose()


def _pg_up(dsn: str) -> Callable[[], Awaitable[bool | None]]:
    async def probe() -> bool | None:
        try:
            conn = await asyncpg.connect(dsn, timeout=1.0)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return None
        await conn.close()
        return True

    return probe


async def _started_at(dsn: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5.0)
    try:
        return await conn.fetchval("SELECT pg_postmaster_start_time()")
    finally:
        await conn.close()


async def test_postgresql_restart_keeps_streams_and_ownership_resumes(
    private_cluster: Cluster, private_pg: PgCluster, require_service: Callable[[str], None]
) -> None:
    require_service("postgres")
    shared_started = await _started_at(PG_DSN)
    private_started = await _started_at(private_pg.dsn)
    cluster = private_cluster
    emu = cluster.emu
    assert emu is not None
    with DuplicateWatch(emu) as watch:
        cluster.start_daemon("A")
        cluster.start_daemon("B")
        split = await cluster.wait_split(["A", "B"], per_instance=3)
        jobs = _job_ids(split)
        starts = await emu.starts()

        await asyncio.to_thread(private_pg.restart)
        await eventually(_pg_up(private_pg.dsn), what="PostgreSQL accepts connections again")
        assert await emu.running() == {room: [job] for room, job in jobs.items()}

        back = await cluster.wait_split(["A", "B"], per_instance=3, timeout=45)
        assert _job_ids(back) == jobs
        assert await emu.starts() == starts
    assert watch.samples > 0
    assert not watch.duplicates, f"duplicate jobs seen: {dict(watch.duplicates)}"
    assert await _started_at(private_pg.dsn) != private_started, "the private server restarted"
    assert await _started_at(PG_DSN) == shared_started, "the shared server was left alone"
