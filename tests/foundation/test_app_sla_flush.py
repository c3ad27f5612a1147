"""A store failure during the SLA flush keeps the figures for the next flush: none lost, none
counted twice, and the daemon keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import cloud, upkeep
from orchestrator.app import Daemon
from orchestrator.clock import ManualClock
from orchestrator.settings import Settings
from orchestrator.store.base import StoreError

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


async def test_failed_flush_is_retried_without_loss_or_double_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.model_validate(
        {"store": {"url": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"}, "cloud": {"project_id": "p"}}
    )
    clock = ManualClock(T0)
    daemon = Daemon(settings, clock=clock)
    await daemon.store.open()
    try:
        acc = daemon.sla
        acc.observe("r1", state="LIVE", order_on=True, at=T0)
        acc.observe("r1", state="DEGRADED", order_on=True, at=T0 + timedelta(seconds=50))
        acc.observe("r1", state="LIVE", order_on=True, at=T0 + timedelta(seconds=60))
        acc.observe("r2", state="LIVE", order_on=True, at=T0)
        clock.set(T0 + timedelta(seconds=100))

        real = daemon.store.add_sla_rows
        calls = 0

        async def flaky(*args: Any, **kw: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise StoreError("database is locked")
            await real(*args, **kw)

        monkeypatch.setattr(upkeep, "SLA_CHUNK", 1)  # one room per transaction
        monkeypatch.setattr(daemon.store, "add_sla_rows", flaky)
        await daemon.sla_book.flush()  # second write fails: the rest is kept
        assert calls == 2
        monkeypatch.setattr(daemon.store, "add_sla_rows", real)
        await daemon.sla_book.flush()

        rows = {r.room_id: r for r in await daemon.store.sla(date(2026, 11, 25))}
        assert rows["r1"].scheduled_s == 100
        assert rows["r1"].live_s == 90
        assert rows["r1"].drops == 1
        assert rows["r1"].recoveries == 1
        assert rows["r2"].scheduled_s == 100
        assert rows["r2"].live_s == 100
    finally:
        await daemon.store.close()


async def test_cloud_read_retry_backoff_reaches_the_client(tmp_path: Path) -> None:
    """``cloud.read_retry_backoff_s`` is the client's first wait before re-sending a read."""
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"},
            "cloud": {"project_id": "p", "base_url": "http://127.0.0.1:9",
                      "read_retry_backoff_s": 0.25},
        }
    )  # fmt: skip
    http, client = cloud.build_client(settings.cloud)
    try:
        assert 0.125 <= client._backoff(0, None) <= 0.25  # base x [0.5, 1) jitter
        assert 0.25 <= client._backoff(1, None) <= 0.5
    finally:
        await http.aclose()


async def test_the_poll_is_sized_by_the_tenant_and_its_query_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small tenant is polled more often than ``poll_interval_s`` (here: an hour)."""
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"},
            "cloud": {"project_id": "p"},
            "recovery": {"poll_interval_s": 3600.0, "poll_min_interval_s": 0.01,
                         "poll_queries_per_s": 1000.0},
        }
    )  # fmt: skip
    polled = asyncio.Event()
    polls = 0

    class Supervisor:
        tenant_jobs_seen = 250  # other tools' jobs count too: 3 pages
        room_count = 2

        async def poll_once(self) -> None:
            nonlocal polls
            polls += 1
            if polls == 3:
                polled.set()

        def state_counts(self) -> dict[str, int]:
            return {}

    poller = upkeep.TenantPoller(
        Supervisor(), settings=lambda: settings, rng=random.Random(), status=lambda: "no rooms"
    )
    asked: list[tuple[int, dict[str, float]]] = []
    real = upkeep.poll_period

    def spy(jobs: int, **kw: float) -> float:
        asked.append((jobs, kw))
        return real(jobs, **kw)

    monkeypatch.setattr(upkeep, "poll_period", spy)
    task = asyncio.create_task(poller.run())
    try:
        await asyncio.wait_for(polled.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert asked[0] == (250, {"longest_s": 3600.0, "shortest_s": 0.01, "queries_per_s": 1000.0})
