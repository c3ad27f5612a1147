"""OwnershipManager against a real (SQLite) store and a manual clock: margin, takeover, balance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import timedelta

import pytest

from orchestrator.clock import ManualClock
from orchestrator.ownership import OwnershipManager
from orchestrator.store.base import FencedOut
from orchestrator.store.sql import SqlStore

ROOMS = ["r1", "r2", "r3", "r4"]


@pytest.fixture
async def store() -> AsyncIterator[SqlStore]:
    s = SqlStore("sqlite+aiosqlite:///:memory:")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Recorder:
    def __init__(self) -> None:
        self.gained: list[dict[str, int]] = []
        self.lost: list[tuple[list[str], str]] = []

    async def on_gained(self, fences: Mapping[str, int]) -> None:
        self.gained.append(dict(fences))

    async def on_lost(self, rooms: Sequence[str], cause: str) -> None:
        self.lost.append((list(rooms), cause))


def manager(store: SqlStore, owner: str, clock: ManualClock, rec: Recorder) -> OwnershipManager:
    return OwnershipManager(
        store, owner=owner, room_ids=lambda: ROOMS, ttl_s=3.0, max_rooms=None, clock=clock,
        on_gained=rec.on_gained, on_lost=rec.on_lost,
    )  # fmt: skip


async def test_stops_acting_a_third_of_the_ttl_before_expiry(store: SqlStore) -> None:
    clock, rec = ManualClock(), Recorder()
    a = manager(store, "A", clock, rec)
    await a.tick()
    assert a.owned() == ROOMS and rec.gained == [{r: 1 for r in ROOMS}]
    clock.advance(1.99)
    assert a.is_owned("r1", clock.now())
    clock.advance(0.02)  # 2.01 s of a 3 s lease: inside the safety margin
    assert not a.is_owned("r1", clock.now()) and a.owned() == []


async def test_takeover_bumps_the_fence_and_the_old_owner_is_fenced_out(store: SqlStore) -> None:
    clock, ra, rb = ManualClock(), Recorder(), Recorder()
    a, b = manager(store, "A", clock, ra), manager(store, "B", clock, rb)
    await a.tick()
    fence = a.fence("r1")
    assert fence is not None
    clock.advance(3.5)  # A is silent past its lease
    await b.tick()
    assert b.owned() == ROOMS and all(b.fence(r) == fence + 1 for r in ROOMS)
    with pytest.raises(FencedOut):
        await store.save_room("r1", {"room_id": "r1"}, fence=fence)
    await a.tick()  # A wakes up: everything it thought it had is lost
    assert a.owned() == [] and ra.lost == [(ROOMS, "lease:lost")]
    assert a.owner_of("r1") == "B"


async def test_a_newcomer_gets_its_share_by_release(store: SqlStore) -> None:
    clock, ra, rb = ManualClock(), Recorder(), Recorder()
    a, b = manager(store, "A", clock, ra), manager(store, "B", clock, rb)
    await a.tick()
    await b.tick()  # B announces itself; A still holds every room
    assert b.owned() == []
    clock.advance(1.0)
    await a.tick()  # A sees B and releases its excess (highest ids first)
    assert ra.lost == [(["r3", "r4"], "lease:rebalance")] and a.owned() == ["r1", "r2"]
    await b.tick()
    assert b.owned() == ["r3", "r4"] and rb.gained == [{"r3": 2, "r4": 2}]
    clock.advance(1.0)
    await a.tick()
    await b.tick()
    assert a.owned() == ["r1", "r2"] and b.owned() == ["r3", "r4"]  # stable, no churn


async def test_next_delay_wakes_after_anothers_expiry_and_soon_for_free_rooms(
    store: SqlStore,
) -> None:
    clock, ra, rb = ManualClock(), Recorder(), Recorder()
    ttl = 30.0
    a = OwnershipManager(
        store, owner="A", room_ids=lambda: ROOMS, ttl_s=ttl, max_rooms=None, clock=clock,
        on_gained=ra.on_gained, on_lost=ra.on_lost,
    )  # fmt: skip
    b = OwnershipManager(
        store, owner="B", room_ids=lambda: ROOMS, ttl_s=ttl, max_rooms=None, clock=clock,
        on_gained=rb.on_gained, on_lost=rb.on_lost,
    )  # fmt: skip
    await a.tick()
    await b.tick()
    clock.advance(5)
    await a.tick()  # A sees B, releases r3, r4
    assert a.owned() == ["r1", "r2"]
    clock.advance(5)
    await b.tick()  # B still had its old share (0 rooms): it sees r3, r4 free and under share
    assert b.owned() == [] or b.owned() == ["r3", "r4"]
    if b.owned() == []:
        assert b.next_delay(clock.now()) == pytest.approx(1.0)  # soon, not ttl/3 = 10 s
        clock.advance(1.0)
        await b.tick()
    assert b.owned() == ["r3", "r4"]
    assert b.next_delay(clock.now()) > 7.9  # settled: the period again (8-10 s)
    b_renewed = clock.now()  # B dies after this tick: its leases expire at b_renewed + ttl
    expiry = b_renewed + timedelta(seconds=ttl)
    while a.owned() != ROOMS:
        d = a.next_delay(clock.now())
        assert d <= 10.0
        clock.advance(d)
        await a.tick()
        if clock.now() < expiry:
            assert a.owned() == ["r1", "r2"]  # nothing taken while B's leases live
    # woken 0.25 s after the expiry, took the rooms one short tick (1 s) later
    assert clock.now() <= expiry + timedelta(seconds=1.25 + 1e-6)
    assert rb.lost == []


async def test_instances_started_together_split_without_a_hand_back(store: SqlStore) -> None:
    """With a settle time, an instance announces itself, then reads who is there: two
    instances starting within it take half each, nobody takes all and hands back."""
    clock, ra, rb = ManualClock(), Recorder(), Recorder()

    def settled(owner: str, rec: Recorder) -> OwnershipManager:
        return OwnershipManager(
            store, owner=owner, room_ids=lambda: ROOMS, ttl_s=3.0, max_rooms=None, clock=clock,
            on_gained=rec.on_gained, on_lost=rec.on_lost, join_settle_s=0.5,
        )  # fmt: skip

    a, b = settled("A", ra), settled("B", rb)
    await a.tick()  # announces only
    assert a.owned() == [] and a.next_delay(clock.now()) == pytest.approx(0.5)
    clock.advance(0.2)
    await b.tick()  # announces only
    clock.advance(0.3)
    await a.tick()
    clock.advance(0.2)
    await b.tick()
    assert len(a.owned()) == 2 and len(b.owned()) == 2
    assert sorted(a.owned() + b.owned()) == ROOMS
    assert ra.lost == [] and rb.lost == []  # no hand-back


async def _until(pred: Callable[[], bool], what: str) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.01)  # the store's thread answers; no time is simulated here

    try:
        await asyncio.wait_for(loop(), 5.0)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_leases_are_kept_alive_while_a_hand_over_blocks_the_tick(store: SqlStore) -> None:
    """Taking over thousands of rooms can outlast the lease: the tick waits in on_gained while
    the keep-alive renews what we hold, so nobody takes the rooms and nothing churns."""
    clock, rb = ManualClock(), Recorder()
    gate = asyncio.Event()
    gained: list[dict[str, int]] = []

    async def slow_gain(fences: Mapping[str, int]) -> None:
        gained.append(dict(fences))
        await gate.wait()

    a = OwnershipManager(
        store, owner="A", room_ids=lambda: ROOMS, ttl_s=3.0, max_rooms=None, clock=clock,
        on_gained=slow_gain,
    )  # fmt: skip
    b = manager(store, "B", clock, rb)
    task = asyncio.create_task(a.run())
    try:
        await _until(lambda: bool(gained), "A's first gain")
        for k in range(1, 11):  # 5 s in steps of ttl/6 while the gain is stuck
            clock.advance(0.5)
            if k >= 2:
                await _until(lambda k=k: a.keep_alives >= k - 1, f"keep-alive {k - 1}")
        await b.tick()  # t = 5 s: A's first leases (t = 0) would have expired at 3 s
        assert b.owned() == [] and rb.gained == []
        assert a.is_owned("r1", clock.now())
    finally:
        gate.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
