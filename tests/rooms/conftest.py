"""Fixtures for the room supervisor tests (helpers live in rooms_support.py)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.clock import ManualClock
from orchestrator.rooms.startreq import RoomConfig
from orchestrator.store.sql import SqlStore
from tests.support.rooms import FakeCloud, Harness, Rooms, make_supervisor, room_config


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
        rooms = Rooms(*(configs or (room_config(),)))
        sup = make_supervisor(
            rooms, cloud=cloud_ or cloud, store=store, clock=clock, rng=random.Random(7)
        )
        return Harness(sup, clock, rooms)

    return make
