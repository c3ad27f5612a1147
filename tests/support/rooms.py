"""Helpers for the room supervisor tests: an in-memory cloud (our CloudPort seam), a room
config factory, and a harness that runs a supervisor and waits on conditions (never on time)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from orchestrator.clock import ManualClock
from orchestrator.errors import NotFound, StartOutcomeUnknown
from orchestrator.metastudio.models import LiveExitConfig, StartSmartLiveReq
from orchestrator.rooms.model import RoomState, Snapshot
from orchestrator.rooms.startreq import RoomConfig
from orchestrator.rooms.supervisor import RoomSupervisor, Transition
from orchestrator.settings import OutputTarget, RecoverySettings, RoomSettings, Settings


@dataclass
class FakeJob:
    job_id: str
    room_id: str
    state: str = "PROCESSING"


@dataclass
class Started:
    job_id: str


@dataclass
class Command:
    command_id: str


@dataclass
class FakeCloud:
    """A tiny tenant. ``faults[op]`` is a list of exceptions raised by the next calls of op;
    ``ghost_starts`` makes the next starts create the job but lose the answer."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)
    faults: dict[str, list[Exception]] = field(default_factory=dict)
    ghost_starts: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    requests: list[StartSmartLiveReq] = field(default_factory=list)
    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counter: int = 0

    def _fault(self, op: str) -> None:
        pending = self.faults.get(op)
        if pending:
            raise pending.pop(0)

    def running(self, room_id: str | None = None) -> list[FakeJob]:
        return [
            j for j in self.jobs.values()
            if j.state in ("WAITING", "PROCESSING") and room_id in (None, j.room_id)
        ]  # fmt: skip

    async def start_job(self, room_id: str, req: StartSmartLiveReq) -> Started:
        self.calls.append(("start", room_id))
        self.requests.append(req)
        self._fault("start")
        self.counter += 1
        job = FakeJob(f"job-{self.counter}", room_id)
        self.jobs[job.job_id] = job
        if self.ghost_starts:
            self.ghost_starts -= 1
            raise StartOutcomeUnknown("timeout after send", operation="start_smart_live")
        return Started(job.job_id)

    async def stop_job(self, room_id: str, job_id: str) -> None:
        self.calls.append(("stop", job_id))
        self._fault("stop")
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound("no such job", status=404)
        if job.state in ("WAITING", "PROCESSING"):
            job.state = "SUCCEED"

    async def show_job(self, room_id: str, job_id: str) -> FakeJob:
        self.calls.append(("show", job_id))
        self._fault("show")
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound("no such job", status=404)
        return job

    async def _iter(self, jobs: list[FakeJob]) -> AsyncIterator[FakeJob]:
        for j in jobs:
            yield j

    def iter_room_jobs(
        self, room_id: str, *, states: Sequence[str] | None = None
    ) -> AsyncIterator[FakeJob]:
        self.calls.append(("list", room_id))
        self._fault("list")
        return self._iter([j for j in self.running(room_id) if not states or j.state in states])

    def iter_tenant_job_briefs(
        self, *, states: Sequence[str] | None = None
    ) -> AsyncIterator[FakeJob]:
        self.calls.append(("list_tenant", ""))
        self._fault("list")
        return self._iter([j for j in self.running() if not states or j.state in states])

    async def refresh_output_url(
        self, room_id: str, job_id: str, *, output_url: str, stream_key: str
    ) -> None:
        self.calls.append(("refresh", output_url))
        self._fault("command")
        self.commands.append(("REFRESH_OUTPUT_URL", {"url": output_url}))

    async def reset_exit_config(self, room_id: str, job_id: str, config: LiveExitConfig) -> None:
        self.calls.append(("reset_exit", job_id))
        self._fault("command")
        self.commands.append(("RESET_EXIT_CONFIG", config.model_dump(exclude_none=True)))

    async def insert_play_script(
        self, room_id: str, job_id: str, text: str, *, play_type: str = "PLAY_NOW"
    ) -> Command:
        self.calls.append(("insert_script", job_id))
        self._fault("command")
        self.commands.append(("INSERT_PLAY_SCRIPT", {"text": text, "play_type": play_type}))
        return Command(f"cmd-{len(self.commands)}")

    def count(self, op: str) -> int:
        return sum(1 for c in self.calls if c[0] == op)


