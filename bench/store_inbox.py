"""Measure ``SqlStore.inbox_append`` throughput in batches (a quick measurement, not a test).

Usage::

    .venv/bin/python bench/store_inbox.py [--batches 200] [--batch-size 100] [--writers 1]
        [--sqlite-only]

Prints persisted callbacks per second for SQLite (a fresh temp file, WAL + synchronous=NORMAL)
and for PostgreSQL at 127.0.0.1:5432/test (a throwaway schema, dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import structlog

from orchestrator.store import InboxItem, SqlStore
from tests.support.pgcluster import PG_DSN, PG_URL


def _batch(writer: int, n: int, size: int) -> list[InboxItem]:
    now = datetime.now(UTC)
    return [
        InboxItem(
            dedupe_key=f"job-{writer}-{n}:RTMP_STATE:CONNECTED:{i}",
            room_id=f"room-{i % 50}",
            job_id=f"job-{writer}-{n}",
            event_type="RTMP_STATE",
            payload={"event_type": "RTMP_STATE", "state": "CONNECTED", "seq": i},
            received_at=now,
            event_time=now,
        )
        for i in range(size)
    ]


async def _run(store: SqlStore, batches: int, size: int, writers: int) -> float:
    await store.inbox_append(_batch(-1, 0, size))  # warm up the pool and statement cache

    async def writer(w: int) -> None:
        for n in range(batches // writers):
            flags = await store.inbox_append(_batch(w, n, size))
            assert all(flags)

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - start
    return (batches // writers) * writers * size / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as tmp:
        store = SqlStore(f"sqlite+aiosqlite:///{tmp}/bench.db")
        await store.open()
        try:
            rate = await _run(store, args.batches, args.batch_size, args.writers)
        finally:
            await store.close()
    print(f"sqlite     batch={args.batch_size} writers={args.writers}: {rate:,.0f} callbacks/s")

    if args.sqlite_only:
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    store = SqlStore(PG_URL, schema=schema)
    await store.open()
    try:
        rate = await _run(store, args.batches, args.batch_size, args.writers)
    finally:
        await store.close()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
    print(f"postgresql batch={args.batch_size} writers={args.writers}: {rate:,.0f} callbacks/s")


if __name__ == "__main__":
    asyncio.run(main())
