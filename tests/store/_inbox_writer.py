"""Subprocess for the durability test: appends inbox batches forever, printing after each commit.

Usage: python _inbox_writer.py <sqlite-url>. Prints ``committed <n>`` once batch ``n`` is
committed; the parent SIGKILLs it and checks every reported batch survived.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from orchestrator.store.base import InboxItem
from orchestrator.store.sql import SqlStore

BATCH = 50


async def main(url: str) -> None:
    store = SqlStore(url)
    await store.open()
    print("ready", flush=True)
    n = 0
    while True:
        now = datetime.now(UTC)
        items = [
            InboxItem(f"b{n}-{i}", "r1", "j1", "RTMP_STATE", {"n": n, "i": i}, now)
            for i in range(BATCH)
        ]
        await store.inbox_append(items)
        print(f"committed {n}", flush=True)
        n += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
