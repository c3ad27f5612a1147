"""The inbox between instances: items left for their room's owner, claimed once, announced on
commit (PostgreSQL). Runs on SQLite, PostgreSQL and the memory store; the NOTIFY test on
PostgreSQL only.

Absence of a notification is shown by ordering, never by waiting: PostgreSQL delivers in
commit order, so a later marker arriving first proves the earlier one was never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from orchestrator.store.base import InboxItem
from orchestrator.store.notify import PgSignals, channel_name
from tests.support.pgcluster import PG_DSN
from tests.support.storekit import AnyStore, AnyTarget, StoreTarget

pytestmark = pytest.mark.timeout(60)


def _item(key: str, room: str | None, *, at: AnyTarget, for_owner: bool = False) -> InboxItem:
    return InboxItem(
        dedupe_key=key,
        room_id=room,
        job_id=f"job-{room}",
        event_type="RTMP_STREAM_STATE_CHANGE",
        payload={"event_type": "RTMP_STREAM_STATE_CHANGE", "message": {"state": "DISCONNECTED"}},
        received_at=at.clock.now,
        event_time=at.clock.now,
        for_owner=for_owner,
    )


async def test_an_item_is_claimed_once_whoever_asks(target: AnyTarget, store: AnyStore) -> None:
    assert (
        await store.inbox_append([_item(f"k{i}", "r1", at=target) for i in range(4)]) == [True] * 4
    )
    ids = [it.id for it in await store.inbox_pending() if it.id is not None]
    other = await target.make()  # a second instance on the same database
    now = target.clock.now
    first, second = await asyncio.gather(
        store.inbox_claim(ids, owner=None, now=now), other.inbox_claim(ids, owner=None, now=now)
    )
    claimed = [it.id for it in first] + [it.id for it in second]
    assert sorted(claimed) == sorted(ids)  # every item once, none twice
    assert await store.inbox_claim(ids, owner=None, now=now) == []
    assert await store.inbox_pending() == []


async def test_only_the_rooms_lease_holder_claims(target: AnyTarget, store: AnyStore) -> None:
    now = target.clock.now
    await store.acquire_leases("A", ["r1"], ttl_s=3.0, now=now)
    await store.acquire_leases("B", ["r2"], ttl_s=3.0, now=now)
    await store.inbox_append([_item("k1", "r1", at=target), _item("k2", "r2", at=target)])
    by_room = {it.room_id: it.id for it in await store.inbox_pending()}
    ids = [i for i in by_room.values() if i is not None]

    assert await store.inbox_claim(ids, owner="C", now=now) == []  # holds nothing
    got = await store.inbox_claim(ids, owner="A", now=now)
    assert [it.room_id for it in got] == ["r1"]
    later = now + timedelta(seconds=3.5)  # B's lease on r2 expired: B may not claim any more
    assert await store.inbox_claim(ids, owner="B", now=later) == []
    assert [it.room_id for it in await store.inbox_pending()] == ["r2"]
    await store.acquire_leases("A", ["r2"], ttl_s=3.0, now=later)  # the room moved to A
    assert [it.room_id for it in await store.inbox_claim(ids, owner="A", now=later)] == ["r2"]


async def test_pending_items_of_some_rooms(target: AnyTarget, store: AnyStore) -> None:
    items = [_item(f"k{i}", room, at=target) for i, room in enumerate(["r1", "r2", "r1", None])]
    await store.inbox_append(items)
    pending = await store.inbox_pending_for(["r1", "r9"])
    assert [it.dedupe_key for it in pending] == ["k0", "k2"]
    assert all(it.id is not None for it in pending)
    await store.inbox_claim([pending[0].id or 0], owner=None, now=target.clock.now)
    assert [it.dedupe_key for it in await store.inbox_pending_for(["r1"])] == ["k2"]
    assert await store.inbox_pending_for([]) == []


class _Heard:
    def __init__(self) -> None:
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    def __call__(self, payload: str) -> None:
        self.payloads.put_nowait(payload)

    async def next(self) -> list[list[object]]:
        entries: list[list[object]] = json.loads(await asyncio.wait_for(self.payloads.get(), 10))
        return entries


@contextlib.asynccontextmanager
async def _listening(schema: str, heard: _Heard) -> AsyncIterator[None]:
    signals = PgSignals(PG_DSN, schema)
    signals.subscribe("inbox", heard)
    task = asyncio.create_task(signals.run(), name="signals")
    try:
        await asyncio.wait_for(signals.ready.wait(), 10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.external_service
async def test_items_for_their_owner_are_announced_on_commit(pg_target: StoreTarget) -> None:
    assert pg_target.schema is not None
    store = await pg_target.make()
    channel = channel_name(pg_target.schema, "inbox")
    heard = _Heard()
    async with _listening(pg_target.schema, heard):
        mine = _item("k-local", "r1", at=pg_target)
        theirs = _item("k-owner", "r2", at=pg_target, for_owner=True)
        assert await store.inbox_append([mine, theirs], notify_channel=channel) == [True, True]
        ids = {it.dedupe_key: it.id for it in await store.inbox_pending()}
        assert await heard.next() == [[ids["k-owner"], "r2", "job-r2"]]  # not the local one

        # a duplicate is not announced again; the marker after it arrives first
        again = _item("k-owner", "r2", at=pg_target, for_owner=True)
        marker = _item("k-marker", "r3", at=pg_target, for_owner=True)
        assert await store.inbox_append([again], notify_channel=channel) == [False]
        assert await store.inbox_append([marker], notify_channel=channel) == [True]
        marker_id = next(it.id for it in await store.inbox_pending() if it.dedupe_key == "k-marker")
        assert await heard.next() == [[marker_id, "r3", "job-r3"]]

        # without a channel (one instance) nothing is announced: the next marker comes first
        await store.inbox_append([_item("k-quiet", "r4", at=pg_target, for_owner=True)])
        await store.inbox_append(
            [_item("k-m2", "r5", at=pg_target, for_owner=True)], notify_channel=channel
        )
        assert [e[1] for e in await heard.next()] == ["r5"]
