"""The effects of a room's actions: one table from action type to the coroutine that does it.

Every cloud error is turned into an event that says what happened (see ``rooms.model``) and is
posted back into the room's queue: the machine decides what to do next. An action whose
coroutine raises something unmapped still answers (its table entry's ``unexpected``), or the
room would wait forever for a call that is over. Start intents are written to the store *before*
the start call. ``FencedOut`` passes through: another instance owns the room.

:class:`InsertScript` is the one action whose answer goes to a caller instead of the room
(:class:`Replies`); it runs beside the room's worker, like the command call it replaced did, so
a drop arriving meanwhile is not held up by a speech command.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from orchestrator.clock import Clock
from orchestrator.control import CommandError
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
from orchestrator.rooms.machine import ACTIVE_JOB_STATES
from orchestrator.rooms.model import (
    Action,
    ClearAlert,
    CommandFailed,
    CommandSucceeded,
    Event,
    InsertScript,
    InsertScriptRequested,
    JobObserved,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ListJobs,
    ObservedJob,
    QueryFailed,
    RaiseAlert,
    RefreshOutput,
    ResetExitConfig,
    Room,
    SetTimer,
    ShowJob,
    StartJob,
    StopFailed,
    StopJob,
)
from orchestrator.rooms.startreq import build_start_request
from orchestrator.rooms.worker import RoomWorker, short
from orchestrator.store.base import FencedOut, StartIntent, Store, StoreError

__all__ = ["ACTIVE", "AdoptHints", "CloudPort", "Effects", "Replies", "observed"]

log = structlog.get_logger(__name__)

ACTIVE = sorted(ACTIVE_JOB_STATES)
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


class _Command(Protocol):
    @property
    def command_id(self) -> Any: ...


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
    async def insert_play_script(
        self, room_id: str, job_id: str, text: str, *, play_type: str = ...
    ) -> _Command: ...


def state_of(job: object) -> str:
    state = getattr(job, "state", None)
    return str(getattr(state, "value", state) or "")


def rtmp_of(job: object) -> str | None:
    value = getattr(job, "rtmp_state", None)  # the real API has none; the emulator may add it
    return str(value) if value else None


def seconds_of(job: object, name: str) -> float | None:
    value = getattr(job, name, None)  # duration / stream_duration: optional in every answer
    return float(value) if isinstance(value, int | float) else None


def observed(job: object) -> ObservedJob:
    """A listed job as the machine sees it."""
    return ObservedJob(
        str(getattr(job, "job_id", "")), state_of(job), rtmp_of(job),
        seconds_of(job, "duration"), seconds_of(job, "stream_duration"),
    )  # fmt: skip


def _error_of(job: object) -> str | None:
    """A read's ``error_info`` as ``code: message``, masked like every cloud text we keep."""
    info = getattr(job, "error_info", None)
    if info is None:
        return None
    code, msg = getattr(info, "error_code", None), getattr(info, "error_msg", None)
    text = ": ".join(str(part) for part in (code, msg) if part)
    return mask_text(text)[:300] if text else None


def _command_failed(seq: int, command: str, exc: OrchestratorError) -> CommandFailed:
    temporary = isinstance(exc, TemporaryError)
    retry_after = exc.retry_after if isinstance(exc, TemporaryError) else None
    return CommandFailed(seq=seq, command=command, error=short(exc), temporary=temporary,
                         retry_after=retry_after)  # fmt: skip


# ----------------------------------------------------------------------------- shared state


