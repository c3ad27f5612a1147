"""The six-room cluster (emulator + PostgreSQL; each test starts its daemons) for multi tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.multi import Cluster

ROOMS6 = [f"room-{i}" for i in range(1, 7)]


@pytest.fixture
async def cluster(tmp_path: Path, require_service: Callable[[str], None]) -> AsyncIterator[Cluster]:
    require_service("postgres")
    c = Cluster(tmp_path, ROOMS6)
    try:
        await c.start_emulator()
        yield c
    finally:
        await c.aclose()
