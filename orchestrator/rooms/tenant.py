"""Tenant-wide reads: startup adoption and the periodic poll, one paged listing for all rooms.

A room reads its own job only when it has reason to; these listings are how a quiet daemon still
sees every room's truth at a cost of one paged call, not one call per room. The daemon's poller
(``orchestrator.app``) decides when to call :meth:`TenantPoll.poll_once`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from orchestrator.clock import Clock
from orchestrator.rooms.effects import ACTIVE, AdoptHints, CloudPort, observed
from orchestrator.rooms.machine import step
from orchestrator.rooms.model import (
    Event,
    JobObserved,
    JobsListed,
    ObservedJob,
    Poked,
    RoomSink,
)
from orchestrator.rooms.recorder import durable_change
from orchestrator.rooms.worker import RoomWorker

__all__ = ["AdoptionReport", "TenantPoll"]

log = structlog.get_logger(__name__)

_POLL_CHUNK = 100  # rooms whose poll observation is posted per event-loop turn


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


class TenantPoll:
    """Reads the tenant's running jobs and hands each supervised room its part."""

    def __init__(
        self,
        *,
        cloud: CloudPort,
        clock: Clock,
        workers: Mapping[str, RoomWorker],
        sink: RoomSink,
        hints: AdoptHints,
        owns: Callable[[str, datetime], bool] | None,
        settled: asyncio.Event,
    ) -> None:
        self._cloud = cloud
        self._clock = clock
        self._workers = workers  # the supervisor's own map: rooms come and go
        self._sink = sink  # where observations go (the supervisor's ``post``)
        self._hints = hints
        self._owns = owns
        self._settled = settled
        self.running = 0  # polls in progress (the supervisor is not idle meanwhile)
        self.tenant_jobs_seen = 0
        """Running jobs in the tenant's last full listing (ours or not): sizes the poll."""

    async def list_jobs(self) -> dict[str, list[ObservedJob]]:
        """One paged tenant listing: room → its running jobs (the fleet's reader shares it)."""
        return await self._tenant_jobs()

    async def _tenant_jobs(self) -> dict[str, list[ObservedJob]]:
        by_room: dict[str, list[ObservedJob]] = {}
        seen = 0
        async for job in self._cloud.iter_tenant_job_briefs(states=ACTIVE):
            seen += 1
            if job.room_id:
                by_room.setdefault(job.room_id, []).append(observed(job))
        self.tenant_jobs_seen = seen
        return by_room

    async def adopt_all(self) -> AdoptionReport:
        """Startup: hand every managed room the tenant's running jobs (one paged list).

        Rooms reconcile from it (adopt, or list-then-start, or rest). Jobs in rooms we do not
        manage are reported and left alone. Cloud errors propagate: the caller retries.
        """
        by_room = await self._tenant_jobs()
        workers = self._workers
        self._hints.offer({rid: tuple(jobs) for rid, jobs in by_room.items() if rid in workers})
        report = AdoptionReport()
        for rid, jobs in sorted(by_room.items()):
            if rid in workers:
                report.adopted[rid] = [j.job_id for j in jobs]
            else:
                report.unmanaged.extend((rid, j.job_id) for j in jobs)
        for rid in sorted(workers):
            jobs = by_room.get(rid, [])
            if not jobs:
                report.without_jobs.append(rid)
            self._sink.post(rid, JobsListed(jobs=tuple(jobs), cause="startup:adopt"))
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
        self.running += 1
        try:
            await self._poll_rooms()
        finally:
            self.running -= 1
            self._settled.set()

    async def apply_listing(
        self, by_room: Mapping[str, Sequence[ObservedJob]], *, jobs_seen: int
    ) -> None:
        """A listing made elsewhere (the fleet's tenant reader) → every supervised room's part,
        exactly as :meth:`poll_once` would hand it its own listing."""
        self.running += 1
        try:
            self.tenant_jobs_seen = jobs_seen
            await self._post_listing(by_room)
        finally:
            self.running -= 1
            self._settled.set()

    async def _poll_rooms(self) -> None:
        await self._post_listing(await self._tenant_jobs())

    async def _post_listing(self, by_room: Mapping[str, Sequence[ObservedJob]]) -> None:
        for i, (rid, w) in enumerate(list(self._workers.items())):
            if i % _POLL_CHUNK == _POLL_CHUNK - 1:
                # Each room handles its observation on the next loop turn: posting 10,000 at
                # once queued 10,000 handlers ahead of a drop's callback (react p99 240 ms).
                await asyncio.sleep(0)
            jobs = {j.job_id: j for j in by_room.get(rid, [])}
            current = w.room.job_id
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
            if not (isinstance(ev, JobObserved) and self._observe_inline(rid, w, ev)):
                self._sink.post(rid, ev)

    def _observe_inline(self, rid: str, w: RoomWorker, ev: JobObserved) -> bool:
        """Apply a poll observation right here when the machine says it changes nothing but
        the room's stamps (no action, nothing durable): most of every poll, which through the
        room's queue cost a task switch, a config check and an event copy per room. Anything
        else — or a room busy with another event — goes through the queue as usual; ``step``
        is pure, so a result thrown away here changed nothing."""
        if w.closing or w.busy.locked() or not w.queue.empty():
            return False
        now = self._clock.now()
        if self._owns is not None and not self._owns(rid, now):
            return False
        before = w.room
        after, actions = step(before, ev, now, w.policy)
        if actions or durable_change(before, after):
            return False
        w.room = after
        return True
