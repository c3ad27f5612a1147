"""InboxWriter's group commit: a lone callback is committed at once; under load they share."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from orchestrator.callbacks.receiver import InboxWriter
from orchestrator.store.base import InboxItem


class GatedStore:
    """Just the part of the Store the writer uses; each commit can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def inbox_append(self, items: Sequence[InboxItem]) -> list[bool]:
        self.entered.set()
        await self.gate.wait()
        self.batches.append([i.dedupe_key for i in items])
        return [True] * len(items)


def item(key: str) -> InboxItem:
    return InboxItem(key, "r1", "j1", "RTMP_STATE", {}, datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_lone_callback_does_not_wait_for_company() -> None:
    store = GatedStore()
    writer = InboxWriter(store, linger_s=3600.0)  # type: ignore[arg-type]
    assert await asyncio.wait_for(writer.append(item("a")), timeout=5) is True
    assert store.batches == [["a"]]


async def test_callbacks_arriving_during_a_commit_share_the_next_one() -> None:
    store = GatedStore()
    writer = InboxWriter(store, linger_s=0.001)  # type: ignore[arg-type]
    store.gate.clear()
    first = asyncio.create_task(writer.append(item("a")))
    await asyncio.wait_for(store.entered.wait(), timeout=5)
    rest = [asyncio.create_task(writer.append(item(k))) for k in "bcd"]
    await asyncio.sleep(0)  # let them queue behind the open commit
    store.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *rest), timeout=5) == [True] * 4
    assert store.batches == [["a"], ["b", "c", "d"]]
