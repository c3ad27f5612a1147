"""Callbacks to any instance: the receiver stores them, the owner of the job's room acts.

Several instances share rooms by leases, but MetaStudio sends a job's callbacks to one URL: the
instance that started the job, a balancer in front of all of them, or the MQTT relay that every
instance consumes. Whichever instance receives a callback verifies it and commits it to the
shared inbox (``callbacks.receiver``); then:

* if a room here takes it (this instance owns the job's room, or no instance's room would:
  an unconfigured room), it is handled here as on a single instance;
* otherwise the item is stored ``for_owner``: PostgreSQL announces it on the ``inbox`` signal
  in the same transaction (``NOTIFY`` is delivered on commit, dropped on rollback), and the
  receiver neither posts it nor marks it done.

Every instance LISTENs (``store.notify``). The one that supervises the item's room *claims*
it (``InboxStore.inbox_claim``: marked processed by one ``UPDATE ... RETURNING``, only while
the claimant's lease on the room is unexpired) and dispatches it to the room exactly as the
receiver would have (ordering, retry suppression, the ``on_event`` hook). So:

* nothing is applied twice: only the owner claims, and a claim succeeds once;
* a non-owner never posts to a room it does not own (it only stores and announces);
* nothing is lost to a failover: the new owner claims its rooms' pending items right after
  gaining them (:meth:`CallbackHandoff.gained`), and every instance claims what it may have
  missed each time its listening connection is (re)made (:meth:`CallbackHandoff.resync`):
  a notification sent while nobody listened is gone, the row is not.

On SQLite (one instance) nothing changes: no route is installed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from orchestrator.backoff import Backoff
from orchestrator.callbacks.dispatch import Dispatcher, order_time
from orchestrator.callbacks.parse import CallbackEvent, CallbackParseError, event_from_message
from orchestrator.clock import Clock
from orchestrator.settings import StoreSettings
from orchestrator.store.base import InboxItem, InboxStore, StoreError
from orchestrator.store.notify import Signals, channel_name

__all__ = ["INBOX_TOPIC", "CallbackHandoff", "Rooms", "inbox_channel"]

log = structlog.get_logger(__name__)

INBOX_TOPIC = "inbox"
"""The signal topic of items left for their owner (payload: ``[[id, room, job], ...]``)."""

_PENDING_PAGE = 500  # items read per replay query


def inbox_channel(store: StoreSettings) -> str | None:
    """The channel the store announces items for their owner on, in its own transaction
    (PostgreSQL only: SQLite has no NOTIFY, the hand-off announces after the commit)."""
    if not store.url.startswith("postgresql"):
        return None
    return channel_name(store.pg_schema or "", INBOX_TOPIC)


class Rooms(Protocol):
    """What the hand-off needs of the room supervisor."""

    def supervises(self, room_id: str) -> bool: ...
    def room_for_job(self, job_id: str) -> str | None: ...
    def room_ids(self) -> list[str]: ...


class CallbackHandoff:
    """The intake's route (``callbacks.receiver.CallbackRoute``) and the owner's claimer.

    ``channel`` is the signal channel the store announces ``for_owner`` items on inside its
    transaction (PostgreSQL); None when the store cannot (SQLite), in which case
    :meth:`elsewhere` announces through ``signals`` after the commit. ``configured(room)``
    says whether a room is one of the fleet's (the configuration is the same everywhere).
    """

    def __init__(
        self,
        store: InboxStore,
        *,
        owner: str,
        rooms: Rooms,
        configured: Callable[[str], bool],
        clock: Clock,
        signals: Signals,
        channel: str | None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._rooms = rooms
        self._configured = configured
        self._clock = clock
        self._signals = signals
        self.channel = channel
        self.dispatcher: Dispatcher | None = None
        """Set once the intake exists: claimed items go through its ordering state."""
        self._wanted: set[int] = set()
        self._wanted_rooms: set[str] = set()  # announced without an id: claim the room's rows
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one claim-and-dispatch at a time: a job's events in order
        self._tasks: set[asyncio.Task[None]] = set()
        self.claimed = 0
        """Items this instance claimed and dispatched (tests, logs)."""
        signals.subscribe(INBOX_TOPIC, self.on_signal)
        signals.on_resync(self.resync)

    # --- the intake's route ---------------------------------------------------------------

    def here(self, event: CallbackEvent) -> bool:
        """A room here takes it: its job's room is ours, or its room is nobody's (not in the
        fleet's configuration: handled here as an unknown job, as on one instance)."""
        if event.job_id is not None and self._rooms.room_for_job(event.job_id) is not None:
            return True
        room = event.room_id
        if room is None or not self._configured(room):
            return True
        return self._rooms.supervises(room)

    def elsewhere(self, item: InboxItem) -> None:
        """Left pending for the owner. Stored ``for_owner`` on PostgreSQL: already announced.
        Otherwise (the room changed hands between storing and handing over, or SQLite):
        announce it now; the owner's gain or resync finds it if this is lost."""
        log.info(
            "callback_for_owner",
            room_id=item.room_id,
            job_id=item.job_id,
            dedupe_key=item.dedupe_key,
        )
        if item.for_owner and self.channel is not None:
            return
        entry: list[object] = [item.id, item.room_id, item.job_id]
        task = asyncio.create_task(self._announce(entry), name="callback-announce")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, entry: Sequence[object]) -> None:
        # The intake's item has no id (the store assigned it): announced as [null, room, job],
        # on which the owner claims the room's pending items.
        try:
            await self._signals.publish(INBOX_TOPIC, json.dumps([entry]))
        except Exception as exc:  # the owner's resync or gain still finds the row
            log.warning("callback_announce_failed", error=f"{type(exc).__name__}: {exc}"[:300])

    # --- the owner's side -----------------------------------------------------------------

    def on_signal(self, payload: str) -> None:
        """Items announced by a receiver: keep those of rooms this instance works on."""
        try:
            entries = [e for e in json.loads(payload) if self._mine(e[1], e[2])]
            ids = {int(e[0]) for e in entries if e[0] is not None}
            rooms = {str(e[1]) for e in entries if e[0] is None and isinstance(e[1], str)}
        except (ValueError, TypeError, IndexError, KeyError):
            log.warning("callback_signal_unreadable", payload=payload[:200])
            return
        if ids or rooms:
            self._wanted.update(ids)
            self._wanted_rooms.update(rooms)
            self._wake.set()

    def _mine(self, room: object, job: object) -> bool:
        if isinstance(room, str) and self._rooms.supervises(room):
            return True
        return isinstance(job, str) and self._rooms.room_for_job(job) is not None

    async def run(self) -> None:
        """Claim and dispatch announced items until cancelled. A claim the store refused is
        tried again (the rows stay pending meanwhile; a resync or a gain may get them first)."""
        backoff = Backoff(base_s=0.2, cap_s=5.0)
        while True:
            await self._wake.wait()
            self._wake.clear()
            ids, self._wanted = sorted(self._wanted), set()
            rooms, self._wanted_rooms = sorted(self._wanted_rooms), set()
            try:
                await self._claim(ids, owner=self._owner, cause="signal")
                await self._replay(rooms, cause="signal")
            except StoreError as exc:
                self._wanted.update(ids)
                self._wanted_rooms.update(rooms)
                delay = backoff.next_delay()
                log.warning(
                    "callback_claim_failed",
                    error=str(exc)[:300],
                    items=len(ids),
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                self._wake.set()
            else:
                backoff.reset()

    async def gained(self, room_ids: Sequence[str]) -> None:
        """Rooms just taken over: claim what was left for them (their previous owner's
        unhandled callbacks, and those that arrived while nobody owned them)."""
        rooms = [r for r in room_ids if self._rooms.supervises(r)]
        await self._replay(rooms, cause="gained")

    async def resync(self) -> None:
        """After every (re)connect of the listening connection: claim what a lost
        notification would have announced, for every room this instance works on."""
        await self._replay(self._rooms.room_ids(), cause="resync")

    async def _replay(self, rooms: Sequence[str], *, cause: str) -> None:
        if not rooms:
            return
        seen: set[int] = set()
        while True:
            items = [
                it
                for it in await self._store.inbox_pending_for(rooms, _PENDING_PAGE)
                if it.id is not None and it.id not in seen
            ]
            if not items:
                return
            ids = [it.id for it in items if it.id is not None]
            seen.update(ids)
            await self._claim(ids, owner=self._owner, cause=cause)

    async def _claim(self, ids: Sequence[int], *, owner: str | None, cause: str) -> None:
        if not ids:
            return
        async with self._lock:
            items = await self._store.inbox_claim(ids, owner=owner, now=self._clock.now())
            items.sort(key=lambda it: (order_time(it), it.id or 0))
            for it in items:
                await self._dispatch(it, cause)

    async def _dispatch(self, item: InboxItem, cause: str) -> None:
        assert self.dispatcher is not None, "the intake sets the dispatcher before serving"
        try:
            payload = item.payload
            event = event_from_message(
                str(payload.get("event_type", item.event_type)),
                payload.get("message") or {},
                payload.get("extra") or {},
            )
        except (CallbackParseError, TypeError, AttributeError) as exc:
            reason = exc.reason if isinstance(exc, CallbackParseError) else "bad_payload"
            log.error("callback_handoff_unreadable", item_id=item.id, reason=reason)
            return
        outcome = await self.dispatcher.dispatch(event, order_time(item), item.dedupe_key)
        self.claimed += 1
        self.dispatcher.metrics.callback(event.event_type, "handed_over")
        log.info(
            "callback_handed_over",
            item_id=item.id,
            dedupe_key=item.dedupe_key,
            room_id=item.room_id,
            job_id=item.job_id,
            event_type=event.event_type,
            state=event.state,
            outcome=outcome,
            cause=cause,
            via=payload.get("via"),
            # receipt by any instance → posted to the room here (clocks agree: NTP)
            handoff_ms=round((self._clock.now() - item.received_at).total_seconds() * 1000, 2),
        )
