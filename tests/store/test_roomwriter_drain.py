"""RoomWriter.drain: a write whose room was cancelled mid-save still commits, and the flusher
does not outlive its owner (found by the leak check in tests/conftest.py: the supervisor's
RoomWriter task was still pending when the tests closed the store)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from orchestrator.store.base import FencedOut, RoomWrite, Store
from orchestrator.store.roomwriter import RoomWriter


class _GatedStore:
    """``save_rooms`` holds each commit until the test opens the gate (our own seam)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.saved: list[str] = []

    async def save_rooms(self, writes: Sequence[RoomWrite]) -> list[FencedOut | None]:
        self.entered.set()
        await self.gate.wait()
        self.saved += [w.room_id for w in writes]
        return [None] * len(writes)

    async def save_room(self, room_id: str, state: Any, **_: Any) -> None:
        raise AssertionError("batches succeed here")


async def test_a_cancelled_save_still_commits_and_drain_waits_for_it() -> None:
    store = _GatedStore()
    writer = RoomWriter(cast(Store, store))
    saver = asyncio.create_task(writer.save(RoomWrite("r1", {"v": 1})))
    await store.entered.wait()
    saver.cancel()  # the room's worker is cancelled while its commit runs
    await asyncio.gather(saver, return_exceptions=True)
    draining = asyncio.create_task(writer.drain())
    await asyncio.sleep(0)  # let drain start waiting on the flusher
    assert not draining.done()  # the commit is still in flight: drain must not return
    store.gate.set()
    await asyncio.wait_for(draining, 5)
    assert store.saved == ["r1"]


async def test_drain_without_writes_returns_at_once() -> None:
    await asyncio.wait_for(RoomWriter(cast(Store, _GatedStore())).drain(), 5)
