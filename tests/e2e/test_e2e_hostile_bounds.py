"""Hostile input against the real daemon process: an idle-socket flood and a slow-header client.

The daemon runs under ``prlimit --nofile=128`` so that, without a connection cap, a few
hundred idle sockets take every descriptor it has (20,000 did in production: cloud calls
failed and 45 MB of error lines were written in 35 s). With the guard, the flood is capped and
cut, a job failure is still repaired through cloud calls, the ops API answers, and the log
does not grow per connection. Loopback only, a bounded number of sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import datetime

import pytest

from orchestrator import logging as olog
from tests.support.e2e import ALWAYS, Daemon, Stack, room

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

NOFILE = 128
FLOOD = 500
WAIT_S = 20.0


async def _limited_daemon(stack: Stack) -> Daemon:
    proc = stack.procs.start(
        "daemon",
        ["run", "--config", str(stack.config_path)],
        wrap=["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"],
    )
    d = Daemon(proc, stack.http_port, stack.procs.diag)
    stack.daemons.append(d)
    await d.wait_ready()
    return d


async def _closed_by_server(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionResetError):
        while await asyncio.wait_for(reader.read(4096), WAIT_S):
            pass


async def test_idle_flood_and_slow_headers_do_not_starve_the_daemon(stack: Stack) -> None:
    emu = await stack.emulator(["r247"])
    cfg = stack.config([room("r247", [ALWAYS])])
    cfg["limits"] = {
        "http_max_connections": 20,
        "http_header_timeout_s": 1.0,
        "http_body_timeout_s": 1.0,
    }
    stack.write(cfg)
    d = await _limited_daemon(stack)
    old = (await d.wait_room("r247", "LIVE"))["job_id"]

    # a slow-header client is disconnected at the header deadline
    r, w = await asyncio.open_connection("127.0.0.1", stack.http_port)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await w.drain()
    await _closed_by_server(r)
    w.close()

    lines_before = len(d.proc.text().splitlines())
    flood = []
    try:
        for _ in range(FLOOD):
            flood.append(await asyncio.open_connection("127.0.0.1", stack.http_port))
        # with every flood socket still open on our side: a failed job is replaced (list and
        # start calls to the cloud need descriptors), and the ops API answers
        await emu.fail(old)
        new = (await d.wait_room("r247", "LIVE", not_job=old))["job_id"]
        assert new != old
        assert (await d.http.get("/healthz")).status_code == 200
    finally:
        for _, fw in flood:
            fw.close()

    events = d.proc.log_events()
    refused = [e for e in events if e.get("event") == "http_connection_refused"]
    # a burst per repeat window, then counted, not one per socket: the limiter lets
    # REPEAT_BURST lines (+ its summary) through every REPEAT_INTERVAL_S, and under load the
    # flood may span more than one window
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in refused]
    span_s = (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0
    windows = 1 + math.floor(span_s / olog.REPEAT_INTERVAL_S)
    assert 0 < len(refused) <= windows * (olog.REPEAT_BURST + 1) < FLOOD // 5, (
        len(refused),
        span_s,
    )
    text = d.proc.text()
    assert "out of system resource" not in text and "Too many open files" not in text
    grown = len(text.splitlines()) - lines_before
    assert grown < FLOOD // 3, f"{grown} log lines for {FLOOD} idle connections"
