"""The daemon's background loops: the tenant poll, SLA flushing, retention, log repeats, probes.

Each is a small object with a ``run()`` coroutine that ``orchestrator.app`` starts as a named
task in its TaskGroup (a loop that raises takes the daemon down, as every service does). None of
them lets a store or cloud failure end the loop: streams matter more than housekeeping.

* :class:`TenantPoller`: the level-triggered safety net behind the callbacks: the paged tenant
  job list, every poll period ± 20 % (``rooms.policy.poll_period``), then the systemd status.
* :class:`SlaBook`: hands the SLA accumulator's seconds to the store every minute (and at
  stop), updates the SLA metrics and, with Home Assistant discovery, the retained SLA of today.
* :class:`Retention`: prunes every growing table by ``[retention]``.
* :func:`log_repeats_loop`: reports log lines the repeat limiter dropped.
* :func:`probe_runner`: the playback probes over the rooms that have a ``playback_url``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from orchestrator import logging as olog
from orchestrator.clock import Clock
from orchestrator.errors import OrchestratorError
from orchestrator.ops import systemd
from orchestrator.ops.metrics import Metrics
from orchestrator.probe import ProbeRunner
from orchestrator.rooms import model
from orchestrator.rooms.policy import poll_period
from orchestrator.settings import ProbeSettings, Settings
from orchestrator.sla import SlaAccumulator
from orchestrator.store.base import PruneCutoffs, SlaRow, Store, StoreError

__all__ = [
    "Retention",
    "SlaBook",
    "SlaPublisher",
    "TenantPoller",
    "log_repeats_loop",
    "probe_runner",
]

log = structlog.get_logger(__name__)

SLA_CHUNK = 500  # (room, day) rows per SLA flush transaction
SLA_FLUSH_S = 60.0


class Pollable(Protocol):
    """What the poller needs of the room supervisor."""

    @property
    def tenant_jobs_seen(self) -> int: ...
    @property
    def room_count(self) -> int: ...
    async def poll_once(self) -> None: ...


class TenantPoller:
    """Level-triggered safety net: the paged tenant job list, every poll period ± 20 %
    (sized by the tenant's job count and the poll's query budget: ``poll_period``)."""

    def __init__(
        self,
        rooms: Pollable,
        *,
        settings: Callable[[], Settings],
        rng: random.Random,
        status: Callable[[], str],
    ) -> None:
        self._rooms = rooms
        self._settings = settings
        self._rng = rng
        self._status = status

    async def run(self) -> None:
        while True:
            r = self._settings().recovery
            period = poll_period(
                max(self._rooms.tenant_jobs_seen, self._rooms.room_count),
                longest_s=r.poll_interval_s,
                shortest_s=r.poll_min_interval_s,
                queries_per_s=r.poll_queries_per_s,
            )
            await asyncio.sleep(period * (0.8 + 0.4 * self._rng.random()))
            try:
                await self._rooms.poll_once()
            except OrchestratorError as exc:
                log.warning("poll_failed", error=str(exc))
            systemd.status(self._status())


class SlaPublisher(Protocol):
    """The MQTT bridge's retained SLA topic (queues; never blocks)."""

    def publish_sla(self, room_id: str, sla: Mapping[str, Any]) -> None: ...


