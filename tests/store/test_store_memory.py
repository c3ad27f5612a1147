"""What MemoryStore adds to the contract (which it passes like SqlStore): an outage switch."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from orchestrator.store import InboxItem, PruneCutoffs, StoreError
from orchestrator.store.memory import MemoryData, MemoryStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def test_an_outage_fails_every_role_until_it_ends() -> None:
    store = MemoryStore()
    await store.save_room("r1", {"v": 1})
    store.outage = StoreError("disk on fire")
    calls = [
        store.ping(), store.load_rooms(), store.save_room("r1", {"v": 2}), store.transitions(),
        store.inbox_append([InboxItem("k", "r1", None, "X", {}, T0)]), store.get_reply("c"),
        store.get_overrides("r1"), store.set_alert("r1", "k", "m", T0), store.sla(date(2025, 1, 1)),
        store.acquire_leases("a", ["r1"], ttl_s=5, now=T0), store.prune_older(PruneCutoffs()),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(StoreError, match="disk on fire"):
            await call
    store.outage = None
    assert await store.load_rooms() == {"r1": {"v": 1}}  # nothing was written meanwhile


async def test_stores_on_one_data_see_each_other() -> None:
    data = MemoryData()
    a, b = MemoryStore(data=data), MemoryStore(data=data)
    await a.put_overrides("r1", {"paused": True})
    assert await b.get_overrides("r1") == {"paused": True}
    await a.close()
    with pytest.raises(StoreError, match="not open"):
        await a.get_overrides("r1")
    assert await b.all_overrides() == {"r1": {"paused": True}}


async def test_values_are_copied_in_and_out() -> None:
    store = MemoryStore()
    state = {"job": {"id": "j1"}, "pair": (1, 2)}
    await store.save_room("r1", state)
    state["job"]["id"] = "changed"
    loaded = await store.load_rooms()
    assert loaded == {"r1": {"job": {"id": "j1"}, "pair": [1, 2]}}  # as through a JSON column
    loaded["r1"]["job"]["id"] = "changed too"  # type: ignore[index]
    assert (await store.load_rooms())["r1"]["job"] == {"id": "j1"}
    with pytest.raises(StoreError):
        await store.save_room("r2", {"when": T0})  # not JSON: refused like the SQL store
