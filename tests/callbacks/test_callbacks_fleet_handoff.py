"""Callbacks to any instance, in one process: several intakes (one per "instance") on one real
SQLite store, each with its ``fleet.callbacks.CallbackHandoff``, sharing one ``LocalSignals``
(what PostgreSQL's LISTEN/NOTIFY is between processes; tests/multi has the real thing).

Our own seams are faked: which rooms an instance supervises (``Rooms``) and the rooms' queues
(``RecordingSink``). The inbox, the claim and the leases are the store's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from orchestrator.callbacks.receiver import CallbackIntake, RawCallback
from orchestrator.callbacks.verify import callback_uri, mss_signature
from orchestrator.clock import ManualClock
from orchestrator.fleet.callbacks import CallbackHandoff
from orchestrator.rooms.model import Event
from orchestrator.settings import CallbackSettings
from orchestrator.store.notify import LocalSignals
from orchestrator.store.sql import SqlStore
from tests.support.callbacks import KEY, PATH, T0, RecordingSink

pytestmark = pytest.mark.timeout(30)

CONFIGURED = {"room-1", "room-2"}


class Rooms:
    """What one instance supervises (the supervisor's view, faked)."""

    def __init__(self, jobs: dict[str, str]) -> None:
        self.jobs = dict(jobs)  # job → room, for the rooms supervised here

    def supervises(self, room_id: str) -> bool:
        return room_id in self.jobs.values()

    def room_for_job(self, job_id: str) -> str | None:
        return self.jobs.get(job_id)

    def room_ids(self) -> list[str]:
        return sorted(set(self.jobs.values()))


@dataclass
class Instance:
    name: str
    rooms: Rooms
    sink: RecordingSink
    intake: CallbackIntake
    handoff: CallbackHandoff


class Fleet:
    def __init__(self, store: SqlStore, clock: ManualClock) -> None:
        self.store = store
        self.clock = clock
        self.signals = LocalSignals()
        self.settings = CallbackSettings(auth_type="MSS_A_HEAD", key=SecretStr(KEY))

    def instance(self, name: str, jobs: dict[str, str]) -> Instance:
        rooms = Rooms(jobs)
        sink = RecordingSink(CONFIGURED)
        handoff = CallbackHandoff(
            self.store,
            owner=name,
            rooms=rooms,
            configured=CONFIGURED.__contains__,
            clock=self.clock,
            signals=self.signals,
            channel=None,  # SQLite: the hand-off announces after the commit
        )
        intake = CallbackIntake(
            self.settings,
            store=self.store,
            sink=_Owned(sink, rooms),
            room_for_job=rooms.room_for_job,
            key_for_room=lambda _room: [KEY],
            clock=self.clock.now,
            route=handoff,
        )
        handoff.dispatcher = intake.dispatcher
        return Instance(name, rooms, sink, intake, handoff)

    def raw(self, state: str, *, job: str, room: str, at: int | None = None) -> RawCallback:
        t = format(at if at is not None else int(self.clock.now().timestamp()), "x")
        message = {"room_id": room, "job_id": job, "output_url": "rtmp://x/y", "state": state}
        body = json.dumps(
            {"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(message)}
        ).encode()
        sig = mss_signature(KEY, callback_uri(PATH, "path"), t)
        return RawCallback(
            path=PATH,
            raw_query="",
            headers=[("x-hw-mss-secret", sig), ("x-hw-mss-time", t)],
            body=body,
            received_at=self.clock.now(),
        )


class _Owned:
    """A room sink that, like the supervisor, takes events only for rooms supervised here."""

    def __init__(self, sink: RecordingSink, rooms: Rooms) -> None:
        self._sink = sink
        self._rooms = rooms

    def post(self, room_id: str, event: Event) -> bool:
        return self._rooms.supervises(room_id) and self._sink.post(room_id, event)


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.01)  # the polling period, not a synchronisation


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}")
    await store.open()
    try:
        yield Fleet(store, ManualClock(T0))
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def running(fleet: Fleet, instances: Iterable[Instance]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(fleet.signals.run())]
    tasks += [asyncio.create_task(i.handoff.run()) for i in instances]
    try:
        await asyncio.wait_for(fleet.signals.ready.wait(), 5)
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _rtmp(inst: Instance) -> list[tuple[str, str]]:
    return [(room, ev.rtmp_state) for room, ev in inst.sink.posted.items]