class AdoptHints:
    """Answers for a room's first list that cost no call of its own (see ``Effects._list``).

    * *Positive hints*: ``adopt_all``'s listing at boot, or the fleet's latest sweep for rooms
      gained from another instance (:meth:`offer`, :meth:`add`).
    * *One shared listing for a large gain* (:meth:`expect`): rooms gained with no fresh sweep
      (the reader died with their owner, or none was taken yet) would each list for
      themselves: 1,500 rooms = 1,500 queries, 75-100 s of the tenant's 20/s. Instead the first
      of them to list makes one paged tenant listing (``listing``, ~1 query per 100 jobs) and
      the others wait for it. Only a listing *begun after* the room was gained answers it, and
      only positively: a room the listing shows without a job, or a failed listing, lists for
      itself as before (an empty answer could lead to a start).
    """

    def __init__(
        self,
        clock: Clock,
        listing: Callable[[], Awaitable[Mapping[str, Sequence[ObservedJob]]]] | None = None,
    ) -> None:
        self._clock = clock
        self._jobs: dict[str, tuple[ObservedJob, ...]] = {}
        self._until: datetime | None = None
        self.listing = listing
        self._waiting: dict[str, int] = {}  # room → generation it was gained in
        self._gen = 0
        self._lock = asyncio.Lock()
        self._listed: Mapping[str, Sequence[ObservedJob]] = {}
        self._listed_gen = 0  # the newest generation the last listing answers (begun after it)
        self._listed_until = clock.now()
        self.shared_listings = 0

    def offer(self, jobs: Mapping[str, tuple[ObservedJob, ...]]) -> None:
        self._jobs = dict(jobs)
        self._until = self._clock.now() + _ADOPT_HINT_TTL

    def add(self, jobs: Mapping[str, tuple[ObservedJob, ...]]) -> None:
        """More positive answers (rooms gained from another instance), same lifetime rules."""
        if self._until is not None and self._clock.now() > self._until:
            self._jobs.clear()
        self._jobs.update({room: js for room, js in jobs.items() if js})
        self._until = self._clock.now() + _ADOPT_HINT_TTL

    def take(self, room_id: str) -> tuple[ObservedJob, ...] | None:
        hint = self._jobs.pop(room_id, None)
        if self._until is not None and self._clock.now() > self._until:
            self._jobs.clear()
            self._until = hint = None
        return hint

    def expect(self, room_ids: Sequence[str]) -> None:
        """These rooms were just gained without a hint: their first list shares one listing."""
        if self.listing is None or not room_ids:
            return
        self._gen += 1
        for rid in room_ids:
            self._waiting[rid] = self._gen

    def forget(self, room_id: str) -> None:
        """The room is no longer ours (stood down): nothing is kept for it."""
        self._waiting.pop(room_id, None)
        self._jobs.pop(room_id, None)

    async def shared(self, room_id: str) -> tuple[ObservedJob, ...] | None:
        """The room's running jobs from a listing begun after it was gained (None: list alone)."""
        gen = self._waiting.pop(room_id, None)
        if gen is None or self.listing is None:
            return None
        async with self._lock:  # rooms gained together wait for the one listing
            if self._listed_gen >= gen and self._clock.now() > self._listed_until:
                self._listed = {}  # kept no longer than a hint: at most one tenant's listing
                return None  # answered long ago and listing only now: ask for itself
            if self._listed_gen < gen:
                began = self._gen
                try:
                    listed = await self.listing()
                except OrchestratorError as exc:
                    log.warning("gain_listing_failed", error=str(exc)[:300])
                    return None
                self._listed, self._listed_gen = listed, began
                self._listed_until = self._clock.now() + _ADOPT_HINT_TTL
                self.shared_listings += 1
                log.info("gain_listing_made", rooms_waiting=len(self._waiting), jobs=len(listed))
            jobs = tuple(self._listed.get(room_id, ()))
        return jobs or None


