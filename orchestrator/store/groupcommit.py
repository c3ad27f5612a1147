"""Group commit: concurrent callers share transactions, each still learning its own outcome.

Two writers need it: rooms' state saves (:mod:`orchestrator.store.roomwriter`) and verified
callbacks (``callbacks.inbox.InboxWriter``). Each caller's :meth:`GroupCommit.submit`
returns only once *its* item is committed (or raises what its item got). While one commit runs,
new items queue and go together into the next one. An idle writer commits a lone item at once;
``linger_s`` (waiting a little for company) applies only under load, when the last commit had
company or the queue already has some, so a single room's reaction is never slowed down.

The flusher task exits when the queue is empty and is started again on demand: there is nothing
to start or stop, and :meth:`GroupCommit.drain` waits for what is queued (shutdown, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["CommitBatch", "GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

CommitBatch = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
"""Commits a batch; returns one outcome per item, in order: a result or the item's exception.
Raising fails every item of the batch with that exception."""


class GroupCommit(Generic[T, R]):
    """Batches :meth:`submit` calls into calls of ``commit`` (see module doc)."""

    def __init__(
        self,
        commit: CommitBatch[T, R],
        *,
        name: str,
        max_batch: int = 500,
        linger_s: float = 0.0,
    ) -> None:
        self._commit = commit
        self._name = name
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Returns the item's result once its batch is committed; raises the item's error."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name=self._name)
        return await fut

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (at most ``timeout_s``) for the queued items' commits."""
        task = self._flusher
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout_s)

    @property
    def flusher(self) -> asyncio.Task[None] | None:
        """The running flusher task, if any (for callers that wait on several writers)."""
        return self._flusher

    async def _flush_loop(self) -> None:
        busy = False
        while self._queue:
            if busy and self._linger_s > 0 and len(self._queue) < self._max_batch:
                await asyncio.sleep(self._linger_s)  # group concurrent requests into one commit
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            await self._run(batch)
            busy = len(batch) > 1 or bool(self._queue)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = await self._commit([item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{self._name}: commit returned a wrong number of outcomes")
        except Exception as exc:  # every waiter must learn the outcome, whatever it was
            outcomes = [exc] * len(batch)
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if fut.done():  # its caller was cancelled meanwhile (the write stands)
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