class SlaBook:
    """SLA seconds from the accumulator to the store, the metrics and MQTT (see module doc)."""

    def __init__(
        self,
        sla: SlaAccumulator,
        *,
        store: Store,
        metrics: Metrics,
        clock: Clock,
        settings: Callable[[], Settings],
    ) -> None:
        self._sla = sla
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._settings = settings
        self.publisher: SlaPublisher | None = None
        """Set when MQTT runs; with ``mqtt.ha_discovery`` each flush publishes today's SLA."""
        self._published: dict[str, dict[str, Any]] = {}  # last SLA sent per room (MQTT)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SLA_FLUSH_S)
            await self.flush()

    def forget(self, room_id: str) -> None:
        """A room left the config: no more SLA for it."""
        self._sla.forget(room_id)
        self._published.pop(room_id, None)

    async def flush(self) -> None:
        """Hand accumulated SLA seconds to the store. A store failure keeps what was not
        written for the next flush (never lost, never counted twice) and does not stop the
        daemon: SLA figures are bookkeeping, streams matter more."""
        self._sla.tick(self._clock.now())
        pending = list(self._sla.drain().items())
        # One transaction per chunk, not one per room: 10,000 rooms made 10,000 commits a
        # minute (most of a quiet daemon's CPU in the scale bench).
        for start in range(0, len(pending), SLA_CHUNK):
            chunk = pending[start : start + SLA_CHUNK]
            rows = [
                SlaRow(room_id, day, d.scheduled_s, d.live_s, d.drops, len(d.recoveries),
                       sum(d.recoveries), max(d.recoveries, default=0.0))
                for (room_id, day), d in chunk
            ]  # fmt: skip
            try:
                await self._store.add_sla_rows(rows)
            except StoreError as exc:
                left = dict(pending[start:])
                self._sla.restore(left)
                log.warning("sla_flush_failed", error=str(exc), rooms_pending=len(left))
                return
            for (room_id, _), d in chunk:
                self._metrics.sla(room_id, live_s=d.live_s, scheduled_s=d.scheduled_s)
        if self.publisher is not None and self._settings().mqtt.ha_discovery:
            await self._publish_today(self.publisher)

    async def _publish_today(self, publisher: SlaPublisher) -> None:
        """Each room's SLA of the UTC day, retained on MQTT when it changed (Home Assistant's
        SLA sensor). One store read per flush; a failure skips this minute, nothing else."""
        today = self._clock.now().date()  # an aware UTC time: the store's UTC day
        try:
            rows = await self._store.sla(today)
        except StoreError as exc:
            log.warning("sla_publish_failed", error=str(exc))
            return
        settings = self._settings()
        for row in rows:
            if row.day != today or settings.room(row.room_id) is None:
                continue
            pct = 100.0 * row.live_s / row.scheduled_s if row.scheduled_s > 0 else None
            body = {
                "day": today.isoformat(),
                "scheduled_s": round(row.scheduled_s, 1),
                "live_s": round(row.live_s, 1),
                "percent": None if pct is None else round(min(pct, 100.0), 2),
            }
            if self._published.get(row.room_id) != body:
                self._published[row.room_id] = body
                publisher.publish_sla(row.room_id, body)


class Retention:
    """Prune every growing table by ``[retention]``: at once, then every ``interval_s`` (read
    each time, so a reload applies). A store failure skips one pass, never the daemon."""

    def __init__(self, store: Store, *, clock: Clock, settings: Callable[[], Settings]) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self.runs = 0
        """Completed retention passes (tests and the bench wait on it through ``done``)."""
        self.done = asyncio.Condition()

    async def run(self) -> None:
        while True:
            await self.prune_once()
            interval = self._settings().retention.interval_s
            await self._clock.sleep_until(self._clock.now() + timedelta(seconds=interval))

    async def prune_once(self) -> dict[str, int]:
        r = self._settings().retention
        now = self._clock.now()

        def ago(days: float) -> datetime:
            return now - timedelta(days=days)

        cutoffs = PruneCutoffs(
            inbox=ago(r.inbox_days),
            replies=ago(r.replies_days),
            transitions=ago(r.transitions_days),
            jobs=ago(r.jobs_days),
            start_intents=ago(r.start_intents_days),
            alerts=ago(r.alerts_days),
            sla=ago(r.sla_days).date(),
        )
        counts: dict[str, int] = {}
        try:
            counts = await self._store.prune_older(cutoffs)
        except StoreError as exc:
            log.warning("retention_prune_failed", error=str(exc))
        else:
            if any(counts.values()):
                log.info("retention_pruned", **counts)
        async with self.done:
            self.runs += 1
            self.done.notify_all()
        return counts


async def log_repeats_loop(settings: Callable[[], Settings]) -> None:
    """Report log lines the repeat limiter dropped once their flood has stopped."""
    while True:
        await asyncio.sleep(settings().limits.log_repeat_interval_s)
        olog.flush_repeats()


class Snapshots(Protocol):
    def snapshot(self, room_id: str) -> model.Snapshot: ...


def probe_runner(
    sink: model.RoomSink, rooms: Snapshots, *, settings: Callable[[], Settings], clock: Clock
) -> ProbeRunner:
    """The playback probes; the room list and each room's probe settings are re-read on every
    tick, so a reload applies."""

    def probed() -> dict[str, tuple[str, ProbeSettings]]:
        cfg = settings()
        return {
            r.id: (r.playback_url, cfg.probe_for(r.id))
            for r in cfg.rooms
            if r.playback_url and cfg.probe_for(r.id).enabled
        }

    def snapshot(room_id: str) -> model.Snapshot | None:
        return rooms.snapshot(room_id) if settings().room(room_id) else None

    return ProbeRunner(sink, rooms=probed, snapshot=snapshot, clock=clock)