async def test_a_non_owner_leaves_it_to_the_owner_who_acts_once(fleet: Fleet) -> None:
    a = fleet.instance("A", {"job-1": "room-1"})
    b = fleet.instance("B", {})
    await fleet.store.acquire_leases("A", ["room-1"], ttl_s=30, now=fleet.clock.now())
    async with running(fleet, [a, b]):
        first = fleet.raw("DISCONNECTED", job="job-1", room="room-1")
        res = await b.intake.handle(first)
        assert (res.status, dict(res.body)) == (200, {"status": "ok"})
        assert res.item is not None and res.item.for_owner
        await a.sink.posted.wait_for(1)
        assert _rtmp(a) == [("room-1", "DISCONNECTED")] and b.sink.posted.items == []

        again = await b.intake.handle(first)  # the same request again: the inbox dedupes it
        assert again.status == 200 and not again.new
        resigned = fleet.raw("DISCONNECTED", job="job-1", room="room-1", at=int(T0.timestamp()) + 1)
        fleet.clock.advance(1.0)
        assert (await b.intake.handle(resigned)).new  # a re-signed retry: a new row ...
        await until(lambda: a.handoff.claimed == 2, "the retry handed over")
        assert _rtmp(a) == [("room-1", "DISCONNECTED")]  # ... suppressed by the owner's tracker
        assert b.handoff.claimed == 0
        assert await fleet.store.inbox_pending() == []


async def test_a_room_nobody_owns_gets_its_callbacks_when_gained(fleet: Fleet) -> None:
    a = fleet.instance("A", {})
    b = fleet.instance("B", {})
    async with running(fleet, [a, b]):
        res = await b.intake.handle(fleet.raw("DISCONNECTED", job="job-2", room="room-2"))
        assert res.status == 200 and res.item is not None and res.item.for_owner
        assert [it.room_id for it in await fleet.store.inbox_pending()] == ["room-2"]

        await fleet.store.acquire_leases("A", ["room-2"], ttl_s=30, now=fleet.clock.now())
        a.rooms.jobs["job-2"] = "room-2"  # taken over (the supervisor's take_over)
        await a.handoff.gained(["room-2"])
        assert _rtmp(a) == [("room-2", "DISCONNECTED")]
        await a.handoff.gained(["room-2"])  # again (a gain retried): claimed once only
        await a.handoff.resync()
        assert _rtmp(a) == [("room-2", "DISCONNECTED")]
        assert await fleet.store.inbox_pending() == []


async def test_a_former_owner_cannot_take_it_from_the_lease_holder(fleet: Fleet) -> None:
    """B still believes it supervises room-1 (paused, its lease since taken by A): both hear
    the signal, both claim; the store gives it to the lease holder only."""
    a = fleet.instance("A", {"job-1": "room-1"})
    b = fleet.instance("B", {"job-1": "room-1"})
    c = fleet.instance("C", {})
    await fleet.store.acquire_leases("A", ["room-1"], ttl_s=30, now=fleet.clock.now())
    async with running(fleet, [a, b, c]):
        res = await c.intake.handle(fleet.raw("DISCONNECTED", job="job-1", room="room-1"))
        assert res.item is not None and res.item.for_owner
        await a.sink.posted.wait_for(1)
        await b.handoff.resync()  # B's own attempt, after A's: nothing left for it
        assert _rtmp(a) == [("room-1", "DISCONNECTED")]
        assert b.sink.posted.items == [] and c.sink.posted.items == []


async def test_a_room_in_nobodys_configuration_is_handled_by_the_receiver(fleet: Fleet) -> None:
    b = fleet.instance("B", {})
    async with running(fleet, [b]):
        res = await b.intake.handle(fleet.raw("DISCONNECTED", job="job-x", room="room-x"))
        assert (res.status, dict(res.body)) == (202, {"status": "unknown_job"})
        assert res.item is not None and not res.item.for_owner
        await b.intake.drain()
        assert await fleet.store.inbox_pending() == []  # done here: nobody else would take it
