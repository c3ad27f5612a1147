"""adopt_all's tenant listing answers a fresh room's first list (no per-room list per room)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from orchestrator.clock import ManualClock
from orchestrator.errors import CloudUnavailable
from orchestrator.rooms.effects import AdoptHints
from orchestrator.rooms.model import ObservedJob, Order, OrderChanged
from orchestrator.rooms.model import RoomState as S
from orchestrator.rooms.supervisor import RoomSupervisor
from orchestrator.store.sql import SqlStore
from tests.support.rooms import FakeCloud, FakeJob, Harness, Rooms, room_config

MakeHarness = Callable[..., Harness]


async def test_fresh_room_adopts_from_startup_listing_without_listing_again(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    cloud.jobs["j1"] = FakeJob("j1", "room-a")
    h = make_harness()
    h.start()
    try:
        await h.sup.adopt_all()
        await h.state("room-a", S.IDLE)  # no stored order yet: the job is left alone
        h.sup.post("room-a", OrderChanged(order=Order.ON))
        snap = await h.state("room-a", S.LIVE)
        assert snap.job_id == "j1"
        assert cloud.count("list") == 0
        assert cloud.count("start") == 0
    finally:
        await h.stop()


async def test_old_startup_listing_is_not_reused(
    make_harness: MakeHarness, cloud: FakeCloud, clock: ManualClock
) -> None:
    cloud.jobs["j1"] = FakeJob("j1", "room-a")
    h = make_harness()
    h.start()
    try:
        await h.sup.adopt_all()
        await h.state("room-a", S.IDLE)
        cloud.jobs["j1"].state = "SUCCEED"  # ended while the room was off
        clock.advance(121)
        h.sup.post("room-a", OrderChanged(order=Order.ON))
        await h.until(lambda: cloud.count("start") == 1, "started after a fresh list")
        assert cloud.count("list") == 1
    finally:
        await h.stop()


async def test_empty_startup_listing_never_answers_a_list(
    make_harness: MakeHarness, cloud: FakeCloud
) -> None:
    h = make_harness()
    h.start()
    try:
        await h.sup.adopt_all()
        await h.state("room-a", S.IDLE)
        h.sup.post("room-a", OrderChanged(order=Order.ON))
        await h.until(lambda: cloud.count("start") == 1, "started")
        assert cloud.count("list") == 1  # the list before a start is always a real one
    finally:
        await h.stop()


async def test_rooms_taken_over_adopt_from_the_fleets_sweep_without_listing(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    """Rooms gained from another instance: the latest sweep answers their first list."""
    cloud.jobs["j1"] = FakeJob("j1", "room-a")
    cloud.jobs["j2"] = FakeJob("j2", "room-b")
    rooms = Rooms(room_config("room-a"), room_config("room-b"))
    sup = RoomSupervisor(
        rooms=rooms.lookup, room_ids=lambda: [], settings=lambda: rooms.settings,
        cloud=cloud, store=store, clock=clock, rng=random.Random(7),
    )  # fmt: skip
    h = Harness(sup, clock, rooms)
    h.start()
    try:
        await h.sup.load()
        hint = (ObservedJob("j1", "PROCESSING", "CONNECTED"),)
        taken = await h.sup.take_over({"room-a": None, "room-b": None}, hints={"room-a": hint})
        assert taken == ["room-a", "room-b"]
        for rid in ("room-a", "room-b"):
            h.sup.post(rid, OrderChanged(order=Order.ON))
        assert (await h.state("room-a", S.LIVE)).job_id == "j1"
        assert (await h.state("room-b", S.LIVE)).job_id == "j2"
        assert cloud.count("list") == 1  # room-b had no hint: it listed for real
        assert cloud.count("start") == 0
    finally:
        await h.stop()


def _fleet_supervisor(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock, n: int
) -> tuple[Harness, list[str]]:
    ids = [f"room-{k:02d}" for k in range(n)]
    rooms = Rooms(*(room_config(r) for r in ids))
    sup = RoomSupervisor(
        rooms=rooms.lookup, room_ids=lambda: [], settings=lambda: rooms.settings,
        cloud=cloud, store=store, clock=clock, rng=random.Random(7),
    )  # fmt: skip
    return Harness(sup, clock, rooms), ids


async def test_large_gain_without_a_sweep_shares_one_tenant_listing(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    """No fresh sweep (the reader died with the owner): 12 gained rooms make one paged tenant
    listing between them, not 12 lists; the room it shows without a job lists for itself."""
    h, ids = _fleet_supervisor(cloud, store, clock, 12)
    for k, rid in enumerate(ids[:-1]):
        cloud.jobs[f"j{k}"] = FakeJob(f"j{k}", rid)
    h.start()
    try:
        await h.sup.load()
        taken = await h.sup.take_over(dict.fromkeys(ids))  # no hints at all
        assert taken == ids
        for rid in ids:
            h.sup.post(rid, OrderChanged(order=Order.ON))
        for k, rid in enumerate(ids[:-1]):
            assert (await h.state(rid, S.LIVE)).job_id == f"j{k}"
        # the room the listing shows without a job starts, after a real list of its own
        await h.until(lambda: cloud.count("start") == 1, "the jobless room started")
        assert cloud.count("list_tenant") == 1
        assert cloud.calls.count(("list", ids[-1])) == 1
        assert cloud.count("list") == 1
    finally:
        await h.stop()


async def test_small_gain_lists_room_by_room(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    """One room gained: its own list is cheaper than a tenant listing (one page per 100 jobs
    of the tenant, at least one)."""
    h, ids = _fleet_supervisor(cloud, store, clock, 1)
    cloud.jobs["j0"] = FakeJob("j0", ids[0])
    h.start()
    try:
        await h.sup.load()
        await h.sup.take_over(dict.fromkeys(ids))
        h.sup.post(ids[0], OrderChanged(order=Order.ON))
        assert (await h.state(ids[0], S.LIVE)).job_id == "j0"
        assert (cloud.count("list_tenant"), cloud.count("list")) == (0, 1)
    finally:
        await h.stop()


async def test_failed_gain_listing_falls_back_to_each_rooms_own_list(
    cloud: FakeCloud, store: SqlStore, clock: ManualClock
) -> None:
    h, ids = _fleet_supervisor(cloud, store, clock, 4)
    for k, rid in enumerate(ids):
        cloud.jobs[f"j{k}"] = FakeJob(f"j{k}", rid)
    cloud.faults["list"] = [CloudUnavailable("503", status=503)]  # the first listing fails
    h.start()
    try:
        await h.sup.load()
        await h.sup.take_over(dict.fromkeys(ids))
        for rid in ids:
            h.sup.post(rid, OrderChanged(order=Order.ON))
        for k, rid in enumerate(ids):
            assert (await h.state(rid, S.LIVE)).job_id == f"j{k}"
        assert cloud.count("start") == 0
        # the first room's listing failed: it listed alone; the next room listed the tenant again
        assert cloud.count("list_tenant") == 2
        assert cloud.count("list") == 1
    finally:
        await h.stop()


async def test_gain_listing_answers_only_rooms_gained_before_it_began(
    clock: ManualClock,
) -> None:
    """A listing begun before a room was gained does not answer it (the job may have moved
    since); one begun after does; a room that lists long after the listing asks for itself."""
    listings: list[dict[str, list[ObservedJob]]] = []

    async def listing() -> dict[str, list[ObservedJob]]:
        ja, jb = ObservedJob("ja", "PROCESSING"), ObservedJob("jb", "PROCESSING")
        listings.append({"a": [ja], "b": [jb]})
        return listings[-1]

    hints = AdoptHints(clock, listing)
    hints.expect(["a", "c"])
    assert await hints.shared("a") == (ObservedJob("ja", "PROCESSING"),)
    hints.expect(["b"])  # gained after that listing began: a new one
    assert await hints.shared("b") == (ObservedJob("jb", "PROCESSING"),)
    assert len(listings) == 2
    assert await hints.shared("b") is None  # only a room's first list after its gain
    clock.advance(121)
    assert await hints.shared("c") is None  # gained with "a", but its list comes too late
    assert len(listings) == 2
    hints.expect(["a"])
    hints.forget("a")  # stood down before it listed
    assert await hints.shared("a") is None
    assert len(listings) == 2


async def test_rooms_waiting_together_all_get_the_one_listing(clock: ManualClock) -> None:
    """Every gained room asks at once (they list concurrently): the one listing answers all of
    them, including those that were already waiting while it ran."""
    gate = asyncio.Event()
    calls = 0

    async def listing() -> dict[str, list[ObservedJob]]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return {r: [ObservedJob(f"j-{r}", "PROCESSING")] for r in "abc"}

    hints = AdoptHints(clock, listing)
    hints.expect(["a", "b", "c"])
    asked = [asyncio.create_task(hints.shared(r)) for r in "abc"]
    await asyncio.sleep(0)  # all three are inside: one lists, two wait for it
    gate.set()
    answers = await asyncio.gather(*asked)
    assert answers == [(ObservedJob(f"j-{r}", "PROCESSING"),) for r in "abc"]
    assert calls == 1
