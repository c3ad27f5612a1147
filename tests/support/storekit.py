"""Helpers shared by the store tests (a module, not conftest, so tests can import the types)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.store.memory import MemoryData, MemoryStore
from orchestrator.store.sql import SqlStore


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


class StoreTarget:
    """Where a test's stores live; ``make()`` opens another store on the same database."""

    def __init__(self, backend: str, url: str, schema: str | None) -> None:
        self.backend = backend
        self.url = url
        self.schema = schema
        self.clock = FakeClock()
        self._stores: list[SqlStore] = []

    def new(self) -> SqlStore:
        store = SqlStore(self.url, clock=self.clock, schema=self.schema)
        self._stores.append(store)
        return store

    async def make(self) -> SqlStore:
        store = self.new()
        await store.open()
        return store

    async def close_all(self) -> None:
        for store in self._stores:
            await store.close()


class MemoryTarget:
    """Like :class:`StoreTarget` for ``MemoryStore``: its stores share one ``MemoryData``."""

    backend = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.data = MemoryData()

    def new(self) -> MemoryStore:
        return MemoryStore(clock=self.clock, data=self.data)

    async def make(self) -> MemoryStore:
        store = self.new()
        await store.open()
        return store

    async def close_all(self) -> None:
        return None


AnyTarget = StoreTarget | MemoryTarget
AnyStore = SqlStore | MemoryStore
