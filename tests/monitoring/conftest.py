"""Fixtures of the monitoring tests: the real-process harness of tests/e2e (tests.support.e2e)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.e2e import Stack


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Processes started through it are SIGKILLed and reaped at teardown, pass or fail."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test (or earlier run) uses on the shared broker."""
    return f"mon-{uuid.uuid4().hex[:12]}"