def room_config(room_id: str = "room-a", **recovery: Any) -> RoomConfig:
    return RoomConfig(
        room=RoomSettings(
            id=room_id,
            output_url="rtmp://push.example.com/live",
            stream_key=SecretStr("primary-key"),
            backup_outputs=[
                OutputTarget(
                    url="rtmp://backup.example.com/live", stream_key=SecretStr("backup-key")
                )
            ],
        ),
        recovery=RecoverySettings(**recovery),
    )


def settings_for(*configs: RoomConfig) -> Settings:
    """Settings that build exactly ``configs`` (each room's recovery as its per-room override,
    the callback target from the first config that has one)."""
    rooms = [c.room.model_copy(update={"recovery": c.recovery.model_dump()}) for c in configs]
    callback = next((c.callback for c in configs if c.callback is not None), None)
    kw: dict[str, Any] = {}
    if callback is not None:
        kw["http"] = {"public_callback_url": callback.url}
        kw["callbacks"] = {"auth_type": callback.auth_type, "key": callback.key}
    return Settings(rooms=rooms, **kw)


class Rooms:
    """The rooms a test supervisor manages, named as the daemon names them: the ids, each
    room's current settings, and the settings they are built with. ``put`` replaces a room's
    settings (a reload, an output override), as the daemon's settings object is replaced."""

    def __init__(self, *configs: RoomConfig) -> None:
        self.configs = {c.room_id: c for c in configs}
        self.settings = settings_for(*configs)

    def lookup(self, room_id: str) -> RoomSettings | None:
        return self.settings.room(room_id)

    def ids(self) -> list[str]:
        return [r.id for r in self.settings.rooms]

    def put(self, cfg: RoomConfig) -> None:
        self.configs[cfg.room_id] = cfg
        self.settings = settings_for(*self.configs.values())


def make_supervisor(rooms: Rooms, **kw: Any) -> RoomSupervisor:
    """A supervisor over ``rooms`` (``kw``: cloud, store, clock, rng, listeners, owns, ...)."""
    return RoomSupervisor(
        rooms=rooms.lookup, room_ids=rooms.ids, settings=lambda: rooms.settings, **kw
    )


class Harness:
    """Runs a supervisor in the background; waits on conditions, never on wall time."""

    def __init__(self, sup: RoomSupervisor, clock: ManualClock, rooms: Rooms | None = None) -> None:
        self.sup = sup
        self.clock = clock
        self.rooms = rooms
        self.transitions: list[Transition] = []
        self._changed = asyncio.Event()
        sup.add_listener(self._on)
        self.task: asyncio.Task[None] | None = None

    def _on(self, t: Transition) -> None:
        self.transitions.append(t)
        self._changed.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.sup.run(), name="test:supervisor")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def until(self, pred: Callable[[], bool], what: str = "", timeout: float = 5.0) -> None:
        """Wait until ``pred()`` holds: woken by every transition, re-checked every 20 ms for
        conditions that change without one (cloud calls)."""

        async def loop() -> None:
            while not pred():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.02)

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}: {self.sup.snapshots()}") from None

    async def state(self, room_id: str, state: RoomState, timeout: float = 5.0) -> Snapshot:
        await self.until(lambda: self.sup.snapshot(room_id).state is state, f"{room_id} {state}",
                         timeout)  # fmt: skip
        return self.sup.snapshot(room_id)


__all__ = [
    "Command", "FakeCloud", "FakeJob", "Harness", "Rooms", "Started", "make_supervisor",
    "room_config", "settings_for",
]  # fmt: skip