class Replies:
    """Callers waiting for a room's answer (``insert_script``), by request id.

    The caller opens its entry and always closes it when it stops waiting (answer, timeout or
    cancellation): nothing here outlives a caller, whatever happens to the request in the room.
    An answer for a closed entry is dropped, and an action whose caller is gone is not carried
    out (a script spoken after its caller was told it failed would surprise the operator).
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[str, asyncio.Future[Mapping[str, Any]]]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def open(self, room_id: str) -> tuple[int, asyncio.Future[Mapping[str, Any]]]:
        request_id = next(self._ids)
        future: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (room_id, future)
        return request_id, future

    def close(self, request_id: int) -> None:
        self._waiting.pop(request_id, None)

    def waiting(self, request_id: int) -> bool:
        entry = self._waiting.get(request_id)
        return entry is not None and not entry[1].done()

    def answer(self, request_id: int, result: Mapping[str, Any]) -> None:
        entry = self._waiting.get(request_id)
        if entry is not None and not entry[1].done():
            entry[1].set_result(result)

    def refuse(self, request_id: int, error: CommandError) -> None:
        entry = self._waiting.get(request_id)
        if entry is not None and not entry[1].done():
            entry[1].set_exception(error)

    def refuse_room(self, room_id: str, error: CommandError) -> None:
        """Refuse every open request for a room we stop working on (nothing will answer)."""
        for request_id, (rid, _) in list(self._waiting.items()):
            if rid == room_id:
                self.refuse(request_id, error)


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class _Effect:
    run: Callable[[RoomWorker, Any], Awaitable[Event | None]]
    unexpected: Callable[[Any, str], Event | None]
    """The room's answer when ``run`` raised something unmapped (the error given)."""


def _no_answer(action: Any, error: str) -> Event | None:
    return None


def _list_failed(a: ListJobs, error: str) -> Event:
    return QueryFailed(seq=a.seq, op="list", error=error)


def _show_failed(a: ShowJob, error: str) -> Event:
    return QueryFailed(seq=a.seq, op="show", error=error)


def _start_unknown(a: StartJob, error: str) -> Event:
    # it may have reached the service: list before retrying
    return JobStartFailed(seq=a.seq, error=error, temporary=True, outcome_unknown=True)


def _stop_failed(a: StopJob, error: str) -> Event | None:
    return None if a.seq == 0 else StopFailed(seq=a.seq, job_id=a.job_id, error=error)


def _refresh_failed(a: RefreshOutput, error: str) -> Event:
    return CommandFailed(seq=a.seq, command="REFRESH_OUTPUT_URL", error=error)


def _widen_failed(a: ResetExitConfig, error: str) -> Event:
    return CommandFailed(seq=a.seq, command="RESET_EXIT_CONFIG", error=error)


async def _recorded(w: RoomWorker, action: Any) -> Event | None:
    return None  # RaiseAlert / ClearAlert: stored with the step's transition (Recorder)


