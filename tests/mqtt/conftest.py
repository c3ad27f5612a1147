"""Fixtures for the MQTT bridge tests (helpers live in ``tests.support.mqtt_bridge``).

Every test gets its own random topic prefix on the shared broker, and the retained topics it
created are cleared afterwards (the system mosquitto persists retained messages).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.mqtt_bridge import BridgeRunner, PrivateBroker, Watcher, watching


@pytest.fixture
def prefix() -> str:
    return f"lotest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def watcher(require_service: Callable[[str], None], prefix: str) -> AsyncIterator[Watcher]:
    require_service("mosquitto")
    async with watching(prefix) as w:
        yield w


@pytest.fixture
async def bridges(prefix: str) -> AsyncIterator[BridgeRunner]:
    runner = BridgeRunner(prefix)
    try:
        yield runner
    finally:
        for t in runner.tasks:
            await runner.stop(t)


@pytest.fixture
async def private_broker(
    require_service: Callable[[str], None], tmp_path: Path
) -> AsyncIterator[PrivateBroker]:
    require_service("mosquitto")
    require_service("mosquitto-binary")
    broker = PrivateBroker(tmp_path)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
