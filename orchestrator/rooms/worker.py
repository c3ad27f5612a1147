"""One room's worker: its queue, its task, its timer, its config and its crash throttle.

A :class:`RoomWorker` holds everything the supervisor keeps per room. Its queue is unbounded
(``post`` never blocks); its task, ``room:<id>``, takes one event at a time and hands it to the
supervisor's handler (``RoomSupervisor._handle``), so a room's events are handled strictly in
order while rooms run in parallel. The task and the room's single timer are created in the
supervisor's TaskGroup, so nothing of a room outlives :meth:`RoomSupervisor.run`.

A handler that raises is contained here: the crash is logged (``room_worker_crashed``), the
worker waits a throttled delay (:class:`~orchestrator.backoff.Backoff`, capped at 30 s) and
then tells the room ``Resumed`` (it reconciles: whatever was in flight is lost). The throttle
starts over after an event handled successfully once the room has been crash-free for
``_CRASH_QUIET_S``: a room that crashed once last week gets the short delay again, one that
crashes on every reconcile keeps backing off. ``FencedOut`` and :class:`NotOwned` are not
crashes: they end the worker (the supervisor stands the room down).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from orchestrator.backoff import Backoff
from orchestrator.clock import Clock
from orchestrator.redaction import mask_text
from orchestrator.rooms.model import Event, Resumed, Room, RoomState, TimerFired
from orchestrator.rooms.policy import Policy
from orchestrator.rooms.startreq import RoomConfig
from orchestrator.settings import RoomSettings, Settings
from orchestrator.store.base import FencedOut

__all__ = ["NotOwned", "RoomConfigs", "RoomWorker", "WorkerContext", "restored", "short"]

log = structlog.get_logger(__name__)

_CRASH_BASE_S = 0.5
_CRASH_CAP_S = 30.0
_CRASH_QUIET_S = 60.0
"""Crash-free this long, the next successfully handled event resets the crash throttle. A reset
on any success would never let the delay grow: after a crash the room's own ``Resumed`` (and
the list it sends) always succeeds, and a room that crashes on every reconcile would retry at
the base delay forever, spending the tenant's query budget."""


def short(exc: BaseException) -> str:
    """A safe one-line reason. Cloud error text may quote the refused request (stream key
    included) and becomes last_error: in the store, on MQTT, in /rooms. Mask, then cut."""
    text = str(exc) or type(exc).__name__
    return mask_text(f"{type(exc).__name__}: {text}")[:300]


