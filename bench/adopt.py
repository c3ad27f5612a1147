"""``adopt``: the daemon starts against 2,000 running jobs; all adopted, none started twice.

The emulator (in this process, documented rate limits) runs one CONNECTED job per configured
room before the daemon exists (see :mod:`bench._fleet`). Figures: seconds from process start to
``/readyz`` and to every room ``LIVE`` in the daemon's ``/rooms``; API calls by operation seen
by the emulator meanwhile; starts (must be 0: every room already has a job), stops (must be 0)
and rooms with more than one running job (must be 0).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from bench._common import Target, daemon, emulator, record, room_ids
from bench._fleet import Probe, preseed, wait_daemon_states
from orchestrator import logging as olog


async def _bench(n: int) -> dict[str, object]:
    rooms = room_ids(n)
    async with emulator(rooms) as emu:
        probe = Probe(emu)
        async with daemon(emu.base_url, rooms, autostart=False) as d:
            await preseed(emu, rooms, d.callback_url)
            t0 = time.monotonic()
            d.start()
            d.spy(20, "adopt")
            ready_s = await d.wait_ready(timeout_s=300)
            live_s = ready_s + await wait_daemon_states(d.base_url, rooms, "LIVE", 300)
            t1 = time.monotonic()
            calls = Counter(op for t, op in probe.calls if t0 <= t <= t1)
            running = Counter(j.room_id for j in emu.service.jobs.values() if j.running)
            figures: dict[str, object] = {
                "jobs": n,
                "ready_s": ready_s,
                "all_live_s": live_s,
                "api_calls": sum(calls.values()),
                **{f"calls_{op}": c for op, c in sorted(calls.items())},
                "starts": emu.service.starts,
                "stops": calls.get("stop", 0),
                "rooms_with_2plus_jobs": sum(1 for c in running.values() if c > 1),
                "rooms_without_job": sum(1 for r in rooms if running[r] == 0),
                "daemon_rss_mb": d.rss_mb(),
                "daemon_cpu_s": d.cpu_seconds(),
            }
    return figures


def run(quick: bool) -> int:
    olog.configure("warning", "json")
    n = 200 if quick else 2000
    f = asyncio.run(_bench(n))
    dup = float(f["starts"]) + float(f["rooms_with_2plus_jobs"])  # type: ignore[arg-type]
    record(
        "adopt",
        f,
        [
            Target(f"adopt {n} jobs, all LIVE, s", float(f["all_live_s"]), "<=", 15.0),  # type: ignore[arg-type]
            Target("duplicate starts/jobs", dup, "<=", 0.0),
        ],
        quick=quick,
        notes="emulator in-process, documented limits (20 queries/s); jobs pre-seeded CONNECTED",
    )
    return 0
