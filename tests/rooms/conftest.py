"""Fixtures for the room supervisor tests (helpers live in tests/support/rooms.py)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import ManualClock
from orchestrator.rooms.startreq import RoomConfig
from orchestrator.rooms.supervisor import RoomSupervisor
from orchestrator.store.sql import SqlStore
from tests.support.rooms import FakeCloud, Harness, room_config


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'rooms.db'}")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def make_harness(cloud: FakeCloud, store: SqlStore, clock: ManualClock) -> Callable[..., Harness]:
    def make(*configs: RoomConfig, cloud_: Any = None) -> Harness:
        cfgs = {c.room_id: c for c in (configs or (room_config(),))}
        sup = RoomSupervisor(
            cloud=cloud_ or cloud, store=store, rooms=lambda: cfgs, clock=clock,
            rng=random.Random(7),
        )  # fmt: skip
        return Harness(sup, clock)

    return make
