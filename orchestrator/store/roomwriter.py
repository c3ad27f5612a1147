"""Group commit for rooms' state writes.

Every room's worker saves its state (and audit row) before acting, one transaction each. When
thousands of rooms change at once — adoption at boot, a window opening for every room, a burst of
drops — those transactions queue behind the store's single writer, and each room's action waits for
its turn: adopting 2,000 rooms made 6,000 commits, one after the other.

:class:`RoomWriter` (over :mod:`orchestrator.store.groupcommit`) keeps each room's guarantee (its
``save`` returns only when its own write is committed, and raises if it was not) while sharing
commits: a write arriving while a commit runs goes into the next one, together with everything else
that arrived meanwhile. An idle store commits a lone write at once: there is no lingering, so a
single room's reaction is not slowed down.
"""

from __future__ import annotations

from orchestrator.store.base import RoomStore, RoomWrite
from orchestrator.store.groupcommit import GroupCommit

__all__ = ["RoomWriter"]


class RoomWriter:
    """Shares commits between concurrent :meth:`Store.save_room` calls (see module doc)."""

    def __init__(self, store: RoomStore, *, max_batch: int = 500) -> None:
        self._store = store
        self._group: GroupCommit[RoomWrite, None] = GroupCommit(
            self._commit, name="store:room-writer", max_batch=max_batch
        )
        self.commits = 0
        """Transactions so far (tests, bench)."""

    async def save(self, write: RoomWrite) -> None:
        """Like ``Store.save_room``: returns once committed; raises FencedOut or StoreError."""
        await self._group.submit(write)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) for the writes already handed over.

        For the owner's shutdown: a room cancelled mid-``save`` leaves its write to the flusher
        ("the write stands"), and that task must not outlive the owner into a closed store.
        """
        await self._group.drain(timeout_s)

    async def _commit(self, writes: list[RoomWrite]) -> list[BaseException | None]:
        try:
            results: list[BaseException | None] = list(await self._store.save_rooms(writes))
            if len(results) != len(writes):
                raise RuntimeError("save_rooms returned a wrong number of results")
        except Exception as exc:
            # One room's bad write (or a bug) must not fail its neighbours: write each
            # alone, so every room learns its own outcome.
            return [exc] if len(writes) == 1 else [await self._alone(w) for w in writes]
        self.commits += 1
        return results

    async def _alone(self, w: RoomWrite) -> BaseException | None:
        try:
            await self._store.save_room(w.room_id, w.state, fence=w.fence, transition=w.transition)
        except Exception as exc:  # handed to that room's waiter
            return exc
        self.commits += 1
        return None
