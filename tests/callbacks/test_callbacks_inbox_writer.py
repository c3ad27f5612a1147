"""InboxWriter's group commit: a lone callback is committed at once; under load they share."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from orchestrator.callbacks.receiver import InboxWriter
from orchestrator.store.base import InboxItem
from orchestrator.store.memory import MemoryStore


class GatedStore(MemoryStore):
    """The in-memory store, recording each inbox commit, which can be held open at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def inbox_append(self, items: Sequence[InboxItem]) -> list[bool]:
        self.entered.set()
        await self.gate.wait()
        self.batches.append([i.dedupe_key for i in items])
        return await super().inbox_append(items)


def item(key: str) -> InboxItem:
    return InboxItem(key, "r1", "j1", "RTMP_STATE", {}, datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_lone_callback_does_not_wait_for_company() -> None:
    store = GatedStore()
    writer = InboxWriter(store, linger_s=3600.0)
    assert await asyncio.wait_for(writer.append(item("a")), timeout=5) is True
    assert store.batches == [["a"]]


async def test_callbacks_arriving_during_a_commit_share_the_next_one() -> None:
    store = GatedStore()
    writer = InboxWriter(store, linger_s=0.001)
    store.gate.clear()
    first = asyncio.create_task(writer.append(item("a")))
    await asyncio.wait_for(store.entered.wait(), timeout=5)
    rest = [asyncio.create_task(writer.append(item(k))) for k in "bcd"]
    await asyncio.sleep(0)  # let them queue behind the open commit
    store.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5) == [True] * 4
    assert store.batches == [["a"], ["b", "c", "d"]]


async def test_a_duplicate_within_one_commit_is_new_only_once() -> None:
    store = GatedStore()
    writer = InboxWriter(store, linger_s=0.001)
    store.gate.clear()
    first = asyncio.create_task(writer.append(item("a")))
    await asyncio.wait_for(store.entered.wait(), timeout=5)
    rest = [asyncio.create_task(writer.append(item(k))) for k in ("b", "b", "a")]
    await asyncio.sleep(0)
    store.gate.set()
    flags = await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5)
    assert flags == [True, True, False, False]
    assert store.batches == [["a"], ["b", "a"]]  # one row per key and commit; the store dedupes "a"
    assert writer.batches == 2
    assert [p.dedupe_key for p in await store.inbox_pending()] == ["a", "b"]
