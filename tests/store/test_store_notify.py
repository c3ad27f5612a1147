"""Cross-instance signals: LISTEN/NOTIFY on the real PostgreSQL, and the in-process stand-in.

Absence is shown by ordering, never by waiting: a later marker notification arrives, and
nothing that should not have arrived came before it (PostgreSQL delivers in commit order).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.backoff import Backoff
from orchestrator.store.notify import (
    MAX_PAYLOAD_BYTES,
    LocalSignals,
    PgSignals,
    channel_name,
    notify_statement,
)
from tests.support.pgcluster import PG_DSN, PG_URL

pytestmark = pytest.mark.timeout(60)


class Inbox:
    """Received payloads, with a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._cond = asyncio.Condition()

    def __call__(self, payload: str) -> None:
        self.items.append(payload)
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, payload: str, timeout: float = 10.0) -> None:
        async def until() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: payload in self.items)

        await asyncio.wait_for(until(), timeout)


@contextlib.asynccontextmanager
async def running(signals: PgSignals | LocalSignals) -> AsyncIterator[None]:
    task = asyncio.create_task(signals.run(), name="signals")
    try:
        await asyncio.wait_for(signals.ready.wait(), 10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def namespace(require_service: Callable[[str], None]) -> str:
    require_service("postgres")
    return f"t{uuid.uuid4().hex[:12]}"


def test_channel_names_are_checked() -> None:
    assert channel_name("s1", "inbox") == "liveorch.s1.inbox"
    with pytest.raises(ValueError, match="letters"):
        channel_name("s1", "in box")
    with pytest.raises(ValueError, match="longer than 63"):
        channel_name("x" * 60, "inbox")


async def test_local_signals_deliver_after_resync() -> None:
    sig = LocalSignals()
    got = Inbox()
    order: list[str] = []

    async def resync() -> None:
        order.append("resync")

    sig.subscribe("inbox", got)
    sig.on_resync(resync)
    async with running(sig):
        await sig.publish("inbox", "room-a:1")
        await got.wait_for("room-a:1")
    assert order == ["resync"]
    with pytest.raises(ValueError, match="send ids"):
        await sig.publish("inbox", "x" * (MAX_PAYLOAD_BYTES + 1))


@pytest.mark.external_service
async def test_one_instance_hears_another(namespace: str) -> None:
    a, b = PgSignals(PG_DSN, namespace), PgSignals(PG_DSN, namespace)
    other = PgSignals(PG_DSN, namespace + "x")
    got_b, got_other = Inbox(), Inbox()
    b.subscribe("inbox", got_b)
    other.subscribe("inbox", got_other)
    async with running(b), running(other):
        await a.publish("inbox", "42")
        await other.publish("inbox", "marker")
        await got_b.wait_for("42")
        await got_other.wait_for("marker")
    await a.aclose()
    assert got_b.items == ["42"]
    assert got_other.items == ["marker"]  # another namespace never hears ours


@pytest.mark.external_service
async def test_notify_in_a_transaction_is_delivered_only_on_commit(namespace: str) -> None:
    listener = PgSignals(PG_DSN, namespace)
    got = Inbox()
    listener.subscribe("inbox", got)
    engine = create_async_engine(PG_URL)
    try:
        async with running(listener):
            async with engine.connect() as conn:
                trans = await conn.begin()
                await conn.execute(notify_statement(namespace, "inbox", "rolled-back"))
                await trans.rollback()
            async with engine.begin() as conn:
                await conn.execute(notify_statement(namespace, "inbox", "committed"))
            await got.wait_for("committed")
    finally:
        await engine.dispose()
    assert got.items == ["committed"]


@pytest.mark.external_service
async def test_a_killed_listener_reconnects_and_resyncs_first(namespace: str) -> None:
    listener = PgSignals(PG_DSN, namespace, backoff=Backoff(cap_s=0.2, base_s=0.05))
    got = Inbox()
    events: list[str] = []
    resynced = asyncio.Event()

    async def resync() -> None:
        events.append(f"resync{listener.connects}")
        resynced.set()

    def record(payload: str) -> None:
        events.append(payload)
        got(payload)

    listener.subscribe("inbox", record)
    listener.on_resync(resync)
    publisher = PgSignals(PG_DSN, namespace)
    admin = await asyncpg.connect(PG_DSN)
    try:
        async with running(listener):
            await publisher.publish("inbox", "before")
            await got.wait_for("before")
            resynced.clear()
            # the server drops our listening connection (a failover, an admin, a network cut)
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1",
                f"liveorch:{namespace}:listen",
            )
            assert killed == 1
            await asyncio.wait_for(resynced.wait(), 20)
            await publisher.publish("inbox", "after")
            await got.wait_for("after")
    finally:
        await publisher.aclose()
        await admin.close()
    assert listener.connects == 2
    assert events == ["resync1", "before", "resync2", "after"]


@pytest.mark.external_service
async def test_subscribing_late_is_refused(namespace: str) -> None:
    listener = PgSignals(PG_DSN, namespace)
    listener.subscribe("inbox", Inbox())
    async with running(listener):
        with pytest.raises(RuntimeError, match="before run"):
            listener.subscribe("observed", Inbox())
