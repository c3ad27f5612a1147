"""The driver of the room machines: one queue and one worker per room, I/O at the edges.

Each room has an unbounded :class:`asyncio.Queue` (``post`` never blocks) and a worker task
named ``room:<id>`` that takes one event at a time, runs the pure ``step``, persists the new
state, tells the listeners, and carries out the returned actions. An action's outcome — answer,
error or timeout — becomes an event posted back into the same queue, so a room's events are
handled strictly in order while rooms run in parallel. Listeners only ever hear of a durable
state; a single instance sends repairs and reads (never a start or a stop) while the state
commits, so a drop's refresh does not wait for a commit (see ``_SEND_WHILE_SAVING``).

Failure containment: a worker that raises is logged (``room_worker_crashed``) and restarted
with backoff; the room is then told ``Resumed`` and reconciles (lists its jobs) because whatever
was in flight is lost. Nothing one room does can stop another's worker.

Every cloud error is turned into an event that says what happened (see ``rooms.model``): the
machine decides what to do next. Start intents are written to the store *before* the start call.

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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, Literal, Protocol, cast

import structlog

from orchestrator.clock import Clock
from orchestrator.errors import (
    Conflict,
    NotFound,
    OrchestratorError,
    PermanentError,
    StartOutcomeUnknown,
    TemporaryError,
)
from orchestrator.metastudio.models import LiveExitConfig, StartSmartLiveReq
from orchestrator.redaction import mask_text
from orchestrator.rooms.explain import explain
from orchestrator.rooms.machine import ACTIVE_JOB_STATES, step
from orchestrator.rooms.model import (
    Action,
    ClearAlert,
    CommandFailed,
    CommandSucceeded,
    Event,
    JobObserved,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ListJobs,
    ObservedJob,
    Order,
    OrderChanged,
    OutputChanged,
    Poked,
    QueryFailed,
    RaiseAlert,
    RefreshOutput,
    ResetExitConfig,
    Resumed,
    Room,
    RoomState,
    SetTimer,
    ShowJob,
    Snapshot,
    StartJob,
    StopFailed,
    StopJob,
    TimerFired,
)
from orchestrator.rooms.policy import Policy
from orchestrator.rooms.startreq import RoomConfig, build_start_request
from orchestrator.settings import RoomSettings, Settings
from orchestrator.store.base import (
    FencedOut,
    RoomWrite,
    StartIntent,
    Store,
    StoreError,
    TransitionRecord,
)
from orchestrator.store.roomwriter import RoomWriter

__all__ = ["AdoptionReport", "CloudPort", "RoomSupervisor", "Transition"]

log = structlog.get_logger(__name__)

_ACTIVE = sorted(ACTIVE_JOB_STATES)
_CRASH_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SEND_WHILE_SAVING = (RefreshOutput, ResetExitConfig, ShowJob, ListJobs, SetTimer)
"""Actions that may leave before the room's new state is committed (see ``_handle``): repairs
of the same job and reads. Never a start (its intent key must be durable first) nor a stop (the
stopped job must be durably retired, or a crash could adopt it again)."""
_POLL_CHUNK = 100  # rooms whose poll observation is posted per event-loop turn
_ADOPT_HINT_TTL = timedelta(seconds=120)  # how long adopt_all's listing may answer a list


# ----------------------------------------------------------------------------- the cloud seam


class _Job(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def state(self) -> Any: ...
    @property
    def room_id(self) -> str | None: ...


class _Started(Protocol):
    @property
    def job_id(self) -> str: ...


class CloudPort(Protocol):
    """The part of ``metastudio.client.MetaStudioClient`` the rooms use (our seam for fakes)."""

    async def start_job(self, room_id: str, req: StartSmartLiveReq) -> _Started: ...
    async def stop_job(self, room_id: str, job_id: str) -> None: ...
    async def show_job(self, room_id: str, job_id: str) -> _Job: ...
    def iter_room_jobs(
        self, room_id: str, *, states: Sequence[str] | None = None
    ) -> AsyncIterator[_Job]: ...
    def iter_tenant_job_briefs(
        self, *, states: Sequence[str] | None = None
    ) -> AsyncIterator[_Job]: ...
    async def refresh_output_url(
        self, room_id: str, job_id: str, *, output_url: str, stream_key: str
    ) -> object: ...
    async def reset_exit_config(
        self, room_id: str, job_id: str, config: LiveExitConfig
    ) -> object: ...


# ----------------------------------------------------------------------------- outputs


_NOT_DURABLE = frozenset({"last_observed_at", "rtmp_at", "seq", "timer_seq", "op_seq", "push"})
"""Room fields whose change alone is worth no store write and no transition. Observation
stamps (of the job and of its link) and sequence counters change on every poll of a healthy
LIVE room; after a restart a room reconciles from UNKNOWN anyway, so writing them would cost
one transaction per room per poll (measured: most of a quiet 10,000-room daemon's CPU) and buy
nothing. (rtmp_at only orders callbacks against reads, in memory.) Every field a snapshot shows,
except last_observed_at, is outside this set."""
_durable_key = attrgetter(*(f.name for f in fields(Room) if f.name not in _NOT_DURABLE))


def _durable_change(before: Room, after: Room) -> bool:
    """Did anything but :data:`_NOT_DURABLE` change? (Asked for every event: 10,000 polled
    rooms = 500 a second, so no copies are built.)"""
    if after is before:
        return False
    return bool(_durable_key(after) != _durable_key(before))  # two tuples built in C


AlertChange = tuple[str, Literal["SET", "CLEARED"], str]
"""(kind, SET|CLEARED, message)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """What listeners (MQTT, metrics, SLA) learn about each change of a room's snapshot."""

    room_id: str
    at: datetime
    before: Snapshot
    after: Snapshot
    event: str
    cause: str
    alerts: tuple[AlertChange, ...] = ()
    """Every alert raised or cleared by this step, in order (one step can clear ``unrecovered``
    and raise ``quarantined``: a pager must hear both)."""
    drop_since: datetime | None = None
    """When the room's open drop began: when the stream stopped, which a read or the probe can
    show to be earlier than ``at`` (the SLA and recovery figures count the outage from it)."""

    @property
    def alert(self) -> AlertChange | None:
        """The last alert change of this step (most callers care about one)."""
        return self.alerts[-1] if self.alerts else None

    def to_json(self) -> dict[str, Any]:
        """The non-retained MQTT event (same shape as ``mqtt.topics.transition_event``)."""
        after = self.after
        out: dict[str, Any] = {
            "type": "transition",
            "room_id": self.room_id,
            "at": self.at.isoformat(),
            "from": self.before.state.value,
            "to": after.state.value,
            "event": self.event,
            "cause": self.cause,
            "detail": {
                "job_id": after.job_id,
                "attempt": after.attempt,
                "next_retry_at": after.next_retry_at.isoformat() if after.next_retry_at else None,
                "last_error": after.last_error,
            },
        }
        if self.alerts:
            out["alerts"] = [
                {"kind": kind, "status": status, "message": message}
                for kind, status, message in self.alerts
            ]
        return out


@dataclass(frozen=True, slots=True)
class AdoptionReport:
    """Startup adoption: which running jobs went to which room, and what we left alone."""

    adopted: dict[str, list[str]] = field(default_factory=dict)
    unmanaged: list[tuple[str, str]] = field(default_factory=list)  # (room_id, job_id)
    without_jobs: list[str] = field(default_factory=list)

    def to_log(self) -> dict[str, int]:
        """Counts for one structured log line (ids would make it unbounded)."""
        return {
            "adopted_rooms": len(self.adopted),
            "adopted_jobs": sum(len(v) for v in self.adopted.values()),
            "unmanaged_jobs": len(self.unmanaged),
            "rooms_without_jobs": len(self.without_jobs),
        }


def _state_of(job: _Job) -> str:
    return str(getattr(job.state, "value", job.state) or "")


def _rtmp_of(job: object) -> str | None:
    value = getattr(job, "rtmp_state", None)  # the real API has none; the emulator may add it
    return str(value) if value else None


def _seconds(job: object, name: str) -> float | None:
    value = getattr(job, name, None)  # duration / stream_duration: optional in every answer
    return float(value) if isinstance(value, int | float) else None


def _error_of(job: object) -> str | None:
    """A read's ``error_info`` as ``code: message``, masked like every cloud text we keep."""
    info = getattr(job, "error_info", None)
    if info is None:
        return None
    code, msg = getattr(info, "error_code", None), getattr(info, "error_msg", None)
    text = ": ".join(str(part) for part in (code, msg) if part)
    return mask_text(text)[:300] if text else None


def _short(exc: BaseException) -> str:
    """A safe one-line reason. Cloud error text may quote the refused request (stream key
    included) and becomes last_error: in the store, on MQTT, in /rooms. Mask, then cut."""
    text = str(exc) or type(exc).__name__
    return mask_text(f"{type(exc).__name__}: {text}")[:300]


@dataclass
class _Slot:
    cfg: RoomConfig
    room: Room
    # what cfg was built from, by identity: (settings, room settings) — see _fresh_config
    cfg_source: tuple[object, object] | None = None
    policy_of: tuple[RoomConfig, Policy] | None = None
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    timer: asyncio.Task[None] | None = None
    timer_at: datetime | None = None  # when ``timer`` posts its TimerFired (see ``idle``)
    fence: int | None = None  # the lease's fencing token (None: single instance, unfenced)
    closing: bool = False  # standing down: handle no further event
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while one event is handled


class _NotOwned(Exception):
    """The lease is about to run out (or is gone): stop acting on this room now."""


class RoomSupervisor:
    """Implements :class:`~orchestrator.rooms.model.RoomSink` for every managed room."""

    def __init__(
        self,
        *,
        cloud: CloudPort,
        store: Store,
        rooms: Callable[[], Mapping[str, RoomConfig]] | Callable[[str], RoomSettings | None],
        clock: Clock,
        rng: random.Random,
        listeners: Sequence[Callable[[Transition], None]] = (),
        poll_interval_s: float | None = None,
        room_ids: Callable[[], Sequence[str]] | None = None,
        settings: Callable[[], Settings] | None = None,
        owns: Callable[[str, datetime], bool] | None = None,
        on_dropped: Callable[[str, str], None] | None = None,
    ) -> None:
        """Two ways to name the rooms.

        * ``rooms()`` returns ``{room_id: RoomConfig}`` (fixed at construction; reload through
          ``add_room``/``update_room``/``remove_room``), or
        * ``room_ids()`` lists the managed rooms and ``rooms(room_id)`` returns that room's
          current :class:`RoomSettings` (with runtime overrides); together with ``settings()``
          the config is re-resolved before every event, so a reload or an output override is
          seen without a restart.

        ``owns(room_id, now)`` (several instances) is asked before every event and every action;
        False stands the room down. ``on_dropped(room_id, reason)`` tells the ownership manager
        that the supervisor dropped a room by itself (``"fenced"`` or ``"not_owned"``).
        """
        self._cloud = cloud
        self._store = store
        self._writer = RoomWriter(store)  # rooms changing together share commits
        self._clock = clock
        self._rng = rng
        self._listeners = list(listeners)
        self._poll_interval_s = poll_interval_s
        self._lookup: Callable[[str], RoomSettings | None] | None = None
        self._settings = settings
        if room_ids is None:
            configs = cast(Callable[[], Mapping[str, RoomConfig]], rooms)()
        else:
            self._lookup = cast(Callable[[str], RoomSettings | None], rooms)
            resolved = {rid: self._resolve(rid) for rid in room_ids()}
            configs = {rid: cfg for rid, cfg in resolved.items() if cfg is not None}
        self._slots: dict[str, _Slot] = {
            rid: _Slot(cfg, Room(room_id=rid)) for rid, cfg in configs.items()
        }
        self._tg: asyncio.TaskGroup | None = None
        self._loaded = asyncio.Event()
        self._changed = asyncio.Event()
        self._job_rooms: dict[str, str] = {}
        # adopt_all's positive answers, kept for each room's first list (see _list)
        self._adopt_hint: dict[str, tuple[ObservedJob, ...]] = {}
        self._adopt_hint_until: datetime | None = None
        self._owns = owns
        self._on_dropped = on_dropped
        self._settled = asyncio.Event()  # set after every handled event, fired timer and poll
        self._poll_due: datetime | None = None
        self._polls_running = 0
        self.tenant_jobs_seen = 0
        """Running jobs in the tenant's last full listing (ours or not): sizes the poll."""

    def _resolve(self, room_id: str) -> RoomConfig | None:
        """The room's current config in lookup mode (None: not managed / fixed mode)."""
        if self._lookup is None:
            return None
        room = self._lookup(room_id)
        return None if room is None else self._build(room)

    def _build(self, room: RoomSettings) -> RoomConfig:
        if self._settings is not None:
            return RoomConfig.build(self._settings(), room)
        return RoomConfig(room=room)

    def _fresh_config(self, rid: str, slot: _Slot) -> None:
        """Re-resolve the room's config before an event, building it only when its sources
        changed. Settings and room settings are frozen models replaced (not mutated) by a
        reload or an output override, so identity says "unchanged". Building it on every
        event was a third of a quiet 10,000-room daemon's CPU."""
        if self._lookup is None:
            return
        room = self._lookup(rid)
        if room is None:
            return
        source = (self._settings() if self._settings is not None else None, room)
        if slot.cfg_source is not None and all(
            a is b for a, b in zip(slot.cfg_source, source, strict=True)
        ):
            return
        slot.cfg = self._build(room)
        slot.cfg_source = source

    @staticmethod
    def _policy(slot: _Slot) -> Policy:
        cached = slot.policy_of
        if cached is None or cached[0] is not slot.cfg:
            cached = slot.policy_of = (slot.cfg, slot.cfg.policy)
        return cached[1]

    # ------------------------------------------------------------------ RoomSink + views

    def post(self, room_id: str, event: Event) -> bool:
        slot = self._slots.get(room_id)
        if slot is None:
            return False
        slot.queue.put_nowait(event)
        return True

    def snapshot(self, room_id: str) -> Snapshot:
        return self._slots[room_id].room.snapshot()

    def snapshots(self) -> list[Snapshot]:
        return [s.room.snapshot() for _, s in sorted(self._slots.items())]

    def state_counts(self) -> dict[str, int]:
        """Rooms per state (no snapshots built: asked after every poll for the systemd
        status line)."""
        counts: dict[str, int] = {}
        for slot in self._slots.values():
            key = slot.room.state.value
            counts[key] = counts.get(key, 0) + 1
        return counts

    def room(self, room_id: str) -> Room:
        """The full machine state (tests, diagnostics)."""
        return self._slots[room_id].room

    def room_ids(self) -> list[str]:
        return sorted(self._slots)

    @property
    def room_count(self) -> int:
        return len(self._slots)

    def supervises(self, room_id: str) -> bool:
        """True while this supervisor works on ``room_id`` (with leases: owns and took it)."""
        return room_id in self._slots

    def idle(self) -> bool:
        """Quiescent at the clock's now: no room has an event queued or in hand, no room timer
        (and no poll) due by now is still to post its event, and no poll is running.

        A timer due after a :class:`~orchestrator.clock.ManualClock` ``advance`` has only had
        its sleeper woken; until its task posts ``TimerFired`` (and the room handles it) this is
        False. Deterministic tests wait on :meth:`wait_idle` instead of sleeping.
        """
        now = self._clock.now()
        if self._polls_running or (self._poll_due is not None and self._poll_due <= now):
            return False
        for slot in self._slots.values():
            if slot.closing:
                continue
            if not slot.queue.empty() or slot.busy.locked():
                return False
            timer, due = slot.timer, slot.timer_at
            if timer is not None and not timer.done() and due is not None and due <= now:
                return False
        return True

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
            slot = self._slots.get(rid)
            if slot is not None and slot.room.job_id == job_id:
                return rid
        for rid, slot in self._slots.items():  # index miss (e.g. restored rooms): scan once
            if slot.room.job_id == job_id:
                self._job_rooms[job_id] = rid
                return rid
        return None

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------------ reload

    def add_room(self, room: RoomConfig | str) -> None:
        """Supervise a new room (a room id in lookup mode); it reconciles at once."""
        if isinstance(room, str):
            found = self._resolve(room)
            if found is None:
                raise KeyError(room)
            room = found
        cfg = room
        if cfg.room_id in self._slots:
            self.update_room(cfg)
            return
        slot = _Slot(cfg, Room(room_id=cfg.room_id))
        self._slots[cfg.room_id] = slot
        if self._tg is not None:
            self._spawn(cfg.room_id, slot)
        slot.queue.put_nowait(Poked(cause="reload:added"))

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
        slot = self._slots.get(room_id)
        if slot is None:
            return
        if stop_job and slot.worker is not None:
            slot.queue.put_nowait(OrderChanged(order=Order.OFF, cause=cause))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_stopped([room_id]), timeout_s)
        self._slots.pop(room_id, None)
        for task in (slot.worker, slot.timer):
            if task is not None:
                task.cancel()

    # ------------------------------------------------------------------ ownership

    async def take_over(
        self, fences: Mapping[str, int | None], *, cause: str = "lease:gained"
    ) -> list[str]:
        """Start supervising rooms whose leases we just gained; returns the rooms taken.

        Each room starts from its last stored state (the previous owner's order and window, now
        UNKNOWN) and reconciles at once: list its jobs and adopt the running one. Rooms not
        configured here are skipped; a room already supervised only gets its new fence.
        """
        stored = await self._store.load_rooms()
        taken: list[str] = []
        for rid, fence in sorted(fences.items()):
            current = self._slots.get(rid)
            if current is not None:
                current.fence = fence
                continue
            cfg = self._resolve(rid)
            if cfg is None:
                log.warning("room_take_over_unknown", room_id=rid)
                continue
            slot = _Slot(cfg, Room(room_id=rid), fence=fence)
            restored = _restored(rid, stored.get(rid))
            if restored is not None:
                slot.room = restored
            self._slots[rid] = slot
            if self._tg is not None:
                self._spawn(rid, slot)
            slot.queue.put_nowait(Poked(cause=cause))
            taken.append(rid)
        if taken:
            log.info("rooms_taken_over", rooms=len(taken), cause=cause)
        return taken

    async def stand_down(self, room_ids: Sequence[str], *, cause: str, wait_s: float = 0.0) -> None:
        """Stop working on rooms without stopping their jobs (another instance adopts them).

        No event is handled after this starts. With ``wait_s`` the event being handled (a call
        in flight) may finish first, up to ``wait_s`` seconds: used when we give a room away
        and still hold its lease. The room's last state is then saved with our fence, so the
        next owner starts from it; if the lease already moved, the store refuses that write.
        """
        slots = [(rid, self._slots.pop(rid, None)) for rid in room_ids]
        await asyncio.gather(
            *(self._stand_down(rid, slot, cause, wait_s) for rid, slot in slots if slot is not None)
        )
        self._changed.set()

    async def _stand_down(self, rid: str, slot: _Slot, cause: str, wait_s: float) -> None:
        slot.closing = True
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s), slot.busy:
                    pass
        tasks = [t for t in (slot.worker, slot.timer) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush(rid, slot, cause)
        log.info("room_stood_down", room_id=rid, cause=cause, state=slot.room.state.value)

    async def _flush(self, rid: str, slot: _Slot, cause: str) -> None:
        """Save the room's last state under its fence (a moved lease makes this a no-op)."""
        try:
            await self._store.save_room(rid, slot.room.to_json(), fence=slot.fence)
        except FencedOut:
            log.warning("room_fenced_out", room_id=rid, fence=slot.fence, cause=cause)
        except StoreError as exc:
            log.warning("room_flush_failed", room_id=rid, cause=cause, error=_short(exc))

    def _drop(self, rid: str, slot: _Slot) -> None:
        """Forget a room from inside its own worker (the worker returns right after)."""
        slot.closing = True
        if self._slots.get(rid) is slot:
            del self._slots[rid]
        if slot.timer is not None:
            slot.timer.cancel()
        self._changed.set()

    def _owned(self, rid: str) -> bool:
        return self._owns is None or self._owns(rid, self._clock.now())

    async def stop_all(self, *, cause: str = "shutdown") -> None:
        """Order every room OFF and wait until none has a job (bound it with a timeout)."""
        for rid in list(self._slots):
            self.post(rid, OrderChanged(order=Order.OFF, cause=cause))
        await self._until_stopped(list(self._slots))

    async def _until_stopped(self, room_ids: Sequence[str]) -> None:
        def stopped(rid: str) -> bool:
            slot = self._slots.get(rid)
            if slot is None:
                return True
            room = slot.room
            return room.state in (RoomState.IDLE, RoomState.QUARANTINED) or (
                room.state is RoomState.UNKNOWN and room.job_id is None and room.op is None
            )

        while not all(stopped(rid) for rid in room_ids):
            self._changed.clear()
            await self._changed.wait()

    def update_room(self, cfg: RoomConfig) -> None:
        slot = self._slots.get(cfg.room_id)
        if slot is None:
            self.add_room(cfg)
            return
        old = slot.cfg
        slot.cfg = cfg
        slot.cfg_source = None
        if [(o.url, o.stream_key) for o in old.outputs] != [
            (o.url, o.stream_key) for o in cfg.outputs
        ]:
            slot.queue.put_nowait(OutputChanged(cause="reload:output"))

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Restore rooms from the store: QUARANTINED stays, everything else is UNKNOWN."""
        if self._loaded.is_set():
            return
        stored = await self._store.load_rooms()
        for rid, slot in self._slots.items():
            room = _restored(rid, stored.get(rid))
            if room is not None:
                slot.room = room
        self._loaded.set()

    async def run(self) -> None:
        """Supervise every room until cancelled (jobs keep running when we stop)."""
        await self.load()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for rid, slot in list(self._slots.items()):
                    self._spawn(rid, slot)
                if self._poll_interval_s:
                    tg.create_task(self._poll_loop(self._poll_interval_s), name="rooms:poll")
                # rooms may all arrive later (leases gained, reload): stay until cancelled
                await asyncio.Event().wait()
        finally:
            self._tg = None
            for slot in self._slots.values():
                if slot.timer is not None:
                    slot.timer.cancel()
            timers = [s.timer for s in self._slots.values() if s.timer is not None]
            if timers:
                await asyncio.gather(*timers, return_exceptions=True)
            await self._writer.drain()  # writes of rooms cancelled mid-save still commit

    def _spawn(self, rid: str, slot: _Slot) -> None:
        assert self._tg is not None
        slot.worker = self._tg.create_task(self._supervise(rid, slot), name=f"room:{rid}")

    async def _supervise(self, rid: str, slot: _Slot) -> None:
        crashes = 0
        while True:
            try:
                await self._work(rid, slot)
                return  # standing down
            except asyncio.CancelledError:
                raise
            except FencedOut:
                # another instance holds the room now: nothing more from us, not even a flush
                log.warning("room_fenced_out", room_id=rid, fence=slot.fence, cause="write")
                self._drop(rid, slot)
                if self._on_dropped is not None:
                    self._on_dropped(rid, "fenced")
                return
            except _NotOwned:
                self._drop(rid, slot)
                await self._flush(rid, slot, "lease:expiring")
                log.warning("room_stood_down", room_id=rid, cause="lease:expiring",
                            state=slot.room.state.value)  # fmt: skip
                if self._on_dropped is not None:
                    self._on_dropped(rid, "not_owned")
                return
            except Exception as exc:  # contain any bug to this room; never kill the group
                delay = _CRASH_DELAYS[min(crashes, len(_CRASH_DELAYS) - 1)]
                crashes += 1
                log.exception(
                    "room_worker_crashed",
                    room_id=rid,
                    state=slot.room.state.value,
                    crashes=crashes,
                    retry_in_s=delay,
                    error=_short(exc),
                )
                await self._clock.sleep_until(self._clock.now() + timedelta(seconds=delay))
                slot.queue.put_nowait(Resumed(cause="worker_restart"))

    async def _work(self, rid: str, slot: _Slot) -> None:
        while True:
            event = await slot.queue.get()
            if slot.closing:
                return
            try:
                async with slot.busy:
                    await self._handle(rid, slot, event)
            finally:
                self._settled.set()

    # ------------------------------------------------------------------ one event

    async def _handle(self, rid: str, slot: _Slot, event: Event) -> None:
        self._fresh_config(rid, slot)
        event = replace(event, jitter=self._rng.random())
        now = self._clock.now()
        if self._owns is not None and not self._owns(rid, now):
            raise _NotOwned(rid)
        before = slot.room
        after, actions = step(before, event, now, self._policy(slot))
        slot.room = after
        if after.job_id != before.job_id:
            if before.job_id is not None:
                self._job_rooms.pop(before.job_id, None)
            if after.job_id is not None:
                self._job_rooms[after.job_id] = rid
        alerts: list[AlertChange] = []
        for action in actions:
            if isinstance(action, RaiseAlert):
                alerts.append((action.kind, "SET", action.message))
            elif isinstance(action, ClearAlert):
                alerts.append((action.kind, "CLEARED", ""))
        # Every field a snapshot shows, except last_observed_at, is durable: so this also says
        # whether listeners (MQTT state, metrics, SLA) hear of it. A poll that only confirms a
        # room is no news (10,000 rooms would make 500 "changes" a second).
        changed = _durable_change(before, after)

        async def record() -> None:  # durable before anyone hears of it
            if changed:
                await self._persist(rid, before, after, event, now, slot.fence)
            for action in actions:
                if isinstance(action, RaiseAlert | ClearAlert):
                    await self._alert(rid, action)
            if changed or alerts:
                self._notify(Transition(
                    room_id=rid, at=now, before=before.snapshot(), after=after.snapshot(),
                    event=type(event).__name__, cause=event.cause, alerts=tuple(alerts),
                    drop_since=after.drop_since,
                ))  # fmt: skip

        overlap = changed and actions and self._owns is None
        if overlap and all(isinstance(a, _SEND_WHILE_SAVING) for a in actions):
            # Nothing these actions do depends on the new state being durable (a crash before
            # the commit restores the room as UNKNOWN and reconciles it either way), so the
            # refresh leaves while the state commits: a drop's reaction waits for no commit of
            # its own. Only alone: with several instances the fenced commit proves ownership
            # first, or a stood-down instance could refresh a stream another one is repairing.
            # The commit is the side task, the actions stay in the worker: the other way round
            # retained ~120 bytes per event (tracemalloc, at SQLAlchemy's greenlet switch).
            saving = asyncio.create_task(record(), name=f"room:{rid}:save")
            try:
                await self._run(rid, slot, actions)
            finally:
                await saving
            return
        await record()
        await self._run(rid, slot, actions)

    async def _run(self, rid: str, slot: _Slot, actions: list[Action]) -> None:
        for action in actions:
            if not self._owned(rid):
                raise _NotOwned(rid)
            await self._execute(rid, slot, action)

    async def _persist(
        self, rid: str, before: Room, after: Room, event: Event, now: datetime, fence: int | None
    ) -> None:
        record = None
        if after.state is not before.state or after.alert != before.alert:
            record = TransitionRecord(
                room_id=rid,
                at=now,
                from_state=before.state.value,
                to_state=after.state.value,
                event=type(event).__name__,
                cause=event.cause,
                detail={
                    "job_id": after.job_id,
                    "last_error": after.last_error,
                    "why": explain(event, before, after),  # the cause in words, for people
                    # the stream stopped before we noticed: the timeline draws the outage
                    # from here
                    **(
                        {"drop_since": after.drop_since.isoformat()}
                        if after.drop_since is not None and before.state is RoomState.LIVE
                        else {}
                    ),
                },
            )
        try:
            # state and its audit row in one transaction: half the commits on the drop path
            await self._writer.save(RoomWrite(rid, after.to_json(), fence, record))
        except FencedOut:
            raise
        except StoreError as exc:
            # The machine state stays authoritative in memory; the next change retries.
            log.error("room_persist_failed", room_id=rid, error=_short(exc))

    def _notify(self, transition: Transition) -> None:
        self._changed.set()
        for listener in self._listeners:
            try:
                listener(transition)
            except Exception as exc:  # a listener bug must not stall the room
                log.error(
                    "transition_listener_failed", room_id=transition.room_id, error=_short(exc)
                )

    # ------------------------------------------------------------------ actions

    async def _execute(self, rid: str, slot: _Slot, action: Action) -> None:
        if isinstance(action, SetTimer):
            self._set_timer(rid, slot, action)
            return
        if isinstance(action, RaiseAlert | ClearAlert):
            return  # persisted with the transition
        try:
            result = await self._call(rid, slot, action)
        except FencedOut:
            raise
        except Exception as exc:  # an unmapped failure must still answer, or the room hangs
            log.exception("room_action_failed", room_id=rid, action=type(action).__name__)
            result = _unexpected(action, exc)
        if result is not None:
            slot.queue.put_nowait(result)

    def _set_timer(self, rid: str, slot: _Slot, action: SetTimer) -> None:
        if slot.timer is not None:
            slot.timer.cancel()

        async def fire() -> None:
            try:
                await self._clock.sleep_until(action.at)
                slot.queue.put_nowait(TimerFired(seq=action.seq, cause="timer"))
            finally:
                self._settled.set()

        slot.timer_at = action.at
        slot.timer = asyncio.get_running_loop().create_task(fire(), name=f"room:{rid}:timer")

    async def _alert(self, rid: str, action: RaiseAlert | ClearAlert) -> None:
        now = self._clock.now()
        try:
            if isinstance(action, RaiseAlert):
                log.warning("room_alert_set", room_id=rid, kind=action.kind, message=action.message)
                await self._store.set_alert(rid, action.kind, action.message, now)
            else:
                log.info("room_alert_cleared", room_id=rid, kind=action.kind)
                await self._store.clear_alert(rid, action.kind, now)
        except StoreError as exc:
            log.error("room_alert_persist_failed", room_id=rid, error=_short(exc))

    async def _call(self, rid: str, slot: _Slot, action: Action) -> Event | None:
        if isinstance(action, ListJobs):
            return await self._list(rid, action)
        if isinstance(action, ShowJob):
            return await self._show(rid, action)
        if isinstance(action, StartJob):
            return await self._start(rid, slot, action)
        if isinstance(action, StopJob):
            return await self._stop(rid, action)
        if isinstance(action, RefreshOutput):
            return await self._refresh(rid, slot, action)
        if isinstance(action, ResetExitConfig):
            return await self._widen(rid, action)
        raise TypeError(f"unknown action {type(action).__name__}")

    async def _list(self, rid: str, a: ListJobs) -> Event:
        hint = self._adopt_hint.pop(rid, None)
        if self._adopt_hint_until is not None and self._clock.now() > self._adopt_hint_until:
            self._adopt_hint.clear()
            self._adopt_hint_until = hint = None
        if hint:
            # A fresh room (no stored order) is IDLE when adopt_all's listing arrives and lists
            # again when its window opens a moment later: one rate-limited call per room (2,000
            # rooms = 100 s at 20 queries/s). A *positive* tenant listing seconds old answers
            # that first list: it can only lead to adopting, never to a start (an empty or old
            # answer is never reused), and a job gone since is caught by the next show/poll.
            return JobsListed(seq=a.seq, jobs=hint, cause="list:startup_adopt")
        try:
            jobs = [
                ObservedJob(j.job_id, _state_of(j), _rtmp_of(j))
                async for j in self._cloud.iter_room_jobs(rid, states=_ACTIVE)
            ]
        except TemporaryError as exc:
            return QueryFailed(seq=a.seq, op="list", error=_short(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            return QueryFailed(seq=a.seq, op="list", error=_short(exc), temporary=False)
        return JobsListed(seq=a.seq, jobs=tuple(jobs), cause="list")

    async def _show(self, rid: str, a: ShowJob) -> Event:
        try:
            job = await self._cloud.show_job(rid, a.job_id)
        except NotFound:
            return JobObserved(seq=a.seq, job_id=a.job_id, state=None, cause="show:404")
        except TemporaryError as exc:
            return QueryFailed(seq=a.seq, op="show", error=_short(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            return QueryFailed(seq=a.seq, op="show", error=_short(exc), temporary=False)
        return JobObserved(
            seq=a.seq, job_id=a.job_id, state=_state_of(job) or None, rtmp_state=_rtmp_of(job),
            duration=_seconds(job, "duration"), stream_duration=_seconds(job, "stream_duration"),
            error=_error_of(job), cause="show",
        )  # fmt: skip

    async def _start(self, rid: str, slot: _Slot, a: StartJob) -> Event:
        now = self._clock.now()
        try:
            req = build_start_request(slot.cfg)
        except PermanentError as exc:
            return JobStartFailed(seq=a.seq, error=_short(exc))
        intent = StartIntent(
            room_id=rid, window_key=a.window_key, attempt=a.attempt, created_at=now
        )
        try:
            fresh = await self._store.put_start_intent(intent, fence=slot.fence)
        except FencedOut:
            raise  # another instance owns the room: it must not see a start from us
        except StoreError as exc:
            return JobStartFailed(seq=a.seq, error=f"start intent not stored: {_short(exc)}",
                                  temporary=True)  # fmt: skip
        if not fresh:
            return JobStartFailed(seq=a.seq, error="start intent already recorded; listing first",
                                  temporary=True, outcome_unknown=True)  # fmt: skip
        log.info("room_job_starting", room_id=rid, window_key=a.window_key, attempt=a.attempt)
        outcome, job_id = "failed", None
        try:
            resp = await self._cloud.start_job(rid, req)
        except (StartOutcomeUnknown, Conflict) as exc:
            outcome = "unknown"
            result: Event = JobStartFailed(
                seq=a.seq, error=_short(exc), temporary=True, outcome_unknown=True
            )
        except TemporaryError as exc:
            result = JobStartFailed(seq=a.seq, error=_short(exc), temporary=True,
                                    retry_after=exc.retry_after)  # fmt: skip
        except PermanentError as exc:
            result = JobStartFailed(seq=a.seq, error=_short(exc))
        else:
            outcome, job_id = "started", resp.job_id
            result = JobStarted(seq=a.seq, job_id=resp.job_id, cause="start")
        with contextlib.suppress(StoreError):
            await self._store.resolve_start_intent(
                rid, a.window_key, a.attempt, outcome=outcome, job_id=job_id
            )
        return result

    async def _stop(self, rid: str, a: StopJob) -> Event | None:
        try:
            await self._cloud.stop_job(rid, a.job_id)
        except (NotFound, Conflict):
            pass  # already gone / not running: that is what we wanted
        except TemporaryError as exc:
            if a.seq == 0:
                log.warning("room_stray_stop_failed", room_id=rid, job_id=a.job_id)
                return None
            return StopFailed(seq=a.seq, job_id=a.job_id, error=_short(exc),
                              retry_after=exc.retry_after)  # fmt: skip
        except PermanentError as exc:
            if a.seq == 0:
                log.warning("room_stray_stop_failed", room_id=rid, job_id=a.job_id)
                return None
            return StopFailed(seq=a.seq, job_id=a.job_id, error=_short(exc), temporary=False)
        log.info("room_job_stopped", room_id=rid, job_id=a.job_id)
        if a.seq == 0:
            return None
        return JobStopped(seq=a.seq, job_id=a.job_id, cause="stop")

    async def _refresh(self, rid: str, slot: _Slot, a: RefreshOutput) -> Event:
        command = "REFRESH_OUTPUT_URL"
        outputs = slot.cfg.outputs
        if not outputs:
            return CommandFailed(seq=a.seq, command=command, error="room has no output_url",
                                 temporary=False)  # fmt: skip
        target = outputs[min(a.output_index, len(outputs) - 1)]
        log.info("room_refresh_output", room_id=rid, job_id=a.job_id, output_index=a.output_index)
        try:
            await self._cloud.refresh_output_url(
                rid, a.job_id, output_url=target.url,
                stream_key=target.stream_key.get_secret_value(),
            )  # fmt: skip
        except OrchestratorError as exc:
            return _command_failed(a.seq, command, exc)
        return CommandSucceeded(seq=a.seq, command=command, cause="refresh")

    async def _widen(self, rid: str, a: ResetExitConfig) -> Event:
        command = "RESET_EXIT_CONFIG"
        try:
            await self._cloud.reset_exit_config(
                rid, a.job_id, LiveExitConfig(max_exception_waiting_duration=a.minutes)
            )
        except OrchestratorError as exc:
            return _command_failed(a.seq, command, exc)
        return CommandSucceeded(seq=a.seq, command=command, cause="widen")

    # ------------------------------------------------------------------ tenant-wide reads

    async def _tenant_jobs(self) -> dict[str, list[ObservedJob]]:
        by_room: dict[str, list[ObservedJob]] = {}
        seen = 0
        async for job in self._cloud.iter_tenant_job_briefs(states=_ACTIVE):
            seen += 1
            if job.room_id:
                by_room.setdefault(job.room_id, []).append(
                    ObservedJob(
                        job.job_id,
                        _state_of(job),
                        _rtmp_of(job),
                        _seconds(job, "duration"),
                        _seconds(job, "stream_duration"),
                    )
                )
        self.tenant_jobs_seen = seen
        return by_room

    async def adopt_all(self) -> AdoptionReport:
        """Startup: hand every managed room the tenant's running jobs (one paged list).

        Rooms reconcile from it (adopt, or list-then-start, or rest). Jobs in rooms we do not
        manage are reported and left alone. Cloud errors propagate: the caller retries.
        """
        by_room = await self._tenant_jobs()
        self._adopt_hint = {rid: tuple(jobs) for rid, jobs in by_room.items() if rid in self._slots}
        self._adopt_hint_until = self._clock.now() + _ADOPT_HINT_TTL
        report = AdoptionReport()
        for rid, jobs in sorted(by_room.items()):
            if rid in self._slots:
                report.adopted[rid] = [j.job_id for j in jobs]
            else:
                report.unmanaged.extend((rid, j.job_id) for j in jobs)
        for rid in sorted(self._slots):
            jobs = by_room.get(rid, [])
            if not jobs:
                report.without_jobs.append(rid)
            self.post(rid, JobsListed(jobs=tuple(jobs), cause="startup:adopt"))
        if report.unmanaged:
            log.warning("unmanaged_jobs_running", jobs=len(report.unmanaged))
        log.info("rooms_adopted", adopted=len(report.adopted), idle=len(report.without_jobs))
        return report

    async def poll_once(self) -> None:
        """One paged tenant listing → an observation (or a poke) for every room.

        A listed job is a reliable positive observation. A room whose job is *missing* from
        the listing is only poked (it re-reads its job): list results can lag a fresh start,
        and a false "gone" would restart a healthy stream.
        """
        self._polls_running += 1
        try:
            await self._poll_rooms()
        finally:
            self._polls_running -= 1
            self._settled.set()

    async def _poll_rooms(self) -> None:
        by_room = await self._tenant_jobs()
        for i, (rid, slot) in enumerate(list(self._slots.items())):
            if i % _POLL_CHUNK == _POLL_CHUNK - 1:
                # Each room handles its observation on the next loop turn: posting 10,000 at
                # once queued 10,000 handlers ahead of a drop's callback (react p99 240 ms).
                await asyncio.sleep(0)
            jobs = {j.job_id: j for j in by_room.get(rid, [])}
            current = slot.room.job_id
            ev: Event
            if current is not None and current in jobs:
                j = jobs[current]
                ev = JobObserved(job_id=current, state=j.state, rtmp_state=j.rtmp_state,
                                 duration=j.duration, stream_duration=j.stream_duration,
                                 cause="poll")  # fmt: skip
            elif current is not None:
                ev = Poked(cause="poll:missing")
            elif jobs:
                j = next(iter(jobs.values()))
                ev = JobObserved(job_id=j.job_id, state=j.state, cause="poll")
            else:
                ev = JobObserved(job_id=None, state=None, cause="poll")
            if not (isinstance(ev, JobObserved) and self._observe_inline(rid, slot, ev)):
                self.post(rid, ev)

    def _observe_inline(self, rid: str, slot: _Slot, ev: JobObserved) -> bool:
        """Apply a poll observation right here when the machine says it changes nothing but
        the room's stamps (no action, nothing durable): most of every poll, which through the
        room's queue cost a task switch, a config check and an event copy per room. Anything
        else — or a room busy with another event — goes through the queue as usual; ``step``
        is pure, so a result thrown away here changed nothing."""
        if slot.closing or slot.busy.locked() or not slot.queue.empty():
            return False
        now = self._clock.now()
        if self._owns is not None and not self._owns(rid, now):
            return False
        before = slot.room
        after, actions = step(before, ev, now, self._policy(slot))
        if actions or _durable_change(before, after):
            return False
        slot.room = after
        return True

    async def _poll_loop(self, interval_s: float) -> None:
        while True:
            self._poll_due = self._clock.now() + timedelta(seconds=interval_s)
            await self._clock.sleep_until(self._poll_due)
            self._poll_due = None
            try:
                await self.poll_once()
            except OrchestratorError as exc:
                log.warning("rooms_poll_failed", error=_short(exc))


def _restored(rid: str, data: Mapping[str, Any] | None) -> Room | None:
    """A room from its stored JSON, ready to reconcile (None: nothing usable stored)."""
    if data is None:
        return None
    try:
        room = Room.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("room_state_unreadable", room_id=rid, error=_short(exc))
        return None
    if room.state is not RoomState.QUARANTINED:
        # calls in flight, link hints and the start-queue estimate died with the previous
        # process (or owner); Room.from_json also leaves expected_start_at a string today.
        # A drop that was open stays open: adopting the job degrades and repairs it. Reads
        # cannot show a push that died before the restart (the stall check measures from
        # its first read), and the service sends no second DISCONNECTED for a held drop.
        down = "DISCONNECTED" if room.state in (RoomState.DEGRADED, RoomState.REFRESHING) else None
        room = replace(
            room, state=RoomState.UNKNOWN, op=None, wait=None, rtmp_state=down, rtmp_at=None,
            expected_start_at=None,
        )  # fmt: skip
    return replace(room, room_id=rid)


def _command_failed(seq: int, command: str, exc: OrchestratorError) -> CommandFailed:
    temporary = isinstance(exc, TemporaryError)
    retry_after = exc.retry_after if isinstance(exc, TemporaryError) else None
    return CommandFailed(seq=seq, command=command, error=_short(exc), temporary=temporary,
                         retry_after=retry_after)  # fmt: skip


def _unexpected(action: Action, exc: BaseException) -> Event | None:
    """The answer for an action whose execution raised something we did not map."""
    error = f"unexpected {_short(exc)}"
    if isinstance(action, ListJobs):
        return QueryFailed(seq=action.seq, op="list", error=error)
    if isinstance(action, ShowJob):
        return QueryFailed(seq=action.seq, op="show", error=error)
    if isinstance(action, StartJob):  # it may have reached the service: list before retrying
        return JobStartFailed(seq=action.seq, error=error, temporary=True, outcome_unknown=True)
    if isinstance(action, StopJob):
        return None if action.seq == 0 else StopFailed(seq=action.seq, job_id=action.job_id,
                                                       error=error)  # fmt: skip
    if isinstance(action, RefreshOutput):
        return CommandFailed(seq=action.seq, command="REFRESH_OUTPUT_URL", error=error)
    if isinstance(action, ResetExitConfig):
        return CommandFailed(seq=action.seq, command="RESET_EXIT_CONFIG", error=error)
    return None
