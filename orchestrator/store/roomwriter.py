"""Group commit for rooms' state writes.

Every room's worker saves its state (and audit row) before acting, one transaction each. When
thousands of rooms change at once — adoption at boot, a window opening for every room, a burst
of drops — those transactions queue behind the store's single writer, and each room's action
waits for its turn: adopting 2,000 rooms made 6,000 commits, one after the other.

:class:`RoomWriter` keeps each room's guarantee (its ``save`` returns only when its own write
is committed, and raises if it was not) while sharing commits: a write arriving while a commit
runs goes into the next one, together with everything else that arrived meanwhile. An idle
store commits a lone write at once: there is no lingering, so a single room's reaction is not
slowed down.
"""

from __future__ import annotations

import asyncio

from orchestrator.store.base import RoomWrite, Store

__all__ = ["RoomWriter"]


class RoomWriter:
    """Shares commits between concurrent :meth:`Store.save_room` calls (see module doc)."""

    def __init__(self, store: Store, *, max_batch: int = 500) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: list[tuple[RoomWrite, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0
        """Transactions so far (tests, bench)."""

    async def save(self, write: RoomWrite) -> None:
        """Like ``Store.save_room``: returns once committed; raises FencedOut or StoreError."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((write, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="store:room-writer")
        await fut

    async def drain(self) -> None:
        """Wait until the writes already handed over are committed (or failed).

        For the owner's shutdown: a room cancelled mid-``save`` leaves its write to the flusher
        ("the write stands"), and that task must not outlive the owner into a closed store.
        """
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush_loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                results: list[BaseException | None] = list(
                    await self._store.save_rooms([w for w, _ in batch])
                )
                if len(results) != len(batch):
                    raise RuntimeError("save_rooms returned a wrong number of results")
                self.commits += 1
            except Exception as exc:
                # One room's bad write (or a bug) must not fail its neighbours: write each
                # alone, so every room learns its own outcome.
                results = [exc] if len(batch) == 1 else [await self._alone(w) for w, _ in batch]
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():  # its room was cancelled meanwhile (the write stands)
                    continue
                if result is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(result)

    async def _alone(self, w: RoomWrite) -> BaseException | None:
        try:
            await self._store.save_room(w.room_id, w.state, fence=w.fence, transition=w.transition)
        except Exception as exc:  # handed to that room's waiter
            return exc
        self.commits += 1
        return None
