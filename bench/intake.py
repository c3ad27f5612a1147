"""Sustained callback intake: signed callbacks/s accepted *and persisted* over real HTTP.

Usage::

    .venv/bin/python -m bench intake [--quick]

The receiver (CallbackIntake + SqlStore on a fresh SQLite file, WAL) is served in this process
on loopback; a separate load process (so its CPU does not count against the receiver's event
loop) sends MSS_A_HEAD-signed RTMP callbacks with a fixed number of concurrent connections,
each one a distinct event. A 200 means the item was committed; the row count read back from
the database afterwards confirms it. Bounded by count: it stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import structlog
from pydantic import SecretStr
from starlette.applications import Starlette

from bench._common import Target, record
from orchestrator.callbacks.receiver import CallbackIntake
from orchestrator.httpserver import serve
from orchestrator.rooms.model import Event
from orchestrator.settings import CallbackSettings
from orchestrator.store.sql import SqlStore

KEY = "bench-callback-key-000000000000"
PATH = "/callbacks/metastudio"

_LOAD = r"""
import asyncio, hashlib, hmac, json, sys, time
import httpx

url, key, total, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
path = "/callbacks/metastudio"

def body(i):
    msg = {"room_id": "room-1", "job_id": f"job-{i}", "output_url": "rtmp://x/y",
           "stream_key": "k", "state": "CONNECTED"}
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)})

async def main():
    ok = bad = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker():
            nonlocal ok, bad
            for i in counter:
                t = format(int(time.time()), "x")
                sig = hmac.new(key.encode(), (path + t).encode(), hashlib.sha256).hexdigest()
                r = await client.post(url, content=body(i), headers={
                    "content-type": "application/json", "x-hw-mss-secret": sig, "x-hw-mss-time": t})
                if r.status_code == 200:
                    ok += 1
                else:
                    bad += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - t0
    print(json.dumps({"ok": ok, "bad": bad, "elapsed_s": elapsed}))

asyncio.run(main())
"""


class _CountingSink:
    def __init__(self) -> None:
        self.posted = 0

    def post(self, room_id: str, event: Event) -> bool:
        self.posted += 1
        return True


async def _measure(total: int, conc: int) -> dict[str, float]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "intake.db"
        store = SqlStore(f"sqlite+aiosqlite:///{db}")
        await store.open()
        sink = _CountingSink()
        intake = CallbackIntake(
            CallbackSettings(auth_type="MSS_A_HEAD", key=SecretStr(KEY)),
            store=store,
            sink=sink,
            room_for_job=lambda job: "room-1",
            key_for_room=lambda room: [KEY],
            clock=lambda: datetime.now(UTC),
        )
        try:
            async with serve(Starlette(routes=intake.routes())) as served:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    _LOAD,
                    f"{served.base_url}{PATH}",
                    KEY,
                    str(total),
                    str(conc),
                    stdout=subprocess.PIPE,
                )
                out, _ = await proc.communicate()
                await intake.drain(10.0)
        finally:
            await store.close()
        load = json.loads(out)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        return {
            "accepted": load["ok"],
            "refused": load["bad"],
            "persisted_rows": rows,
            "posted_to_rooms": sink.posted,
            "elapsed_s": round(load["elapsed_s"], 3),
            "accepted_per_s": round(load["ok"] / load["elapsed_s"], 1),
            "commits": intake.writer.batches,
            "concurrency": conc,
        }


def run(quick: bool) -> int:
    total = 2000 if quick else 20000
    conc = 32
    started = time.perf_counter()
    figures = asyncio.run(_measure(total, conc))
    targets = [
        Target(
            "accepted == persisted", float(figures["persisted_rows"]), ">=", figures["accepted"]
        ),
        Target("accepted callbacks/s (reported)", figures["accepted_per_s"], ">=", 0),
    ]
    record(
        "intake",
        figures,
        targets,
        quick=quick,
        notes=(
            f"SQLite WAL temp file; receiver + store in one process, load generator in another; "
            f"{conc} keep-alive connections; MSS_A_HEAD verified per request; "
            f"wall {time.perf_counter() - started:.1f}s"
        ),
    )
    return 0 if all(t.met for t in targets) else 1
