"""Fleet-wide roles (the tenant reader): one holder at a time, taken over after a death."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest

from orchestrator.clock import ManualClock
from orchestrator.ownership import OwnershipManager
from orchestrator.store.sql import SqlStore

ROOMS = ["r1", "r2"]
READER = "tenant-reader"


@pytest.fixture
async def store() -> AsyncIterator[SqlStore]:
    s = SqlStore("sqlite+aiosqlite:///:memory:")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class Roles:
    def __init__(self) -> None:
        self.events: list[tuple[str, bool]] = []

    async def on_role(self, role: str, held: bool) -> None:
        self.events.append((role, held))


def manager(store: SqlStore, owner: str, clock: ManualClock, roles: Roles) -> OwnershipManager:
    return OwnershipManager(
        store, owner=owner, room_ids=lambda: ROOMS, ttl_s=3.0, max_rooms=None, clock=clock,
        roles=[READER], on_role=roles.on_role,
    )  # fmt: skip


async def test_one_holder_at_a_time_and_takeover_after_expiry(store: SqlStore) -> None:
    clock, ra, rb = ManualClock(), Roles(), Roles()
    a, b = manager(store, "A", clock, ra), manager(store, "B", clock, rb)
    await a.tick()
    await b.tick()
    assert a.holds_role(READER) and not b.holds_role(READER)
    assert ra.events == [(READER, True)] and rb.events == []
    for _ in range(5):  # renewed every tick: B never gets it while A lives
        clock.advance(1.0)
        await a.tick()
        await b.tick()
        assert a.holds_role(READER) and not b.holds_role(READER)
    fence = a.role_fence(READER)
    assert fence is not None
    # A stops (SIGSTOP, a crash): it stops believing before anyone else can take it
    clock.advance(2.01)
    assert not a.holds_role(READER)
    assert not b.holds_role(READER)  # the lease has not expired yet: nobody holds the role
    clock.advance(1.0)
    await b.tick()
    assert b.holds_role(READER) and b.role_fence(READER) == fence + 1
    await a.tick()  # A resumes: it learns it lost the role
    assert not a.holds_role(READER)
    assert ra.events == [(READER, True), (READER, False)]
    assert rb.events == [(READER, True)]


async def test_a_graceful_stop_hands_the_role_over_at_once(store: SqlStore) -> None:
    clock, ra, rb = ManualClock(), Roles(), Roles()
    a, b = manager(store, "A", clock, ra), manager(store, "B", clock, rb)
    await a.tick()
    await b.tick()
    assert a.holds_role(READER)
    await a.release_all()
    assert not a.holds_role(READER)
    await b.tick()  # no wait for the TTL
    assert b.holds_role(READER)


async def test_roles_are_not_rooms(store: SqlStore) -> None:
    clock, ra = ManualClock(), Roles()
    gained: list[dict[str, int]] = []

    async def on_gained(fences: Mapping[str, int]) -> None:
        gained.append(dict(fences))

    a = OwnershipManager(
        store, owner="A", room_ids=lambda: ROOMS, ttl_s=3.0, max_rooms=1, clock=clock,
        roles=[READER], on_role=ra.on_role, on_gained=on_gained,
    )  # fmt: skip
    await a.tick()
    assert a.holds_role(READER)
    assert a.owned() == ["r1"]  # the role did not take the one room's place under max_rooms=1
    assert all(not r.startswith("~") for g in gained for r in g)
