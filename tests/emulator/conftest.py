"""Emulator fixtures: a seeded tenant on a manual clock, served over a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService
from orchestrator.httpserver import ServedApp, serve
from tests.support.emulator import SdkSigner, make_service


@pytest.fixture
def service() -> EmulatorService:
    return make_service()


@pytest.fixture
async def served(service: EmulatorService) -> AsyncIterator[ServedApp]:
    async with serve(create_app(service)) as s:
        yield s


@pytest.fixture
async def client(served: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.base_url, auth=SdkSigner(), timeout=10) as c:
        yield c


@pytest.fixture
async def admin(served: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.base_url + "/_emulator", timeout=10) as c:
        yield c