class Effects:
    """Carries out one room action at a time: :meth:`execute` looks its type up in one table."""

    def __init__(
        self, *, cloud: CloudPort, store: Store, hints: AdoptHints, replies: Replies
    ) -> None:
        self._cloud = cloud
        self._store = store
        self._hints = hints
        self._replies = replies
        self._table: dict[type[Action], _Effect] = {
            ListJobs: _Effect(self._list, _list_failed),
            ShowJob: _Effect(self._show, _show_failed),
            StartJob: _Effect(self._start, _start_unknown),
            StopJob: _Effect(self._stop, _stop_failed),
            RefreshOutput: _Effect(self._refresh, _refresh_failed),
            ResetExitConfig: _Effect(self._widen, _widen_failed),
            InsertScript: _Effect(self._insert_script, _no_answer),
            SetTimer: _Effect(self._set_timer, _no_answer),
            RaiseAlert: _Effect(_recorded, _no_answer),
            ClearAlert: _Effect(_recorded, _no_answer),
        }

    def handles(self) -> frozenset[type[Action]]:
        """Every action type with an entry (a test checks it is every Action in the model)."""
        return frozenset(self._table)

    def refuse_unless_accepted(
        self, rid: str, event: InsertScriptRequested, after: Room, actions: Sequence[Action]
    ) -> None:
        """The machine accepts a script by emitting :class:`InsertScript`; otherwise the
        caller hears ``not_live`` now (the same words the control API always used)."""
        if not any(isinstance(a, InsertScript) for a in actions):
            error = CommandError("not_live", f"room {rid!r} has no live job (state {after.state})")
            self._replies.refuse(event.request_id, error)

    async def execute(self, w: RoomWorker, action: Action) -> None:
        """Carry out ``action`` for ``w``'s room and post its answer, if any, to the room."""
        effect = self._table.get(type(action))
        if effect is None:
            raise TypeError(f"unknown action {type(action).__name__}")
        try:
            result = await effect.run(w, action)
        except FencedOut:
            raise
        except Exception as exc:  # an unmapped failure must still answer, or the room hangs
            log.exception("room_action_failed", room_id=w.room_id, action=type(action).__name__)
            result = effect.unexpected(action, f"unexpected {short(exc)}")
        if result is not None:
            w.post(result)

    # ------------------------------------------------------------------ the room's own calls

    async def _set_timer(self, w: RoomWorker, a: SetTimer) -> Event | None:
        w.set_timer(a.seq, a.at)
        return None

    async def _list(self, w: RoomWorker, a: ListJobs) -> Event:
        rid = w.room_id
        hint = self._hints.take(rid)
        cause = "list:startup_adopt"
        if not hint:
            hint, cause = await self._hints.shared(rid), "list:gain_shared"
        if hint:
            # A fresh room (no stored order) is IDLE when adopt_all's listing arrives and lists
            # again when its window opens a moment later: one rate-limited call per room (2,000
            # rooms = 100 s at 20 queries/s). A *positive* tenant listing seconds old answers
            # that first list: it can only lead to adopting, never to a start (an empty or old
            # answer is never reused), and a job gone since is caught by the next show/poll.
            return JobsListed(seq=a.seq, jobs=hint, cause=cause)
        try:
            jobs = [
                ObservedJob(j.job_id, state_of(j), rtmp_of(j))
                async for j in self._cloud.iter_room_jobs(rid, states=ACTIVE)
            ]
        except TemporaryError as exc:
            return QueryFailed(seq=a.seq, op="list", error=short(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            return QueryFailed(seq=a.seq, op="list", error=short(exc), temporary=False)
        return JobsListed(seq=a.seq, jobs=tuple(jobs), cause="list")

    async def _show(self, w: RoomWorker, a: ShowJob) -> Event:
        try:
            job = await self._cloud.show_job(w.room_id, a.job_id)
        except NotFound:
            return JobObserved(seq=a.seq, job_id=a.job_id, state=None, cause="show:404")
        except TemporaryError as exc:
            return QueryFailed(seq=a.seq, op="show", error=short(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            return QueryFailed(seq=a.seq, op="show", error=short(exc), temporary=False)
        return JobObserved(
            seq=a.seq, job_id=a.job_id, state=state_of(job) or None, rtmp_state=rtmp_of(job),
            duration=seconds_of(job, "duration"),
            stream_duration=seconds_of(job, "stream_duration"), error=_error_of(job), cause="show",
        )  # fmt: skip

    async def _start(self, w: RoomWorker, a: StartJob) -> Event:
        rid = w.room_id
        now = w.ctx.clock.now()
        try:
            req = build_start_request(w.cfg)
        except PermanentError as exc:
            return JobStartFailed(seq=a.seq, error=short(exc))
        intent = StartIntent(
            room_id=rid, window_key=a.window_key, attempt=a.attempt, created_at=now
        )
        try:
            fresh = await self._store.put_start_intent(intent, fence=w.fence)
        except FencedOut:
            raise  # another instance owns the room: it must not see a start from us
        except StoreError as exc:
            return JobStartFailed(seq=a.seq, error=f"start intent not stored: {short(exc)}",
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
                seq=a.seq, error=short(exc), temporary=True, outcome_unknown=True
            )
        except TemporaryError as exc:
            result = JobStartFailed(seq=a.seq, error=short(exc), temporary=True,
                                    retry_after=exc.retry_after)  # fmt: skip
        except PermanentError as exc:
            result = JobStartFailed(seq=a.seq, error=short(exc))
        else:
            outcome, job_id = "started", resp.job_id
            result = JobStarted(seq=a.seq, job_id=resp.job_id, cause="start")
        with contextlib.suppress(StoreError):
            await self._store.resolve_start_intent(
                rid, a.window_key, a.attempt, outcome=outcome, job_id=job_id
            )
        return result

    async def _stop(self, w: RoomWorker, a: StopJob) -> Event | None:
        rid = w.room_id
        try:
            await self._cloud.stop_job(rid, a.job_id)
        except (NotFound, Conflict):
            pass  # already gone / not running: that is what we wanted
        except (TemporaryError, PermanentError) as exc:
            if a.seq == 0:
                log.warning("room_stray_stop_failed", room_id=rid, job_id=a.job_id)
                return None
            if isinstance(exc, TemporaryError):
                return StopFailed(seq=a.seq, job_id=a.job_id, error=short(exc),
                                  retry_after=exc.retry_after)  # fmt: skip
            return StopFailed(seq=a.seq, job_id=a.job_id, error=short(exc), temporary=False)
        log.info("room_job_stopped", room_id=rid, job_id=a.job_id)
        if a.seq == 0:
            return None
        return JobStopped(seq=a.seq, job_id=a.job_id, cause="stop")

    async def _refresh(self, w: RoomWorker, a: RefreshOutput) -> Event:
        command = "REFRESH_OUTPUT_URL"
        outputs = w.cfg.outputs
        if not outputs:
            return CommandFailed(seq=a.seq, command=command, error="room has no output_url",
                                 temporary=False)  # fmt: skip
        target = outputs[min(a.output_index, len(outputs) - 1)]
        rid = w.room_id
        log.info("room_refresh_output", room_id=rid, job_id=a.job_id, output_index=a.output_index)
        try:
            await self._cloud.refresh_output_url(
                rid, a.job_id, output_url=target.url,
                stream_key=target.stream_key.get_secret_value(),
            )  # fmt: skip
        except OrchestratorError as exc:
            return _command_failed(a.seq, command, exc)
        return CommandSucceeded(seq=a.seq, command=command, cause="refresh")

    async def _widen(self, w: RoomWorker, a: ResetExitConfig) -> Event:
        command = "RESET_EXIT_CONFIG"
        try:
            await self._cloud.reset_exit_config(
                w.room_id, a.job_id, LiveExitConfig(max_exception_waiting_duration=a.minutes)
            )
        except OrchestratorError as exc:
            return _command_failed(a.seq, command, exc)
        return CommandSucceeded(seq=a.seq, command=command, cause="widen")

    # ------------------------------------------------------------------ a caller's call

    async def _insert_script(self, w: RoomWorker, a: InsertScript) -> Event | None:
        if not self._replies.waiting(a.request_id):
            return None  # the caller gave up (timeout): too late to speak
        assert w.tg is not None, "actions only run in the room's task"
        w.tg.create_task(self._say(w.room_id, a), name=f"room:{w.room_id}:script")
        return None

    async def _say(self, rid: str, a: InsertScript) -> None:
        try:
            res = await self._cloud.insert_play_script(rid, a.job_id, a.text, play_type=a.play_type)
        except OrchestratorError as exc:
            self._replies.refuse(a.request_id, CommandError("cloud_error", str(exc)))
        except Exception as exc:  # in the TaskGroup: a bug here must not end every room
            log.exception("room_action_failed", room_id=rid, action="InsertScript")
            self._replies.refuse(a.request_id, CommandError("cloud_error", short(exc)))
        else:
            self._replies.answer(a.request_id, {"command_id": res.command_id, "job_id": a.job_id})
        finally:  # cancelled (shutdown): the caller must not wait for its timeout
            self._replies.refuse(a.request_id, CommandError("cloud_error", "shutting down"))
