"""The durable inbox of callbacks: the group-committing writer (:class:`InboxWriter`) and the
startup replay of pending items (:func:`replay_inbox`), which is what makes "200 sent, then
crashed" lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from orchestrator.callbacks.dispatch import Dispatcher, OnEvent, order_time
from orchestrator.callbacks.parse import CallbackParseError, event_from_message
from orchestrator.rooms.model import RoomSink
from orchestrator.store.base import InboxItem, InboxStore, StoreError
from orchestrator.store.groupcommit import GroupCommit

log = structlog.get_logger(__name__)

# --- group-committing inbox writer -----------------------------------------------------------


class InboxWriter:
    """Group commit for ``store.inbox_append``: one transaction for all requests waiting.

    Each :meth:`append` awaits its own item's commit (:mod:`orchestrator.store.groupcommit`).
    While a commit runs, new items queue up and go together in the next one; under load,
    ``linger_s`` waits a little for company, while a lone callback on an idle daemon is
    committed at once, since its room's reaction waits for that commit (the react bench: 2 ms
    of every drop). Done-marking is batched too, without waiters.
    """

    def __init__(
        self,
        store: InboxStore,
        *,
        linger_s: float = 0.002,
        max_batch: int = 500,
        notify_channel: str | None = None,
    ) -> None:
        self._store = store
        self._notify_channel = notify_channel  # several instances: see CallbackRoute
        self._linger_s = linger_s
        self._group: GroupCommit[InboxItem, bool] = GroupCommit(
            self._commit, name="callback-inbox-writer", max_batch=max_batch, linger_s=linger_s
        )
        self._done_keys: dict[str, None] = {}  # insertion-ordered set
        self._done_ids: list[int] = []
        self._doner: asyncio.Task[None] | None = None
        self.batches = 0
        """Number of commits so far (observability for tests and the bench)."""

    async def append(self, item: InboxItem) -> bool:
        """True when stored, False when an item with the same dedupe key already exists."""
        return await self._group.submit(item)

    async def _commit(self, items: list[InboxItem]) -> list[bool]:
        first: dict[str, int] = {}  # dedupe key -> position of its first item in the batch
        for pos, it in enumerate(items):
            first.setdefault(it.dedupe_key, pos)
        batch = [items[pos] for pos in first.values()]
        if self._notify_channel is None:
            flags = await self._store.inbox_append(batch)
        else:
            flags = await self._store.inbox_append(batch, notify_channel=self._notify_channel)
        if len(flags) != len(first):
            raise StoreError("inbox_append returned a wrong number of flags")
        self.batches += 1
        flag = dict(zip(first, flags, strict=True))
        # a key repeated within the batch is new at most for its first item
        return [flag[it.dedupe_key] and first[it.dedupe_key] == pos for pos, it in enumerate(items)]

    def mark_done(self, *, item_id: int | None = None, key: str | None = None) -> None:
        """Queue a processed item for ``inbox_done`` (by id) or ``inbox_done_keys`` (by key)."""
        if item_id is not None:
            self._done_ids.append(item_id)
        elif key is not None:
            self._done_keys[key] = None
        else:
            return
        if self._doner is None or self._doner.done():
            self._doner = asyncio.create_task(self._done_loop(), name="callback-inbox-done")

    async def _done_loop(self) -> None:
        while self._done_ids or self._done_keys:
            if self._linger_s > 0:
                await asyncio.sleep(self._linger_s)
            try:
                await self._flush_done()
            except Exception:  # the items stay pending; replay at startup re-posts them
                log.exception("callback_inbox_done_failed")
                return

    async def _flush_done(self) -> None:
        ids, self._done_ids = self._done_ids, []
        keys, self._done_keys = list(self._done_keys), {}
        if keys:
            await self._store.inbox_done_keys(keys)
        if ids:
            await self._store.inbox_done(ids)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for queued commits and done-marks (graceful shutdown, tests)."""
        tasks = [t for t in (self._group.flusher, self._doner) if t is not None and not t.done()]
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)


@dataclass(slots=True)
class _ReplayStats:
    seen: set[int] = field(default_factory=set)
    posted: int = 0


async def replay_inbox(
    store: InboxStore,
    sink: RoomSink,
    *,
    room_for_job: Callable[[str], str | None],
    on_event: OnEvent | None = None,
    dispatcher: Dispatcher | None = None,
    limit: int = 500,
) -> int:
    """Dispatch every pending inbox item (oldest event first) and mark it done; returns the count.

    Run once at startup before serving callbacks: it is what makes "200 sent, then crashed"
    lose nothing. Unreadable rows are logged and marked done (they can never succeed).
    """
    disp = dispatcher or Dispatcher(sink=sink, room_for_job=room_for_job, on_event=on_event)
    stats = _ReplayStats()
    while True:
        batch = [
            it
            for it in await store.inbox_pending(limit)
            if it.id is not None and it.id not in stats.seen
        ]
        if not batch:
            break
        batch.sort(key=lambda it: (it.event_time or it.received_at, it.id or 0))
        done: list[int] = []
        for it in batch:
            assert it.id is not None
            stats.seen.add(it.id)
            done.append(it.id)
            try:
                payload = it.payload
                event = event_from_message(
                    str(payload.get("event_type", it.event_type)),
                    payload.get("message") or {},
                    payload.get("extra") or {},
                )
            except (CallbackParseError, TypeError, AttributeError) as exc:
                reason = exc.reason if isinstance(exc, CallbackParseError) else "bad_payload"
                log.error("callback_replay_unreadable", item_id=it.id, reason=reason)
                continue
            await disp.dispatch(event, order_time(it), it.dedupe_key)
            stats.posted += 1
        await store.inbox_done(done)
        log.info("callback_replayed", count=len(done))
    return stats.posted
