"""Fixtures of the monitoring tests: the real-process harness of tests/e2e (``e2e_support``)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# e2e_support lives next to the e2e tests; tests/ has no packages, so put that folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_support import Stack


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