class NotOwned(Exception):
    """The lease is about to run out (or is gone): stop acting on this room now."""


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What every worker of one supervisor shares (one reference per room, not four)."""

    clock: Clock
    rng: random.Random  # also the crash throttle's jitter: drawn only when a room crashes
    settled: asyncio.Event  # set after every handled event and fired timer (``wait_idle``)


@dataclass(slots=True, eq=False)
class RoomWorker:
    """One supervised room (kept small: 10,000 of these live in one daemon)."""

    cfg: RoomConfig
    room: Room
    ctx: WorkerContext
    fence: int | None = None  # the lease's fencing token (None: single instance, unfenced)
    # what cfg was built from, by identity: (settings, room settings) — see RoomConfigs.refresh
    cfg_source: tuple[object, object] | None = None
    policy_of: tuple[RoomConfig, Policy] | None = None
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    tg: asyncio.TaskGroup | None = None
    timer: asyncio.Task[None] | None = None
    timer_at: datetime | None = None  # when ``timer`` posts its TimerFired (see ``pending``)
    closing: bool = False  # standing down: handle no further event
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while one event is handled
    crashes: Backoff | None = None  # the crash throttle, while the room is not yet quiet again
    crashed_at: datetime | None = None

    @property
    def room_id(self) -> str:
        return self.room.room_id

    @property
    def policy(self) -> Policy:
        cached = self.policy_of
        if cached is None or cached[0] is not self.cfg:
            cached = self.policy_of = (self.cfg, self.cfg.policy)
        return cached[1]

    def post(self, event: Event) -> None:
        self.queue.put_nowait(event)

    def pending(self, now: datetime) -> bool:
        """An event queued or in hand, or a timer due by ``now`` that has not posted yet."""
        if self.closing:
            return False
        if not self.queue.empty() or self.busy.locked():
            return True
        timer, due = self.timer, self.timer_at
        return timer is not None and not timer.done() and due is not None and due <= now

    # ------------------------------------------------------------------ tasks

    def start(
        self, tg: asyncio.TaskGroup, body: Callable[[RoomWorker], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``body(self)`` as the room's task ``room:<id>`` in ``tg``."""
        self.tg = tg
        self.task = tg.create_task(body(self), name=f"room:{self.room_id}")

    def set_timer(self, seq: int, at: datetime) -> None:
        """Post ``TimerFired(seq)`` at ``at``, replacing the room's previous timer."""
        if self.timer is not None:
            self.timer.cancel()
        assert self.tg is not None, "timers are set by actions, which only the running task runs"
        clock, settled = self.ctx.clock, self.ctx.settled

        async def fire() -> None:
            try:
                await clock.sleep_until(at)
                self.queue.put_nowait(TimerFired(seq=seq, cause="timer"))
            finally:
                settled.set()

        self.timer_at = at
        self.timer = self.tg.create_task(fire(), name=f"room:{self.room_id}:timer")

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    async def halt(self) -> None:
        """Cancel the room's task and timer and wait for both to end."""
        tasks = [t for t in (self.task, self.timer) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the loop

    async def run(self, handle: Callable[[RoomWorker, Event], Awaitable[None]]) -> None:
        """Handle events until standing down; contain crashes (see the module docstring)."""
        while True:
            try:
                await self._work(handle)
                return  # standing down
            except (FencedOut, NotOwned):
                raise  # not a crash: the supervisor stands the room down
            except Exception as exc:  # contain any bug to this room; never kill the group
                delay = self._crashed()
                log.exception(
                    "room_worker_crashed",
                    room_id=self.room_id,
                    state=self.room.state.value,
                    crashes=self.crashes.attempt if self.crashes else 0,
                    retry_in_s=delay,
                    error=short(exc),
                )
                clock = self.ctx.clock
                await clock.sleep_until(clock.now() + timedelta(seconds=delay))
                self.queue.put_nowait(Resumed(cause="worker_restart"))

    async def _work(self, handle: Callable[[RoomWorker, Event], Awaitable[None]]) -> None:
        while True:
            event = await self.queue.get()
            if self.closing:
                return
            try:
                async with self.busy:
                    await handle(self, event)
                if self.crashes is not None:
                    self._maybe_quiet()
            finally:
                self.ctx.settled.set()

    def _crashed(self) -> float:
        if self.crashes is None:  # built on the first crash only: most rooms never crash
            self.crashes = Backoff(cap_s=_CRASH_CAP_S, base_s=_CRASH_BASE_S, rng=self.ctx.rng)
        self.crashed_at = self.ctx.clock.now()
        return self.crashes.next_delay()

    def _maybe_quiet(self) -> None:
        at = self.crashed_at
        if at is None or (self.ctx.clock.now() - at).total_seconds() >= _CRASH_QUIET_S:
            self.crashes, self.crashed_at = None, None


# ----------------------------------------------------------------------------- configs


class RoomConfigs:
    """Each room's current :class:`RoomConfig`, from ``lookup(room_id)`` (the room's settings
    with runtime overrides) and ``settings()`` (callback target, recovery), re-resolved before
    every event so a reload or an output override is seen without a restart."""

    def __init__(
        self,
        lookup: Callable[[str], RoomSettings | None],
        settings: Callable[[], Settings] | None = None,
    ) -> None:
        self._lookup = lookup
        self._settings = settings

    def resolve(self, room_id: str) -> RoomConfig | None:
        """The room's config now (None: not managed here)."""
        room = self._lookup(room_id)
        return None if room is None else self._build(room)

    def _build(self, room: RoomSettings) -> RoomConfig:
        if self._settings is not None:
            return RoomConfig.build(self._settings(), room)
        return RoomConfig(room=room)

    def refresh(self, w: RoomWorker) -> None:
        """Re-resolve ``w``'s config, building it only when its sources changed. Settings and
        room settings are frozen models replaced (not mutated) by a reload or an output
        override, so identity says "unchanged". Building it on every event was a third of a
        quiet 10,000-room daemon's CPU."""
        room = self._lookup(w.room_id)
        if room is None:
            return
        source = (self._settings() if self._settings is not None else None, room)
        if w.cfg_source is not None and all(
            a is b for a, b in zip(w.cfg_source, source, strict=True)
        ):
            return
        w.cfg = self._build(room)
        w.cfg_source = source


def restored(rid: str, data: Mapping[str, Any] | None) -> Room | None:
    """A room from its stored JSON, ready to reconcile (None: nothing usable stored)."""
    if data is None:
        return None
    try:
        room = Room.from_json(data)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("room_state_unreadable", room_id=rid, error=short(exc))
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
