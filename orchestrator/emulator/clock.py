"""Simulation time for the emulator: a real clock (optionally compressed) or a manual one.

All simulated delays (WAITING → PROCESSING, reconnect attempts, exit deadlines, script
switches) go through :class:`Clock.call_later`, so tests advance time deterministically with
:meth:`ManualClock.advance` and a demo can run a three-minute outage in eighteen seconds with
``RealClock(time_scale=10)``. Timestamps stay wall-clock with a real clock; only the waits shrink.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Clock", "ManualClock", "RealClock", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Simulation time in Unix seconds plus a way to run a callback after a simulated delay."""

    def now(self) -> float: ...

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> TimerHandle: ...


class RealClock:
    """Wall-clock time; simulated delays are divided by ``time_scale`` (needs a running loop)."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale

    def now(self) -> float:
        return time.time()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(max(0.0, delay_s) / self.time_scale, fn)


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Time moves only when :meth:`advance` is called; due timers fire in (due, insertion) order."""

    def __init__(self, start: float = 1_704_067_200.0) -> None:  # 2024-01-01T00:00:00Z
        self._now = start
        self._heap: list[_Entry] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> TimerHandle:
        entry = _Entry(self._now + max(0.0, delay_s), next(self._seq), fn)
        heapq.heappush(self._heap, entry)
        return entry

    def advance(self, seconds: float) -> int:
        """Move time forward, firing every timer due on the way (including ones they schedule)."""
        target = self._now + max(0.0, seconds)
        fired = 0
        while self._heap and self._heap[0].due <= target:
            entry = heapq.heappop(self._heap)
            if entry.cancelled:
                continue
            self._now = max(self._now, entry.due)
            entry.fn()
            fired += 1
        self._now = target
        return fired

    def pending(self) -> int:
        return sum(1 for e in self._heap if not e.cancelled)
