"""Store fixtures: every contract test runs on SQLite (a tmp file), PostgreSQL and in memory.

``target``/``store`` cover all three; ``sql_target``/``sql_store`` the two SQL databases, for
tests about SQL itself (schema versions, connections, chunked statements).

Each PostgreSQL test gets a fresh schema (``search_path`` set through the store's ``schema``
argument) that is dropped afterwards, so parallel runs and other suites never collide.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from orchestrator.store.sql import SqlStore
from tests.support.pgcluster import PG_DSN, PG_URL
from tests.support.storekit import AnyStore, AnyTarget, MemoryTarget, StoreTarget


@contextlib.asynccontextmanager
async def _pg_target() -> AsyncIterator[StoreTarget]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    t = StoreTarget("postgres", PG_URL, schema)
    try:
        yield t
    finally:
        await t.close_all()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def _sql_target(
    backend: str, tmp_path: Path, require_service: Callable[[str], None]
) -> AsyncIterator[StoreTarget]:
    if backend == "sqlite":
        t = StoreTarget("sqlite", f"sqlite+aiosqlite:///{tmp_path}/db/liveorch.db", None)
        try:
            yield t
        finally:
            await t.close_all()
        return
    require_service("postgres")
    async with _pg_target() as t:
        yield t


_SQL = ["sqlite", pytest.param("postgres", marks=pytest.mark.external_service)]


@pytest.fixture(params=[*_SQL, "memory"])
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, require_service: Callable[[str], None]
) -> AsyncIterator[AnyTarget]:
    if request.param == "memory":
        yield MemoryTarget()
        return
    async for t in _sql_target(request.param, tmp_path, require_service):
        yield t


@pytest.fixture(params=_SQL)
async def sql_target(
    request: pytest.FixtureRequest, tmp_path: Path, require_service: Callable[[str], None]
) -> AsyncIterator[StoreTarget]:
    async for t in _sql_target(request.param, tmp_path, require_service):
        yield t


@pytest.fixture
async def pg_target(require_service: Callable[[str], None]) -> AsyncIterator[StoreTarget]:
    """PostgreSQL only, in its own schema (for tests about connections and the server)."""
    require_service("postgres")
    async with _pg_target() as t:
        yield t


@pytest.fixture
async def store(target: AnyTarget) -> AnyStore:
    return await target.make()


@pytest.fixture
async def sql_store(sql_target: StoreTarget) -> SqlStore:
    return await sql_target.make()
