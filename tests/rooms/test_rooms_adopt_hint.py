"""adopt_all's tenant listing answers a fresh room's first list (no per-room list per room)."""

from __future__ import annotations

import random
from collections.abc import Callable

from orchestrator.clock import ManualClock
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
