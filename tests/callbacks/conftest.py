"""Fixtures for callback tests: a real SQLite store and a served intake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from orchestrator.callbacks.parse import CallbackEvent
from orchestrator.callbacks.receiver import CallbackIntake
from orchestrator.httpserver import serve
from orchestrator.settings import CallbackSettings
from orchestrator.store.sql import SqlStore
from tests.support.callbacks import (
    KEY,
    OLD_KEY,
    ROOM_KEY,
    T0,
    Harness,
    RecordingMetrics,
    RecordingSink,
    Waitable,
)


@pytest.fixture
async def sql_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'cb.db'}")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


HarnessFactory = Callable[..., Any]


@pytest.fixture
async def make_harness(sql_store: SqlStore) -> AsyncIterator[HarnessFactory]:
    """Build and serve an intake; keyword args override CallbackSettings fields."""
    stack: list[Any] = []

    async def _make(
        *,
        public_url: str | None = None,
        intake_cls: type[CallbackIntake] = CallbackIntake,
        **over: Any,
    ) -> Harness:
        fields: dict[str, Any] = {
            "auth_type": "MSS_A_HEAD",
            "key": SecretStr(KEY),
            "previous_key": SecretStr(OLD_KEY),
        }
        fields.update(over)
        settings = CallbackSettings(**fields)
        jobs = {"job-1": "room-1", "job-2": "room-2", "job-own": "room-own"}
        sink = RecordingSink(["room-1", "room-2", "room-own", "room-orphan"])
        metrics = RecordingMetrics()
        hooked = Waitable()
        now = [T0]

        async def on_event(event: CallbackEvent, room: str | None) -> None:
            hooked.add((event, room))

        def key_for_room(room: str) -> list[str]:
            return [ROOM_KEY] if room == "room-own" else [KEY, OLD_KEY]

        intake = intake_cls(
            settings,
            store=sql_store,
            sink=sink,
            room_for_job=jobs.get,
            key_for_room=key_for_room,
            clock=lambda: now[0],
            on_event=on_event,
            metrics=metrics,
            public_url=public_url,
        )
        app = Starlette(routes=intake.routes())
        cm = serve(app)
        served = await cm.__aenter__()
        client = httpx.AsyncClient(timeout=5.0)
        stack.append((cm, client, intake))
        return Harness(
            store=sql_store,
            sink=sink,
            metrics=metrics,
            intake=intake,
            client=client,
            base_url=served.base_url,
            settings=settings,
            jobs=jobs,
            hooked=hooked,
            now=now,
        )

    yield _make
    for cm, client, intake in reversed(stack):
        await client.aclose()
        await intake.drain()
        await cm.__aexit__(None, None, None)
