"""Store size and RSS under a long flood of large, unknown-type callbacks: do they stay flat?

Usage::

    .venv/bin/python -m bench retention [--quick]

The daemon runs as a process (SQLite store, JSON logs) against an in-process emulator with
*time-scaled* retention: the inbox keeps callbacks for ``RETAIN_S`` seconds instead of 7 days
and the prune runs every ``INTERVAL_S``. A sender posts MSS_A_HEAD-signed callbacks at a fixed
rate, each ~30 KB with an event type nobody knows (``HOSTILE_<n>``, every one distinct) and a
job id no room owns: before the bounds, 2,000 of those cost +92 MB of RSS (one Prometheus series
per type) and 248 MB of SQLite (stored whole, never pruned). Every ``SAMPLE_S`` the bench
records the store's size (database + WAL), the daemon's RSS, the inbox row count and the
number of callback series on ``/metrics``.

Flat means: the largest store size in the last third of the run is at most 1.25x the largest
in the middle third (after retention first bites), and RSS grows by less than 30 MB from the
middle third to the end. What was sent is reported next to what was kept.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import CALLBACK_KEY, Target, daemon, emulator, record
from bench._intake_load import _Signer

PATH = "/callbacks/metastudio"
JUNK_FIELDS = 30  # x 1 KB: a 30 KB body


def _body(i: int) -> bytes:
    message: dict[str, Any] = {f"junk_{k:02d}": f"{i:08d}" + "x" * 992 for k in range(JUNK_FIELDS)}
    message.update({"room_id": "nobody", "job_id": f"hostile-job-{i}"})
    doc = {"event_type": f"HOSTILE_{i}", "message": json.dumps(message)}
    return json.dumps(doc).encode()


def _store_mb(db: Path) -> float:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = db.with_name(db.name + suffix)
        if p.exists():
            total += p.stat().st_size
    return total / 2**20


def _inbox_rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return -1


def _callback_series(metrics: str) -> int:
    return sum(1 for line in metrics.splitlines() if line.startswith("liveorch_callbacks_total{"))


async def _run(quick: bool) -> int:
    seconds = 120.0 if quick else 900.0
    retain_s = 30.0 if quick else 120.0
    interval_s = 10.0 if quick else 30.0
    rate = 40.0 if quick else 50.0
    sample_s = 5.0 if quick else 15.0
    day = 86400.0
    extra = {
        "retention": {
            "inbox_days": retain_s / day,
            "replies_days": retain_s / day,
            "transitions_days": retain_s / day,
            "interval_s": interval_s,
        },
        # the time-scaled retention must still outlive these (settings check it)
        "callbacks": {"tolerance_s": retain_s / 3},
        "mqtt": {"command_max_age_s": retain_s / 3},
    }
    async with (
        emulator(rate_limits={}) as emu,
        daemon(emu.base_url, [], extra=extra, log_level="info") as d,
    ):
        await d.wait_ready()
        db = d.workdir / "liveorch.db"
        signer = _Signer(CALLBACK_KEY, PATH)
        samples: list[dict[str, float]] = []
        sent = ok = failed = 0
        sent_bytes = 0
        t0 = time.monotonic()
        rss0 = d.rss_mb()
        async with httpx.AsyncClient(base_url=d.base_url, timeout=30.0) as http:

            async def sender(worker: int, workers: int) -> None:
                nonlocal sent, ok, failed, sent_bytes
                i = worker
                while True:
                    due = t0 + i / rate
                    if due - t0 >= seconds:
                        return
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    body = _body(i)
                    raw = signer.headers().decode().strip().split("\r\n")
                    headers = dict(h.split(": ", 1) for h in raw)
                    headers["content-type"] = "application/json"
                    try:
                        r = await http.post(PATH, content=body, headers=headers)
                        ok += r.status_code in (200, 202)
                        failed += r.status_code not in (200, 202)
                    except httpx.HTTPError:
                        failed += 1
                    sent += 1
                    sent_bytes += len(body)
                    i += workers

            async def sampler() -> None:
                while True:
                    await asyncio.sleep(sample_s)
                    try:  # a slow scrape under load must not end the sampling
                        series = float(_callback_series((await http.get("/metrics")).text))
                    except httpx.HTTPError:
                        series = math.nan
                    samples.append(
                        {
                            "t": time.monotonic() - t0,
                            "store_mb": _store_mb(db),
                            "rss_mb": d.rss_mb(),
                            "rows": _inbox_rows(db),
                            "series": series,
                        }
                    )
                    s = samples[-1]
                    print(
                        f"  t={s['t']:6.0f}s store={s['store_mb']:7.1f} MB "
                        f"rss={s['rss_mb']:6.1f} MB inbox_rows={s['rows']:6.0f} "
                        f"callback_series={s['series']:.0f} sent={sent}",
                        flush=True,
                    )

            workers = 8
            sample_task = asyncio.create_task(sampler(), name="retention-sampler")
            await asyncio.gather(*(sender(w, workers) for w in range(workers)))
            sample_task.cancel()
        log_mb = d.log_path.stat().st_size / 2**20
        prunes = sum(1 for e in d.logs() if e.get("event") == "retention_pruned")
    n = len(samples)
    mid = samples[n // 3 : 2 * n // 3] or samples
    last = samples[2 * n // 3 :] or samples
    mid_store = max(s["store_mb"] for s in mid)
    last_store = max(s["store_mb"] for s in last)
    mid_rss = max(s["rss_mb"] for s in mid)
    end_rss = last[-1]["rss_mb"]
    series = max((s["series"] for s in samples if not math.isnan(s["series"])), default=math.nan)
    figures = {
        "duration_s": round(time.monotonic() - t0, 1),
        "callbacks_sent": sent,
        "callbacks_ok": ok,
        "callbacks_failed": failed,
        "sent_mb": round(sent_bytes / 2**20, 1),
        "distinct_event_types": sent,
        "retention_s": retain_s,
        "prune_interval_s": interval_s,
        "prune_passes_deleting": prunes,
        "store_mb_mid_max": round(mid_store, 1),
        "store_mb_last_max": round(last_store, 1),
        "inbox_rows_end": last[-1]["rows"],
        "rss_mb_start": round(rss0, 1),
        "rss_mb_mid_max": round(mid_rss, 1),
        "rss_mb_end": round(end_rss, 1),
        "callback_series_max": series,
        "log_mb": round(log_mb, 1),
        "store_mb_curve": " ".join(f"{s['store_mb']:.0f}" for s in samples),
    }
    targets = [
        Target("store flat (last/mid max)", last_store / mid_store, "<=", 1.25),
        Target("rss growth mid→end MB", end_rss - mid_rss, "<=", 30.0),
        Target("callback series", float(series), "<=", 40.0),
    ]
    record(
        "retention",
        figures,
        targets,
        quick=quick,
        notes=(
            f"time-scaled retention (inbox {retain_s:.0f} s, prune every {interval_s:.0f} s); "
            f"{rate:.0f} signed callbacks/s of ~30 KB, each a new unknown type; SQLite"
        ),
    )
    return 0 if all(t.met for t in targets) and not math.isnan(mid_store) else 1


def run(quick: bool) -> int:
    return asyncio.run(_run(quick))
