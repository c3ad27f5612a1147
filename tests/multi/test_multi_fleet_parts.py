"""The fleet's parts in one process: the budget applied from the ownership picture, and the
tenant read (reader sweeps, followers apply, fallback) over the in-memory store.

The processes, PostgreSQL and the emulator's limits are in ``test_multi_fleet.py``; these pin
the rules those runs rely on, one at a time.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import datetime

import pytest

from orchestrator.clock import ManualClock
from orchestrator.fleet.reader import FleetTenantRead, gain_hints
from orchestrator.fleet.share import TENANT_READER, FleetBudget
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits, RateSpec
from orchestrator.ownership import role_key
from orchestrator.rooms.model import ObservedJob
from orchestrator.settings import RecoverySettings, Settings
from orchestrator.store.memory import MemoryStore
from orchestrator.store.notify import LocalSignals

POLL_S = 10.0
SETTINGS = Settings(rooms=[], recovery=RecoverySettings(poll_interval_s=POLL_S))


class View:
    def __init__(self, owned: int, total: int, live: int, reader: bool = False) -> None:
        self.picture = (owned, total, live)
        self.reader = reader

    def budget_view(self, now: datetime | None = None) -> tuple[int, int, int]:
        return self.picture

    def holds_role(self, role: str, now: datetime | None = None) -> bool:
        return self.reader and role == TENANT_READER


def test_budget_paused_before_the_first_tick_whole_when_alone_shared_otherwise() -> None:
    limits = RateLimits({ApiGroup.START: RateSpec(4), ApiGroup.JOB_QUERY: RateSpec(20)})
    herd: list[float] = []
    budget = FleetBudget(limits, reader_query_share=lambda: 0.25)
    budget.attach_herd(herd.append)
    assert limits.rate(ApiGroup.START) == 0.0 and herd == []  # nothing known, nothing owned

    budget.update(View(owned=0, total=12, live=0))  # the lease table could not be read yet
    assert limits.rate(ApiGroup.START) == 0.0

    budget.update(View(owned=12, total=12, live=1))
    assert limits.rate(ApiGroup.START) == 4.0 and limits.rate(ApiGroup.JOB_QUERY) == 20.0
    assert herd == [4.0]

    budget.update(View(owned=4, total=12, live=3, reader=True))
    assert limits.rate(ApiGroup.START) == pytest.approx(4 / 3)
    assert limits.rate(ApiGroup.JOB_QUERY) == pytest.approx(20 * (0.25 + 0.75 / 3))
    assert herd[-1] == pytest.approx(4 / 3)

    budget.update(View(owned=4, total=12, live=3, reader=True))  # unchanged: nothing applied
    assert len(herd) == 2


class Rooms:
    """The supervisor's side: a fixed tenant listing; what was handed to the rooms."""

    def __init__(self, listing: Mapping[str, list[ObservedJob]]) -> None:
        self.listing = dict(listing)
        self.applied: list[dict[str, list[ObservedJob]]] = []
        self.polls = 0
        self.tenant_jobs_seen = 0
        self.room_count = 2

    async def poll_once(self) -> None:
        self.polls += 1

    async def list_tenant_jobs(self) -> dict[str, list[ObservedJob]]:
        return dict(self.listing)

    async def apply_listing(
        self, by_room: Mapping[str, Sequence[ObservedJob]], *, jobs_seen: int
    ) -> None:
        self.applied.append({r: list(js) for r, js in by_room.items()})


class Roles:
    def __init__(self, owner: str, *, reader: bool, fence: int | None, owned: list[str]) -> None:
        self.owner = owner
        self.reader = reader
        self.fence = fence
        self.mine = owned

    def holds_role(self, role: str, now: datetime | None = None) -> bool:
        return self.reader

    def role_fence(self, role: str) -> int | None:
        return self.fence

    def owned(self, now: datetime | None = None) -> list[str]:
        return self.mine


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


JOB = ObservedJob(job_id="j1", state="PROCESSING", rtmp_state="CONNECTED", duration=5.0)


