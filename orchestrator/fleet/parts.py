"""What an instance among several adds to the daemon, built in one place for ``app``.

:class:`Fleet` connects the shared budget to the ownership manager at once (so every lease tick
re-applies the shares) and starts the fleet's tenant read, with its LISTEN connection, in place
of the lone instance's poller.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence

from orchestrator.clock import Clock
from orchestrator.fleet.reader import (
    FleetTenantRead,
    Listings,
    fleet_signals,
    gain_hints,
    sweep_channel,
)
from orchestrator.fleet.share import FleetBudget
from orchestrator.metastudio.ratelimit import RateLimits
from orchestrator.ops.metrics import Metrics
from orchestrator.ownership import OwnershipManager
from orchestrator.rooms.model import ObservedJob
from orchestrator.settings import Settings
from orchestrator.store.base import SweepStore

__all__ = ["Fleet"]


class Fleet:
    """The budget (from construction) and the tenant read (from :meth:`start_read`)."""

    def __init__(
        self,
        ownership: OwnershipManager,
        limits: RateLimits,
        settings: Callable[[], Settings],
        metrics: Metrics | None = None,
    ) -> None:
        self._ownership = ownership
        self._settings = settings
        shown = (lambda s, r: metrics.api_shares(s, reader=r)) if metrics is not None else None
        self.budget = FleetBudget(
            limits, reader_query_share=lambda: settings().store.reader_query_share, on_shares=shown
        )
        ownership.on_change = self.budget.update
        self.signals = fleet_signals(settings().store)
        """The instance's one LISTEN connection: subscribe (``fleet.callbacks``) before
        :meth:`start_read` starts it."""
        self.read: FleetTenantRead | None = None

    def hints_for_gains(
        self, store: SweepStore, clock: Clock
    ) -> Callable[[Sequence[str]], Awaitable[dict[str, tuple[ObservedJob, ...]]]]:
        """Gained rooms' first list answered from the latest sweep (``Handover.hints``)."""

        async def hints(room_ids: Sequence[str]) -> dict[str, tuple[ObservedJob, ...]]:
            max_age = self._settings().recovery.poll_interval_s
            return await gain_hints(store, room_ids, now=clock.now(), max_age_s=max_age)

        return hints

    def start_read(
        self,
        tg: asyncio.TaskGroup,
        rooms: Listings,
        store: SweepStore,
        *,
        clock: Clock,
        rng: random.Random,
        status: Callable[[], str],
    ) -> FleetTenantRead:
        """The fleet's poller and its LISTEN connection, as two tasks of ``tg``."""
        s = self._settings().store
        self.read = FleetTenantRead(
            rooms, self._ownership, store, self.signals, channel=sweep_channel(s), clock=clock,
            settings=self._settings, rng=rng, status=status,
        )  # fmt: skip
        tg.create_task(self.signals.run(), name="signals")
        tg.create_task(self.read.run(), name="poller")
        return self.read
