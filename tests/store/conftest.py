"""Store fixtures: every contract test runs on SQLite (a tmp file) and on PostgreSQL.

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
from tests.support.storekit import StoreTarget


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.external_service)])
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, require_service: Callable[[str], None]
) -> AsyncIterator[StoreTarget]:
    if request.param == "sqlite":
        t = StoreTarget("sqlite", f"sqlite+aiosqlite:///{tmp_path}/db/liveorch.db", None)
        try:
            yield t
        finally:
            await t.close_all()
        return
    require_service("postgres")
    async with _pg_target() as t:
        yield t


@pytest.fixture
async def pg_target(require_service: Callable[[str], None]) -> AsyncIterator[StoreTarget]:
    """PostgreSQL only, in its own schema (for tests about connections and the server)."""
    require_service("postgres")
    async with _pg_target() as t:
        yield t


@pytest.fixture
async def store(target: StoreTarget) -> SqlStore:
    return await target.make()
