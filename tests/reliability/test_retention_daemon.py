"""The daemon prunes its store by ``[retention]`` as a supervised task on the injected clock.

In-process daemon against the emulator over real HTTP; time is a ManualClock, so "an hour
later" is one ``advance`` and the test waits on the daemon's prune counter, never on time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from orchestrator.app import Daemon
from orchestrator.clock import ManualClock
from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService
from orchestrator.httpserver import serve
from orchestrator.settings import Settings
from orchestrator.store.base import InboxItem, TransitionRecord
from orchestrator.store.sql import SqlStore
from tests.support.storepeek import add_transition

WAIT_S = 15.0


@asynccontextmanager
async def _daemon(tmp_path: Path, **sections: Any) -> AsyncIterator[tuple[Daemon, ManualClock]]:
    ak, sk, project = "RT" + secrets.token_hex(8).upper(), secrets.token_hex(20), "p" * 32
    clock = ManualClock(datetime.now(UTC))
    service = EmulatorService(project, {ak: sk}, seed=3, time_scale=10.0)
    async with serve(create_app(service)) as emu:
        settings = Settings.model_validate(
            {
                "cloud": {"base_url": emu.base_url, "project_id": project, "ak": ak, "sk": sk},
                "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"},
                "http": {"port": 0},
                "callbacks": {"auth_type": "MSS_A_HEAD", "key": secrets.token_hex(8)},
                "log": {"level": "warning"},
                **sections,
            }
        )
        daemon = Daemon(settings, clock=clock)
        task = asyncio.create_task(daemon.run(), name="retention-daemon")
        try:
            ready = asyncio.create_task(daemon.ready.wait())
            done, _ = await asyncio.wait(
                {task, ready}, timeout=WAIT_S, return_when="FIRST_COMPLETED"
            )
            assert ready in done, f"daemon not ready (exited: {task.done()})"
            yield daemon, clock
        finally:
            daemon.stop_requested.set()
            rc = await asyncio.wait_for(task, WAIT_S)
        assert rc == 0


async def _wait_runs(daemon: Daemon, n: int) -> None:
    async def until() -> None:
        async with daemon.retention.done:
            await daemon.retention.done.wait_for(lambda: daemon.retention.runs >= n)

    await asyncio.wait_for(until(), WAIT_S)


async def test_the_daemon_prunes_on_its_clock(tmp_path: Path) -> None:
    retention = {"inbox_days": 1, "transitions_days": 2, "replies_days": 1, "interval_s": 3600}
    async with _daemon(tmp_path, retention=retention) as (daemon, clock):
        await _wait_runs(daemon, 1)  # one pass at startup
        store = daemon.store
        now = clock.now()
        old = now - timedelta(hours=23.5)  # pruned an hour from now (inbox), not yet now
        items = [
            InboxItem(f"k{i}", "r1", "j1", "RTMP_STREAM_STATE_CHANGE", {"i": i}, old, old)
            for i in range(20)
        ]
        await store.inbox_append(items)
        await store.inbox_append([InboxItem("fresh", "r1", "j1", "X", {}, now, now)])
        await add_transition(store, TransitionRecord("r1", old, "IDLE", "LIVE", "X"))
        await store.put_reply("c-old", {"status": "ok"}, old)
        assert len(await store.inbox_pending()) == 21

        clock.advance(3600)  # the next pass is due
        await _wait_runs(daemon, 2)
        assert [i.dedupe_key for i in await store.inbox_pending()] == ["fresh"]
        assert await store.get_reply("c-old") is None
        assert len(await store.transitions("r1")) == 1  # kept: 2 days for transitions

        clock.advance(86400)  # a day later, hourly passes: the transition goes too
        await _wait_runs(daemon, 3)
        assert await store.transitions("r1") == []
        assert "retention" in {t.get_name() for t in asyncio.all_tasks()}


def _signed(key: str, path: str) -> dict[str, str]:
    t = format(int(time.time()), "x")
    sig = hmac.new(key.encode(), (path + t).encode(), hashlib.sha256).hexdigest()
    return {"x-hw-mss-secret": sig, "x-hw-mss-time": t, "content-type": "application/json"}


async def test_invented_callback_types_are_bounded_in_metrics_and_store(tmp_path: Path) -> None:
    """Over real HTTP to the daemon: 300 signed 30 KB callbacks, each of a new event type,
    make one metric series (not 300) and are stored cut to ``limits.callback_stored_bytes``."""
    path = "/callbacks/metastudio"
    async with _daemon(tmp_path, limits={"callback_stored_bytes": 4096}) as (daemon, _):
        key = daemon.settings.callbacks.key
        assert key is not None and daemon.http_port is not None
        base = f"http://127.0.0.1:{daemon.http_port}"
        async with httpx.AsyncClient(base_url=base, timeout=WAIT_S) as http:
            for i in range(300):
                junk = {f"junk_{k}": "x" * 1000 for k in range(30)}
                message = {**junk, "room_id": "nobody", "job_id": f"job-{i}"}
                body = {"event_type": f"INVENTED_{i}", "message": json.dumps(message)}
                headers = _signed(key.get_secret_value(), path)
                r = await http.post(path, content=json.dumps(body), headers=headers)
                assert r.status_code in (200, 202), r.text
            metrics = (await http.get("/metrics")).text
        series = [m for m in metrics.splitlines() if m.startswith("liveorch_callbacks_total{")]
        assert len(series) == 1 and 'type="other"' in series[0], series
        store = daemon.store
        assert isinstance(store, SqlStore)
        async with store.engine.connect() as conn:  # processed or not: every stored row
            result = await conn.execute(text("SELECT event_type, payload FROM inbox"))
            rows = [(t, p if isinstance(p, str) else json.dumps(p)) for t, p in result]
        sizes = [len(p) for t, p in rows if t.startswith("INVENTED_")]
        assert len(sizes) == 300
        assert max(sizes) <= 4096 + 128, max(sizes)
