"""``scale``: 10,000 rooms LIVE at shipped defaults; memory, idle CPU, read coverage, a dark drop.

``python -m bench scale [--quick] [--runs N]``: N (default 5) independent runs, each with a fresh
emulator and daemon; the row gives the median of every figure with its spread (min-max).

The daemon runs with shipped defaults: no ``[recovery]`` override (poll interval, grace, stall
detection as shipped), only the emulator URL, its credentials, a store file and the rooms.
Rooms are pre-seeded CONNECTED and adopted (see :mod:`bench._fleet`). Then, per run:

* quiet (no callbacks): the daemon's CPU (utime+stime from /proc) over the phase, the busiest
  1-second window of job queries seen by the emulator, and the longest time any job appeared in
  no show/list answer (emulator side: every room must be read within 45 s);
* callbacks at 100/s: signed ``SHOOT_SCRIPT_SWITCH`` callbacks for real jobs, paced by this
  process; CPU and RSS again;
* a dark drop: every callback lost (the emulator's admin knob ``drop_rate = 1``), then one
  job's push forced ``DISCONNECTED`` and held (only a refresh brings it back). Measured at the
  emulator: drop → the first command for that job arriving (detected) and drop → the push
  ``CONNECTED`` again (repaired). Nothing tells the daemon but its own job reads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Sequence

import httpx

from bench._common import (
    CALLBACK_KEY,
    Emulator,
    Target,
    daemon,
    emulator,
    fmt,
    record,
    room_ids,
)
from bench._fleet import Probe, preseed, wait_daemon_states
from orchestrator import logging as olog
from orchestrator.emulator.callbacks import CallbackEvent, build_request
from orchestrator.emulator.service import Job
from orchestrator.settings import RecoverySettings

QUERY_OPS = ("show", "list", "list_tenant")


async def _callbacks(
    url: str, jobs: list[tuple[str, str]], rate: float, seconds: float
) -> tuple[int, int]:
    """Post signed callbacks at ``rate``/s for ``seconds``; each in its own task (bounded), so
    a slow answer delays nothing after it (a sequential sender reached only ~50/s)."""
    sent = 0
    pending: set[asyncio.Task[object]] = set()
    gate = asyncio.Semaphore(64)
    failed: list[int] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)

    async def post(http: httpx.AsyncClient, u: str, headers: dict[str, str], body: bytes) -> None:
        async with gate:
            try:
                resp = await http.post(u, content=body, headers=headers)
            except httpx.HTTPError:
                failed.append(1)  # a timeout is a figure (the daemon fell behind), not a crash
                return
            if resp.status_code >= 300:
                failed.append(1)

    async with httpx.AsyncClient(timeout=10.0, limits=limits) as http:
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                room, job = jobs[sent % len(jobs)]
                event = CallbackEvent(
                    url=url,
                    auth_type="MSS_A_HEAD",
                    key=CALLBACK_KEY,
                    event_type="SHOOT_SCRIPT_SWITCH",
                    message={
                        "room_id": room,
                        "job_id": job,
                        "scene_script_name": "default-scene",
                        "shoot_script_sequence_no": str(sent % 3 + 1),
                        "shoot_script_title": "",
                    },
                )
                u, headers, body = build_request(event, now=time.time())
                task: asyncio.Task[object] = asyncio.create_task(post(http, u, dict(headers), body))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending, return_exceptions=True)
    return sent, len(failed)


async def _dark_drop(
    emu: Emulator, probe: Probe, job_id: str, timeout_s: float
) -> tuple[float, float]:
    """Lose every callback, kill one push (held), and time its repair at the emulator:
    (drop → first command for the job arriving, drop → CONNECTED again); NaN if not within
    ``timeout_s``."""
    back = asyncio.Event()
    t_drop = 0.0
    up_at: list[float] = []

    def on_rtmp(job: Job, state: str) -> None:
        if job.job_id == job_id and state == "CONNECTED" and t_drop and not up_at:
            up_at.append(time.monotonic())
            back.set()

    emu.service.rtmp_listeners.append(on_rtmp)
    try:
        async with emu.admin() as admin:
            (await admin.post("/_emulator/callbacks", json={"drop_rate": 1.0})).raise_for_status()
            t_drop = time.monotonic()
            resp = await admin.post(
                f"/_emulator/jobs/{job_id}/rtmp", json={"state": "DISCONNECTED"}
            )
            resp.raise_for_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(back.wait(), timeout_s)
            (await admin.post("/_emulator/callbacks", json={"drop_rate": 0.0})).raise_for_status()
    finally:
        emu.service.rtmp_listeners.remove(on_rtmp)
    commands = [t for t, j, _ in probe.commands if j == job_id and t >= t_drop]
    detect = min(commands) - t_drop if commands else float("nan")
    repaired = up_at[0] - t_drop if up_at else float("nan")
    return detect, repaired


async def _one_run(n: int, quiet_s: float, cb_s: float, seed: int) -> dict[str, float]:
    rooms = room_ids(n)
    # the emulator's script timers are off: the quiet phase is quiet, the callback phase paced
    async with emulator(rooms, script_switch_s=1e9) as emu:
        probe = Probe(emu)
        # shipped defaults: no recovery override at all
        async with daemon(emu.base_url, rooms, autostart=False) as d:
            await preseed(emu, rooms, d.callback_url)
            d.start()
            await d.wait_ready(timeout_s=600)
            live_s = await wait_daemon_states(d.base_url, rooms, "LIVE", 600)
            await asyncio.sleep(5.0)  # adoption tail
            rss_live = d.rss_mb()
            c0, t0 = d.cpu_seconds(), time.monotonic()
            d.spy(quiet_s - 1, "quiet")
            await asyncio.sleep(quiet_s)
            c1, t1 = d.cpu_seconds(), time.monotonic()
            job_ids = [j.job_id for j in emu.service.jobs.values() if j.running]
            if not any(probe.views.get(j) for j in job_ids):
                raise RuntimeError("the probe saw no job read: has the emulator facade changed?")
            jobs = [(j.room_id, j.job_id) for j in emu.service.jobs.values() if j.running]
            d.spy(cb_s - 1, "callbacks")
            sent, failed = await _callbacks(d.callback_url, jobs, 100.0, cb_s)
            c2, t2 = d.cpu_seconds(), time.monotonic()
            victim = random.Random(seed).choice(job_ids)
            detect_s, repaired_s = await _dark_drop(emu, probe, victim, timeout_s=180.0)
            return {
                "all_live_after_ready_s": live_s,
                "rss_mb_live": rss_live,
                "rss_mb_after_callbacks": d.rss_mb(),
                "rss_peak_mb": d.peak_rss_mb(),
                "cpu_quiet_pct": (c1 - c0) / (t1 - t0) * 100,
                "queries_quiet_per_s": probe.count(t0, t1, QUERY_OPS) / (t1 - t0),
                "queries_max_1s_window": probe.max_rate(t0, t1, QUERY_OPS),
                "max_unread_gap_s": probe.max_gap(job_ids, t0, t1),
                "callbacks_per_s": sent / (t2 - t1),
                "callbacks_failed_or_timed_out": failed,
                "cpu_callbacks_pct": (c2 - c1) / (t2 - t1) * 100,
                "dark_drop_detected_s": detect_s,
                "dark_drop_repaired_s": repaired_s,
                "daemon_alive": float(d.proc is not None and d.proc.poll() is None),
            }


def _summary(runs: Sequence[dict[str, float]]) -> dict[str, object]:
    """Per figure: ``median [min-max]`` over the runs (NaN counts as missing)."""
    out: dict[str, object] = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        ok = [v for v in values if v == v]
        if not ok:
            out[key] = "n/a"
            continue
        med = statistics.median(ok)
        missing = f", {len(values) - len(ok)} n/a" if len(ok) < len(values) else ""
        out[key] = f"{fmt(float(med))} [{fmt(float(min(ok)))}-{fmt(float(max(ok)))}{missing}]"
    return out


def _median(runs: Sequence[dict[str, float]], key: str) -> float:
    values = [r[key] for r in runs]
    if any(v != v for v in values):  # a run that never repaired counts as a miss, not a gap
        return float("nan")
    return float(statistics.median(values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale")
    parser.add_argument("--quick", action="store_true", help="1,000 rooms, one short run")
    parser.add_argument("--runs", type=int, default=None, help="independent runs (default 5)")
    args = parser.parse_args(argv)
    olog.configure("warning", "json")
    if args.quick:
        n, quiet_s, cb_s, runs = 1000, 50.0, 10.0, args.runs or 1
    else:
        n, quiet_s, cb_s, runs = 10000, 100.0, 30.0, args.runs or 5
    started = time.monotonic()
    results: list[dict[str, float]] = []
    for i in range(runs):
        r = asyncio.run(_one_run(n, quiet_s, cb_s, seed=i + 1))
        print(f"scale run {i + 1}/{runs}: " + "; ".join(f"{k}={fmt(v)}" for k, v in r.items()),
              flush=True)  # fmt: skip
        results.append(r)
    figures: dict[str, object] = {"rooms": n, "runs": runs, **_summary(results)}
    targets = [
        Target("RSS MB (peak), median", _median(results, "rss_peak_mb"), "<=", 300.0),
        Target("CPU % of one core, quiet, median", _median(results, "cpu_quiet_pct"), "<=", 5.0),
        Target("longest unread gap s, median", _median(results, "max_unread_gap_s"), "<=", 45.0),
        Target("dark drop repaired s, median", _median(results, "dark_drop_repaired_s"), "<=", 60),
    ]
    worst = {
        "rss_peak_mb": 300.0,
        "cpu_quiet_pct": 5.0,
        "max_unread_gap_s": 45.0,
        "dark_drop_repaired_s": 60.0,
    }
    over = [
        f"{k} {fmt(max(r[k] for r in results))} > {fmt(lim)}"
        for k, lim in worst.items()
        if any(not r[k] <= lim for r in results)  # NaN (never repaired) is over too
    ]
    shipped = RecoverySettings()
    record(
        "scale",
        figures,
        targets,
        quick=args.quick,
        notes=(
            f"median [min-max] of {runs} runs, each a fresh emulator + daemon; shipped defaults "
            f"(no setting changed: poll_interval_s={shipped.poll_interval_s:g}, "
            f"stall_after_s={shipped.stall_after_s:g}, grace_s={shipped.grace_s:g}); "
            "emulator in-process (documented limits, real time) on the same 2 cores; jobs "
            "pre-seeded and adopted; quiet = no callbacks; unread gap = longest time a job was in "
            "no show/list answer (emulator side); callbacks SHOOT_SCRIPT_SWITCH MSS_A_HEAD paced "
            "at 100/s; dark drop = every callback lost + one push held DISCONNECTED, measured "
            "at the emulator (drop → first command for the job = detected, drop → CONNECTED = "
            "repaired); "
            + (
                f"worst run over target: {', '.join(over)}; "
                if over
                else "every run within target; "
            )
            + f"wall {time.monotonic() - started:.0f}s"
        ),
    )
    return 0