def _read(
    rooms: Rooms, roles: Roles, store: MemoryStore, clock: ManualClock, mono: Mono
) -> FleetTenantRead:
    return FleetTenantRead(
        rooms, roles, store, LocalSignals(), channel="liveorch.public.sweep", clock=clock,
        settings=lambda: SETTINGS, rng=random.Random(1), status=lambda: "",
        monotonic=mono,
    )  # fmt: skip


async def test_the_reader_sweeps_once_per_period_and_followers_apply_its_sweep() -> None:
    clock, mono = ManualClock(), Mono()
    store = MemoryStore(clock=clock.now)
    await store.open()
    [lease] = await store.acquire_leases("A", [role_key(TENANT_READER)], ttl_s=30, now=clock.now())
    a_rooms, b_rooms = Rooms({"r1": [JOB]}), Rooms({})
    a = _read(a_rooms, Roles("A", reader=True, fence=lease.fence, owned=["r1"]), store, clock, mono)
    b = _read(b_rooms, Roles("B", reader=False, fence=None, owned=["r2"]), store, clock, mono)

    await a._tick()
    await a._tick()  # before the next period: no second listing
    assert a.sweeps_made == 1 and a_rooms.applied == [{"r1": [JOB]}]
    sweep = await store.latest_sweep()
    assert sweep is not None and sweep.reader == "A" and sweep.jobs_seen == 1

    await b._apply_newest()  # what a NOTIFY (or the resync on connect) leads to
    await b._apply_newest()  # the same sweep twice is applied once
    assert b_rooms.applied == [{"r1": [JOB]}] and b.sweeps_applied == 1
    mono.t += POLL_S * 0.9
    await b._tick()
    assert b_rooms.polls == 0  # a sweep arrived in time: no read of its own


async def test_an_owner_reads_its_own_rooms_when_no_fresh_sweep_arrives() -> None:
    clock, mono = ManualClock(), Mono()
    store = MemoryStore(clock=clock.now)
    await store.open()
    [lease] = await store.acquire_leases("A", [role_key(TENANT_READER)], ttl_s=30, now=clock.now())
    await store.put_sweep(
        reader="A", lease_key=role_key(TENANT_READER), fence=lease.fence, taken_at=clock.now(),
        jobs_seen=0, jobs={},
    )  # fmt: skip
    rooms = Rooms({})
    b = _read(rooms, Roles("B", reader=False, fence=None, owned=["r2"]), store, clock, mono)
    clock.advance(POLL_S + 1)
    await b._apply_newest()  # older than poll_interval_s: not an observation any more
    assert rooms.applied == []

    mono.t += POLL_S
    await b._tick()
    assert rooms.polls == 1 and b.fallbacks == 1
    await b._tick()  # not again before another poll_interval_s
    assert rooms.polls == 1

    idle = _read(Rooms({}), Roles("C", reader=False, fence=None, owned=[]), store, clock, mono)
    mono.t += POLL_S
    await idle._tick()  # owns nothing: nothing to read
    assert idle.fallbacks == 0


async def test_gained_rooms_get_the_latest_fresh_sweep_positive_answers_only() -> None:
    clock = ManualClock()
    store = MemoryStore()
    await store.open()
    key = role_key(TENANT_READER)
    [lease] = await store.acquire_leases("a", [key], ttl_s=30, now=clock.now())
    running = {"job_id": "j1", "state": "PROCESSING", "rtmp_state": "CONNECTED"}
    await store.put_sweep(
        reader="a",
        lease_key=key,
        fence=lease.fence,
        taken_at=clock.now(),
        jobs_seen=1,
        jobs={"r1": [running], "r2": []},
    )
    hints = await gain_hints(store, ["r1", "r2", "r3"], now=clock.now(), max_age_s=POLL_S)
    assert list(hints) == ["r1"]  # an empty answer could lead to a start: never given
    assert [j.job_id for j in hints["r1"]] == ["j1"]
    clock.advance(POLL_S + 1)
    assert await gain_hints(store, ["r1"], now=clock.now(), max_age_s=POLL_S) == {}
