"""APScheduler 3.x adapter: turns :class:`RoomSchedule` s into WindowOpened/WindowClosed events.

Why it looks like this:

* The job store is APScheduler's **memory** store, rebuilt from config + store overrides at
  every start and reload (:meth:`WindowScheduler.apply`). Nothing is pickled: our store is the
  only source of truth, a second persisted copy of the plan could only disagree with it.
* Only the next occurrence per room is planned (at most one ``open:`` and one ``close:`` job per
  room), and each fire re-plans its room, so 1,000+ rooms keep the job store at ~2,000 jobs.
* Jobs only post events into the :class:`RoomSink`; the room machine decides what to do.
* Boot and reload catch-up is computed directly from the schedule (``active_at``), not left to
  APScheduler's misfire handling. A job missed beyond ``misfire_grace_s`` is logged
  (``schedule_job_missed``) and its room re-evaluated the same way.
* A planned rollover (daily restart, 168 h limit) is one ``open:`` job that posts
  ``WindowClosed(old, cause="schedule:rollover")`` then ``WindowOpened(new)`` in that order.
* ``WindowOpened.cause`` carries ``expected_delay_s=<s>``: where this start sits in the herd of
  windows opening at the same instant, divided by the tenant start rate (4/s by default). The
  rate limiter in the client does the real spreading; this number is for display.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from orchestrator.rooms.model import RoomSink, WindowClosed, WindowOpened
from orchestrator.schedule.windows import RoomSchedule, Window

__all__ = ["WindowScheduler", "expected_start_delay"]

log = structlog.get_logger(__name__)
UTC = UTC


def expected_start_delay(position_in_queue: int, rate_per_s: float) -> float:
    """Seconds until the start at ``position_in_queue`` (0 = first) passes a rate limit."""
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be > 0")
    return max(0, position_in_queue) / rate_per_s


def _cause(kind: str, delay: float | None = None) -> str:
    return f"schedule:{kind}" if delay is None else f"schedule:{kind} expected_delay_s={delay:.2f}"


class WindowScheduler:
    """Plans and fires window jobs. Call :meth:`apply` before :meth:`start` and on every reload."""

    def __init__(
        self,
        sink: RoomSink,
        *,
        now: Callable[[], datetime],
        misfire_grace_s: float,
        start_rate_per_s: float = 4.0,
    ) -> None:
        self._sink = sink
        self._now = now
        self._grace = misfire_grace_s
        self._rate = start_rate_per_s
        self._sched = AsyncIOScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(max(1, misfire_grace_s)),
            },
        )
        self._sched.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self._schedules: dict[str, RoomSchedule] = {}  # effective (overrides applied)
        self._jobs: dict[str, set[str]] = {}
        self._herd: dict[datetime, int] = {}

    def set_start_rate(self, per_s: float) -> None:
        """The starts per second a herd is spread at (several instances: this one's share of
        the tenant's start limit, so together they keep the herd limit)."""
        if per_s <= 0:
            raise ValueError("start rate must be positive")
        self._rate = per_s

    # -- lifecycle --

    def start(self, *, paused: bool = False) -> None:
        """Start the APScheduler loop (needs a running event loop). ``paused`` plans only."""
        self._sched.start(paused=paused)

    def shutdown(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)

    def next_window(self, room: str, now: datetime) -> Window | None:
        """The room's current window (if inside one) or its next one, overrides applied."""
        sched = self._schedules.get(room)
        if sched is None:
            return None
        return sched.current(now) or sched.next_after(now)

    @property
    def job_count(self) -> int:
        return sum(len(j) for j in self._jobs.values())

    def job_ids(self) -> list[str]:
        return sorted(i for ids in self._jobs.values() for i in ids)

    # -- config --

    def apply(
        self,
        schedules: Mapping[str, RoomSchedule],
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[tuple[str, WindowClosed | WindowOpened]]:
        """Replace the plan (start and reload). Returns (and posts) the reload events.

        The first call posts nothing: use :meth:`startup_events` at boot. On later calls a room
        still inside a window keeps streaming (WindowOpened with the new deadline if the window
        changed, never a WindowClosed); a room whose window was removed, paused or moved so
        that ``now`` is outside gets WindowClosed; a room newly inside a window (catch-up rule)
        gets WindowOpened. Rooms no longer configured get nothing (the app decides).
        """
        ov = overrides or {}
        now = self._now()
        first = not self._schedules
        new = {room: s.with_overrides(ov.get(room, {})) for room, s in schedules.items()}
        events: list[tuple[str, WindowClosed | WindowOpened]] = []
        if not first:
            for room, sched in new.items():
                old = self._schedules.get(room)
                old_w = old.current(now) if old is not None else None
                new_w = sched.current(now)
                if old_w is not None and new_w is None:
                    events.append(
                        (room, WindowClosed(window_id=old_w.window_id, cause=_cause("reload")))
                    )
                elif new_w is not None and old_w is not None:
                    if (new_w.window_id, new_w.end) != (old_w.window_id, old_w.end):
                        events.append((room, self._opened(new_w, "reload")))
                elif old_w is None:
                    act = sched.active_at(now)
                    if act is not None:
                        events.append((room, self._opened(act, "reload")))
        for room in set(self._schedules) - set(new):
            self._unplan(room)
        self._schedules = new
        for room in new:
            self._plan(room, now)
        for room, ev in events:
            self._post(room, ev)
        log.info("schedule_applied", rooms=len(new), jobs=self.job_count, events=len(events))
        return events

    def startup_events(self, now: datetime) -> list[tuple[str, WindowOpened]]:
        """Per room inside a window at boot (catch-up rule): the WindowOpened to post now."""
        out: list[tuple[str, WindowOpened]] = []
        for room, sched in sorted(self._schedules.items()):
            w = sched.active_at(now)
            if w is not None:
                delay = expected_start_delay(len(out), self._rate)
                out.append((room, self._event(w, "catch_up", delay)))
        return out

    # -- planning --

    def _unplan(self, room: str) -> None:
        for job_id in self._jobs.pop(room, set()):
            with contextlib.suppress(JobLookupError):  # already fired and removed
                self._sched.remove_job(job_id)

    def _plan(self, room: str, now: datetime) -> None:
        """Plan the next close and the next open of ``room`` (replacing its previous plan)."""
        self._unplan(room)
        sched = self._schedules.get(room)
        if sched is None:
            return
        ids: set[str] = set()
        cur = sched.current(now)
        nxt = sched.next_after(now)
        rollover = cur is not None and nxt is not None and cur.end == nxt.start
        if cur is not None and cur.end is not None and not rollover:
            ids.add(
                self._add(f"close:{room}:{cur.window_id}", cur.end, self._fire_close, room, cur)
            )
        if nxt is not None:
            prev = cur if rollover else None
            ids.add(
                self._add(
                    f"open:{room}:{nxt.window_id}", nxt.start, self._fire_open, room, nxt, prev
                )
            )
        self._jobs[room] = ids

    def _add(self, job_id: str, at: datetime, func: Callable[..., Any], *args: object) -> str:
        self._sched.add_job(
            func,
            trigger=DateTrigger(run_date=at.astimezone(UTC), timezone=UTC),
            id=job_id,
            args=args,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(max(1, self._grace)),
        )
        return job_id

    # -- firing --

    def _event(self, w: Window, kind: str, delay: float | None = None) -> WindowOpened:
        return WindowOpened(
            window_id=w.window_id,
            window_start=w.start,
            deadline=w.end,
            expected_delay_s=delay or 0.0,
            cause=_cause(kind, delay),
        )

    def _opened(self, w: Window, kind: str) -> WindowOpened:
        n = self._herd.get(w.start, 0)
        if len(self._herd) > 64:
            self._herd = {k: v for k, v in self._herd.items() if k >= w.start - timedelta(hours=1)}
        self._herd[w.start] = n + 1
        return self._event(w, kind, expected_start_delay(n, self._rate))

    def _post(self, room: str, ev: WindowOpened | WindowClosed) -> None:
        if not self._sink.post(room, ev):
            # with several instances a room owned elsewhere is normal: not worth a warning
            log.debug("schedule_room_not_here", room_id=room, window_id=ev.window_id)

    async def _fire_open(self, room: str, w: Window, prev: Window | None) -> None:
        now = self._now()
        if prev is not None:
            self._post(room, WindowClosed(window_id=prev.window_id, cause=_cause("rollover")))
        if w.end is None or now < w.end:
            self._post(room, self._opened(w, "rollover" if prev is not None else "open"))
            log.info("schedule_window_opened", room_id=room, window_id=w.window_id)
        self._plan(room, now)

    async def _fire_close(self, room: str, w: Window) -> None:
        now = self._now()
        self._post(room, WindowClosed(window_id=w.window_id, cause=_cause("close")))
        log.info("schedule_window_closed", room_id=room, window_id=w.window_id)
        self._plan(room, now)

    def _on_missed(self, event: JobExecutionEvent) -> None:
        """APScheduler skipped a job (beyond misfire grace): log, then re-evaluate the room.

        Deferred to the next loop turn: APScheduler removes the fired job after this listener
        returns, which would also remove a re-planned job with the same id.
        """
        job_id = str(event.job_id)
        log.warning(
            "schedule_job_missed",
            job_id=job_id,
            scheduled_at=event.scheduled_run_time.isoformat() if event.scheduled_run_time else None,
        )
        asyncio.get_running_loop().call_soon(self._catch_up, job_id)

    def _catch_up(self, job_id: str) -> None:
        kind, _, rest = job_id.partition(":")
        room = rest.rpartition(":")[0]
        sched = self._schedules.get(room)
        if sched is None:
            return
        now = self._now()
        window_id = rest.rpartition(":")[2]
        cur = sched.current(now)
        if kind == "close" and (cur is None or cur.window_id != window_id):
            self._post(room, WindowClosed(window_id=window_id, cause=_cause("close_late")))
        elif kind == "open":
            act = sched.active_at(now)
            if act is not None:
                self._post(room, self._opened(act, "catch_up"))
        self._plan(room, now)

    async def run_due(self) -> int:
        """Fire every planned job due at ``now()`` in time order, in this task (for tests and
        for a paused scheduler). Jobs late beyond the grace go the 'missed' way. Returns count.
        """
        fired = 0
        while True:
            now = self._now()
            due = sorted(
                (j for j in self._sched.get_jobs() if j.next_run_time and j.next_run_time <= now),
                key=lambda j: (j.next_run_time, j.id),
            )
            if not due:
                return fired
            job = due[0]
            self._sched.remove_job(job.id)
            if now - job.next_run_time > timedelta(seconds=self._grace):
                log.warning(
                    "schedule_job_missed", job_id=job.id, scheduled_at=job.next_run_time.isoformat()
                )
                self._catch_up(job.id)
            else:
                await job.func(*job.args)
            fired += 1
