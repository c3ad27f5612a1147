"""Rooms changing hands between instances (``orchestrator.ownership`` leases).

A lease gained: the room's output override is read again from the store (the previous owner
may have set one), the supervisor takes the room over (last stored state, then list-and-adopt,
never a blind start), schedules are rebuilt and the room catches up on a window it is inside.
Callbacks left in the shared inbox for a gained room (its previous owner's unhandled ones, and
those received by other instances while nobody owned it) are claimed right after the take-over
(``inbox``, ``fleet.callbacks``). A lease lost or given away: the room stands down; its job keeps
running for the next owner.

One instance (no leases) takes every configured room over at boot instead:
:func:`adopt_at_boot` adopts the jobs already running, retrying through a cloud outage.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog

from orchestrator.backoff import Backoff
from orchestrator.clock import Clock
from orchestrator.errors import TemporaryError
from orchestrator.overrides import Overrides
from orchestrator.rooms.model import ObservedJob
from orchestrator.rooms.supervisor import AdoptionReport, RoomSupervisor
from orchestrator.settings import Settings
from orchestrator.store.base import StoreError

__all__ = ["Handover", "adopt_at_boot"]

log = structlog.get_logger(__name__)

ADOPT_BACKOFF_CAP_S = 30.0

Hints = Mapping[str, tuple[ObservedJob, ...]]


async def adopt_at_boot(rooms: RoomSupervisor, rng: random.Random) -> AdoptionReport:
    """Adoption with retries: adopt_all() leaves retrying to us, and a MetaStudio outage
    (5xx/429 storm, network) at boot must not kill the daemon (rooms wait in UNKNOWN)."""
    backoff = Backoff(base_s=1.0, cap_s=ADOPT_BACKOFF_CAP_S, rng=rng)
    while True:
        try:
            return await rooms.adopt_all()
        except TemporaryError as exc:
            wait = backoff.next_delay(retry_after=exc.retry_after)
            log.warning("adoption_retry", error=str(exc)[:300], retry_in_s=round(wait, 2))
            await asyncio.sleep(wait)


class Handover:
    """The ownership manager's ``on_gained`` / ``on_lost``; ``rooms`` is set once they run."""

    def __init__(
        self, overrides: Overrides, *, clock: Clock, settings: Callable[[], Settings]
    ) -> None:
        self._overrides = overrides
        self._clock = clock
        self._settings = settings
        self.rooms: RoomSupervisor | None = None
        self.inbox: Callable[[Sequence[str]], Awaitable[None]] | None = None
        """Claims the gained rooms' pending callbacks (``fleet.callbacks``), once they run."""
        self.hints: Callable[[Sequence[str]], Awaitable[Hints]] | None = None
        """The fleet's latest sweep for gained rooms (``fleet.reader.gain_hints``)."""

    async def gained(self, fences: Mapping[str, int]) -> None:
        """Leases gained: fresh overrides from the store, supervise, catch up on windows."""
        assert self.rooms is not None
        await self._overrides.load_outputs(list(fences))
        hints: Hints = {}
        if self.hints is not None:
            try:
                hints = await self.hints(sorted(fences))
            except StoreError as exc:  # the rooms then list for themselves, as before
                log.warning("gain_hints_failed", error=str(exc)[:300])
        taken = set(await self.rooms.take_over(fences, hints=hints))
        if self.inbox is not None:  # after take_over: the rooms take events now
            await self.inbox(sorted(fences))
        scheduler = self._overrides.scheduler
        if taken and scheduler is not None:
            await (
                self._overrides.apply_schedules()
            )  # the previous owner may have paused or added windows
            for room_id, ev in scheduler.startup_events(self._clock.now()):
                if room_id in taken:
                    self.rooms.post(room_id, ev)

    async def lost(self, room_ids: Sequence[str], cause: str) -> None:
        """Leases lost or given away: stand down, jobs keep running for the next owner."""
        assert self.rooms is not None
        # Giving a room away: let a call in flight finish, but never long enough to miss renewals.
        wait = self._settings().store.lease_ttl_s / 6 if cause == "lease:rebalance" else 0.0
        await self.rooms.stand_down(room_ids, cause=cause, wait_s=wait)
