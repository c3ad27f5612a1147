"""adopt_all's tenant listing answers a fresh room's first list (no per-room list per room)."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.clock import ManualClock
from orchestrator.rooms.model import Order, OrderChanged
from orchestrator.rooms.model import RoomState as S
from tests.support.rooms import FakeCloud, FakeJob, Harness

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
