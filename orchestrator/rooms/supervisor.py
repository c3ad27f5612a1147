"""The driver of the room machines: one worker per room, I/O at the edges. This is the facade;
the parts are:

* ``rooms.worker`` — a room's queue, task, timer, config and crash throttle;
* ``rooms.effects`` — one table from action type to the coroutine that carries it out;
* ``rooms.tenant`` — startup adoption and the tenant-wide poll;
* ``rooms.recorder`` — a step's stored state, audit and alert rows, and the listeners.

Each room's worker takes one event at a time: :meth:`RoomSupervisor._handle` runs the pure
``step``, records the new state (durable before any listener hears of it) and carries out the
returned actions. An action's outcome — answer, error or timeout — becomes an event posted back
into the same queue, so a room's events are handled strictly in order while rooms run in
parallel. A single instance sends repairs and reads (never a start or a stop) while the state
commits, so a drop's refresh does not wait for a commit (see ``_SEND_WHILE_SAVING``). Nothing
one room does can stop another's worker.

Several instances (``orchestrator.ownership``): a room is only worked on while this instance
owns it. ``take_over`` starts supervising rooms whose leases we gained (last stored state,
then UNKNOWN → list-and-adopt, never a blind start); every store write for a room carries the
fence of the lease it was taken with; a ``FencedOut`` from the store, or the ``owns`` check
failing before an event or an action, makes the room stand down at once (``room_fenced_out`` /
``room_stood_down``): no further action, the job keeps running for the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog

from orchestrator.clock import Clock
from orchestrator.control import CommandError
from orchestrator.rooms.effects import AdoptHints, CloudPort, Effects, Replies
from orchestrator.rooms.machine import step
from orchestrator.rooms.model import (
    Action,
    Event,
    InsertScriptRequested,
    ListJobs,
    ObservedJob,
    Order,
    OrderChanged,
    OutputChanged,
    Poked,
    RefreshOutput,
    ResetExitConfig,
    Room,
    RoomState,
    SetTimer,
    ShowJob,
    Snapshot,
)
from orchestrator.rooms.recorder import AlertChange, Recorder, Transition, durable_change
from orchestrator.rooms.tenant import AdoptionReport, TenantPoll
from orchestrator.rooms.worker import NotOwned, RoomConfigs, RoomWorker, WorkerContext, restored
from orchestrator.settings import RoomSettings, Settings
from orchestrator.store.base import FencedOut, Store

__all__ = ["AdoptionReport", "AlertChange", "CloudPort", "RoomSupervisor", "Transition"]

log = structlog.get_logger(__name__)

_SEND_WHILE_SAVING = (RefreshOutput, ResetExitConfig, ShowJob, ListJobs, SetTimer)
"""Actions that may leave before the room's new state is committed (see ``_handle``): repairs
of the same job and reads. Never a start (its intent key must be durable first) nor a stop (the
stopped job must be durably retired, or a crash could adopt it again)."""
_REPLY_TIMEOUT_S = 60.0
"""How long ``insert_script`` waits for its room: the queue ahead of it plus the command call
(whose own timeouts and retries end well before). A request nobody answers ends here."""


class RoomSupervisor:
    """Implements :class:`~orchestrator.rooms.model.RoomSink` for every managed room."""

    def __init__(
        self,
        *,
        cloud: CloudPort,
        store: Store,
        rooms: Callable[[str], RoomSettings | None],
        room_ids: Callable[[], Sequence[str]],
        clock: Clock,
        rng: random.Random,
        settings: Callable[[], Settings] | None = None,
        listeners: Sequence[Callable[[Transition], None]] = (),
        owns: Callable[[str, datetime], bool] | None = None,
        on_dropped: Callable[[str, str], None] | None = None,
    ) -> None:
        """``room_ids()`` lists the rooms managed from the start; ``rooms(room_id)`` returns a
        room's current :class:`RoomSettings` (with runtime overrides). With ``settings()`` the
        config is re-resolved before every event, so a reload or an output override is seen
        without a restart.

        ``owns(room_id, now)`` (several instances) is asked before every event and every action;
        False stands the room down. ``on_dropped(room_id, reason)`` tells the ownership manager
        that the supervisor dropped a room by itself (``"fenced"`` or ``"not_owned"``).
        """
        self._store = store
        self._clock = clock
        self._rng = rng
        self._configs = RoomConfigs(rooms, settings)
        self._settled = asyncio.Event()  # set after every handled event, fired timer and poll
        self._ctx = WorkerContext(clock, rng, self._settled)
        self._workers: dict[str, RoomWorker] = {}
        for rid in room_ids():
            cfg = self._configs.resolve(rid)
            if cfg is not None:
                self._workers[rid] = RoomWorker(cfg, Room(room_id=rid), self._ctx)
        self._tg: asyncio.TaskGroup | None = None
        self._loaded = asyncio.Event()
        self._changed = asyncio.Event()
        self._job_rooms: dict[str, str] = {}
        self._owns = owns
        self._on_dropped = on_dropped
        self._recorder = Recorder(store, listeners, self._changed)
        hints = self._hints = AdoptHints(clock)
        self._replies = Replies()
        self._effects = Effects(cloud=cloud, store=store, hints=hints, replies=self._replies)
        self._tenant = TenantPoll(
            cloud=cloud, clock=clock, workers=self._workers, sink=self, hints=hints, owns=owns,
            settled=self._settled,
        )  # fmt: skip
        hints.listing = self._tenant.list_jobs

    # ------------------------------------------------------------------ RoomSink + views

    def post(self, room_id: str, event: Event) -> bool:
        w = self._workers.get(room_id)
        if w is None:
            return False
        w.post(event)
        return True

    def snapshot(self, room_id: str) -> Snapshot:
        return self._workers[room_id].room.snapshot()

    def snapshots(self) -> list[Snapshot]:
        return [w.room.snapshot() for _, w in sorted(self._workers.items())]

    def state_counts(self) -> dict[str, int]:
        """Rooms per state (no snapshots built: asked after every poll for the systemd
        status line)."""
        counts: dict[str, int] = {}
        for w in self._workers.values():
            key = w.room.state.value
            counts[key] = counts.get(key, 0) + 1
        return counts

    def room(self, room_id: str) -> Room:
        """The full machine state (tests, diagnostics)."""
        return self._workers[room_id].room

    def room_ids(self) -> list[str]:
        return sorted(self._workers)

    @property
    def room_count(self) -> int:
        return len(self._workers)

    @property
    def tenant_jobs_seen(self) -> int:
        """Running jobs in the tenant's last full listing (ours or not): sizes the poll."""
        return self._tenant.tenant_jobs_seen

    def supervises(self, room_id: str) -> bool:
        """True while this supervisor works on ``room_id`` (with leases: owns and took it)."""
        return room_id in self._workers

    def idle(self) -> bool:
        """Quiescent at the clock's now: no room has an event queued or in hand, no room timer
        due by now is still to post its event, and no poll is running.

        A timer due after a :class:`~orchestrator.clock.ManualClock` ``advance`` has only had
        its sleeper woken; until its task posts ``TimerFired`` (and the room handles it) this is
        False. Deterministic tests wait on :meth:`wait_idle` instead of sleeping.
        """
        if self._tenant.running:
            return False
        now = self._clock.now()
        return not any(w.pending(now) for w in self._workers.values())

    async def wait_idle(self) -> None:
        """Return once :meth:`idle` holds (bound it with a timeout: a room whose worker is
        backing off after a crash keeps its queue, and this waits for it)."""
        while not self.idle():
            self._settled.clear()
            await self._settled.wait()

    def room_for_job(self, job_id: str) -> str | None:
        """The managed room whose current job is ``job_id`` (callback routing), else None."""
        rid = self._job_rooms.get(job_id)
        if rid is not None:
            w = self._workers.get(rid)
            if w is not None and w.room.job_id == job_id:
                return rid
        for rid, w in self._workers.items():  # index miss (e.g. restored rooms): scan once
            if w.room.job_id == job_id:
                self._job_rooms[job_id] = rid
                return rid
        return None

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        self._recorder.listeners.append(listener)

    # ------------------------------------------------------------------ tenant reads

    async def adopt_all(self) -> AdoptionReport:
        """Startup: hand every managed room the tenant's running jobs (see ``rooms.tenant``)."""
        return await self._tenant.adopt_all()

    async def poll_once(self) -> None:
        """One paged tenant listing → an observation (or a poke) for every room."""
        await self._tenant.poll_once()

    async def list_tenant_jobs(self) -> dict[str, list[ObservedJob]]:
        """One paged tenant listing, room → running jobs, handed to nobody (the fleet reader)."""
        return await self._tenant.list_jobs()

    async def apply_listing(
        self, by_room: Mapping[str, Sequence[ObservedJob]], *, jobs_seen: int
    ) -> None:
        """Another instance's listing (the fleet reader's sweep) → this instance's rooms."""
        await self._tenant.apply_listing(by_room, jobs_seen=jobs_seen)

    # ------------------------------------------------------------------ operator requests

    async def insert_script(
        self, room_id: str, *, text: str, play_type: str, cause: str
    ) -> Mapping[str, Any]:
        """Have the room's live job speak ``text``: ``{"command_id", "job_id"}``.

        The room decides in turn with its other events (``InsertScriptRequested``: only LIVE
        or DEGRADED with a job); raises :class:`~orchestrator.control.CommandError`
        ``not_live`` when it refuses, ``cloud_error`` when the command call fails (or no
        answer comes within ``_REPLY_TIMEOUT_S``), ``unknown_room`` when it has no worker.
        """
        request_id, answer = self._replies.open(room_id)
        try:
            event = InsertScriptRequested(
                request_id=request_id, text=text, play_type=play_type, cause=cause
            )
            if not self.post(room_id, event):
                raise CommandError("unknown_room", f"room {room_id!r} has no worker")
            try:
                async with asyncio.timeout(_REPLY_TIMEOUT_S):
                    return await answer
            except TimeoutError:
                raise CommandError(
                    "cloud_error", f"room {room_id!r}: no answer within {_REPLY_TIMEOUT_S:g}s"
                ) from None
        finally:
            self._replies.close(request_id)

    # ------------------------------------------------------------------ reload

    def add_room(self, room_id: str) -> None:
        """Supervise a new room; it reconciles at once. (Already supervised: take its current
        config, and repair the live job if its outputs changed.)"""
        cfg = self._configs.resolve(room_id)
        if cfg is None:
            raise KeyError(room_id)
        current = self._workers.get(room_id)
        if current is not None:
            old, current.cfg, current.cfg_source = current.cfg, cfg, None
            if [(o.url, o.stream_key) for o in old.outputs] != [
                (o.url, o.stream_key) for o in cfg.outputs
            ]:
                current.post(OutputChanged(cause="reload:output"))
            return
        w = RoomWorker(cfg, Room(room_id=room_id), self._ctx)
        self._workers[room_id] = w
        if self._tg is not None:
            self._spawn(w)
        w.post(Poked(cause="reload:added"))

    async def remove_room(
        self,
        room_id: str,
        *,
        stop_job: bool = False,
        cause: str = "reload:removed",
        timeout_s: float = 30.0,
    ) -> None:
        """Stop supervising. Jobs are left alone unless ``stop_job`` (then stopped first,
        waiting up to ``timeout_s``)."""
        w = self._workers.get(room_id)
        if w is None:
            return
        if stop_job and w.task is not None:
            w.post(OrderChanged(order=Order.OFF, cause=cause))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_stopped([room_id]), timeout_s)
        self._workers.pop(room_id, None)
        for task in (w.task, w.timer):
            if task is not None:
                task.cancel()
        self._refuse_waiting(room_id, cause)

    # ------------------------------------------------------------------ ownership

    async def take_over(
        self,
        fences: Mapping[str, int | None],
        *,
        cause: str = "lease:gained",
        hints: Mapping[str, tuple[ObservedJob, ...]] | None = None,
    ) -> list[str]:
        """Start supervising rooms whose leases we just gained; returns the rooms taken.

        Each room starts from its last stored state (the previous owner's order and window, now
        UNKNOWN) and reconciles at once: list its jobs and adopt the running one. Rooms not
        configured here are skipped; a room already supervised only gets its new fence.

        ``hints``: a fresh *positive* tenant listing (the fleet's latest sweep) answers each
        gained room's first list, as ``adopt_all``'s does at boot, so taking over 3,000 rooms
        costs no list call per room; an empty or stale answer is never given.
        """
        if hints:
            self._hints.add({rid: js for rid, js in hints.items() if rid in fences})
        stored = await self._store.load_rooms()
        taken: list[str] = []
        for rid, fence in sorted(fences.items()):
            current = self._workers.get(rid)
            if current is not None:
                current.fence = fence
                continue
            cfg = self._configs.resolve(rid)
            if cfg is None:
                log.warning("room_take_over_unknown", room_id=rid)
                continue
            room = restored(rid, stored.get(rid)) or Room(room_id=rid)
            w = RoomWorker(cfg, room, self._ctx, fence=fence)
            self._workers[rid] = w
            if self._tg is not None:
                self._spawn(w)
            w.post(Poked(cause=cause))
            taken.append(rid)
        unanswered = [rid for rid in taken if not (hints and hints.get(rid))]
        if len(unanswered) > self._listing_pages():
            self._hints.expect(unanswered)  # one tenant listing answers them all (AdoptHints)
        if taken:
            log.info("rooms_taken_over", rooms=len(taken), cause=cause,
                     shared_listing=len(unanswered) > self._listing_pages())  # fmt: skip
        return taken

    def _listing_pages(self) -> int:
        """What one tenant listing costs in queries (100 jobs a page), at the last known size."""
        return -(-max(self._tenant.tenant_jobs_seen, len(self._workers)) // 100)

    async def stand_down(self, room_ids: Sequence[str], *, cause: str, wait_s: float = 0.0) -> None:
        """Stop working on rooms without stopping their jobs (another instance adopts them).

        No event is handled after this starts. With ``wait_s`` the event being handled (a call
        in flight) may finish first, up to ``wait_s`` seconds: used when we give a room away
        and still hold its lease. The room's last state is then saved with our fence, so the
        next owner starts from it; if the lease already moved, the store refuses that write.
        """
        workers = [w for rid in room_ids if (w := self._workers.pop(rid, None)) is not None]
        for rid in room_ids:
            self._hints.forget(rid)
        await asyncio.gather(*(self._quiesce(w, wait_s) for w in workers))
        # one batched save for all of them: 5,000 rooms saved one transaction each took 16 s
        await self._recorder.flush_many([(w.room_id, w.room, w.fence) for w in workers], cause)
        for w in workers:
            self._refuse_waiting(w.room_id, cause)
            log.info("room_stood_down", room_id=w.room_id, cause=cause, state=w.room.state.value)
        self._changed.set()

    async def _quiesce(self, w: RoomWorker, wait_s: float) -> None:
        w.closing = True
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s), w.busy:
                    pass
        await w.halt()

    def _drop(self, w: RoomWorker) -> None:
        """Forget a room from inside its own worker (the worker returns right after)."""
        w.closing = True
        rid = w.room_id
        if self._workers.get(rid) is w:
            del self._workers[rid]
        w.cancel_timer()
        self._changed.set()

    def _refuse_waiting(self, room_id: str, cause: str) -> None:
        """Callers waiting on a room we no longer work on hear so now, not at their timeout."""
        error = CommandError("not_live", f"room {room_id!r} is no longer supervised ({cause})")
        self._replies.refuse_room(room_id, error)

    def _owned(self, rid: str) -> bool:
        return self._owns is None or self._owns(rid, self._clock.now())

    async def stop_all(self, *, cause: str = "shutdown") -> None:
        """Order every room OFF and wait until none has a job (bound it with a timeout)."""
        for rid in list(self._workers):
            self.post(rid, OrderChanged(order=Order.OFF, cause=cause))
        await self._until_stopped(list(self._workers))

    async def _until_stopped(self, room_ids: Sequence[str]) -> None:
        def stopped(rid: str) -> bool:
            w = self._workers.get(rid)
            if w is None:
                return True
            room = w.room
            return room.state in (RoomState.IDLE, RoomState.QUARANTINED) or (
                room.state is RoomState.UNKNOWN and room.job_id is None and room.op is None
            )

        while not all(stopped(rid) for rid in room_ids):
            self._changed.clear()
            await self._changed.wait()

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Restore rooms from the store: QUARANTINED stays, everything else is UNKNOWN."""
        if self._loaded.is_set():
            return
        stored = await self._store.load_rooms()
        for rid, w in self._workers.items():
            room = restored(rid, stored.get(rid))
            if room is not None:
                w.room = room
        self._loaded.set()

    async def run(self) -> None:
        """Supervise every room until cancelled (jobs keep running when we stop). Every room's
        task, timer and script call lives in this TaskGroup and ends with it."""
        await self.load()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for w in list(self._workers.values()):
                    self._spawn(w)
                # rooms may all arrive later (leases gained, reload): stay until cancelled
                await asyncio.Event().wait()
        finally:
            self._tg = None
            await self._recorder.drain()  # the group-commit task must not outlive the rooms

    def _spawn(self, w: RoomWorker) -> None:
        assert self._tg is not None
        w.start(self._tg, self._supervise)

    async def _supervise(self, w: RoomWorker) -> None:
        rid = w.room_id
        try:
            await w.run(self._handle)
        except FencedOut:
            # another instance holds the room now: nothing more from us, not even a flush
            log.warning("room_fenced_out", room_id=rid, fence=w.fence, cause="write")
            self._drop(w)
            self._refuse_waiting(rid, "fenced")
            if self._on_dropped is not None:
                self._on_dropped(rid, "fenced")
        except NotOwned:
            self._drop(w)
            await self._recorder.flush(rid, w.room, w.fence, "lease:expiring")
            self._refuse_waiting(rid, "lease:expiring")
            log.warning("room_stood_down", room_id=rid, cause="lease:expiring",
                        state=w.room.state.value)  # fmt: skip
            if self._on_dropped is not None:
                self._on_dropped(rid, "not_owned")

    # ------------------------------------------------------------------ one event

    async def _handle(self, w: RoomWorker, event: Event) -> None:
        rid = w.room_id
        self._configs.refresh(w)
        event = replace(event, jitter=self._rng.random())
        now = self._clock.now()
        if self._owns is not None and not self._owns(rid, now):
            raise NotOwned(rid)
        before = w.room
        after, actions = step(before, event, now, w.policy)
        w.room = after
        if after.job_id != before.job_id:
            if before.job_id is not None:
                self._job_rooms.pop(before.job_id, None)
            if after.job_id is not None:
                self._job_rooms[after.job_id] = rid
        if isinstance(event, InsertScriptRequested):
            self._effects.refuse_unless_accepted(rid, event, after, actions)
        # Every field a snapshot shows, except last_observed_at, is durable: so this also says
        # whether listeners (MQTT state, metrics, SLA) hear of it. A poll that only confirms a
        # room is no news (10,000 rooms would make 500 "changes" a second).
        changed = durable_change(before, after)
        record = self._recorder.record(rid, w.fence, before, after, event, now, actions, changed)

        overlap = changed and actions and self._owns is None
        if overlap and all(isinstance(a, _SEND_WHILE_SAVING) for a in actions):
            # Nothing these actions do depends on the new state being durable (a crash before
            # the commit restores the room as UNKNOWN and reconciles it either way), so the
            # refresh leaves while the state commits: a drop's reaction waits for no commit of
            # its own. Only alone: with several instances the fenced commit proves ownership
            # first, or a stood-down instance could refresh a stream another one is repairing.
            # The commit is the side task, the actions stay in the worker: the other way round
            # retained ~120 bytes per event (tracemalloc, at SQLAlchemy's greenlet switch).
            saving = asyncio.create_task(record, name=f"room:{rid}:save")
            try:
                await self._run(w, actions)
            finally:
                await saving
            return
        await record
        await self._run(w, actions)

    async def _run(self, w: RoomWorker, actions: list[Action]) -> None:
        for action in actions:
            if not self._owned(w.room_id):
                raise NotOwned(w.room_id)
            await self._effects.execute(w, action)
