"""Daemon time: one seam so room timers, backoffs and watchdogs can be driven by tests.

The room machine never reads a clock (``now`` is an argument of ``step``); the supervisor asks a
:class:`Clock` for ``now()`` and sleeps with ``sleep_until``. Production uses :class:`SystemClock`;
tests use :class:`ManualClock`, where time moves only on :meth:`ManualClock.advance`, so a
three-minute outage is replayed in microseconds and no test waits on wall-clock time.

Times are aware UTC :class:`datetime` values: they go into the store, MQTT snapshots and logs
as-is, and comparing aware datetimes cannot silently mix time zones.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Current time and a way to wait until a given time."""

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when`` (at once if it already is). Cancellable."""


class SystemClock:
    """Wall-clock time on the running event loop."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        # Re-check after waking: the loop's monotonic clock and the wall clock can drift apart
        # (NTP step), and an early wake must not fire a timer before its time.
        while True:
            delay = (when - self.now()).total_seconds()
            if delay <= 0:
                return
            await asyncio.sleep(delay)


@dataclass(order=True)
class _Sleeper:
    when: datetime
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class ManualClock:
    """Time stands still until :meth:`advance`; sleepers wake in (due time, arrival) order.

    ``advance`` is synchronous: it resolves the futures of every sleeper that is due. The woken
    coroutines run the next time the test yields to the loop (e.g. while awaiting a condition).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, _Sleeper(when, next(self._seq), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper that became due."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.set(self._now + timedelta(seconds=seconds))

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not earlier than now) and wake every sleeper that became due."""
        if when < self._now:
            raise ValueError("time only moves forward")
        self._now = when
        while self._sleepers and self._sleepers[0].when <= self._now:
            sleeper = heapq.heappop(self._sleepers)
            if not sleeper.future.done():
                sleeper.future.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many sleepers are waiting (cancelled ones included until they are due)."""
        return sum(1 for s in self._sleepers if not s.future.done())

    def next_wakeup(self) -> datetime | None:
        """When the earliest live sleeper is due, or None."""
        live = [s.when for s in self._sleepers if not s.future.done()]
        return min(live) if live else None
