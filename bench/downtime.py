"""``downtime``: seconds off air per fault, naive SDK+cron poller vs liveorch, same fault script.

Downtime is measured from the emulator's side: a room is on air while one of its jobs reports
RTMP ``CONNECTED`` (which the emulator only does for a ``PROCESSING`` job). An RTMP listener on
the in-process :class:`EmulatorService` timestamps every change, so nothing is sampled.

Time is compressed with the emulator's ``time_scale`` (every simulated delay — waiting, connect,
reconnect attempts, the 3-minute exit deadline, held drops — runs ``scale`` times faster), and
both contestants are configured in simulated seconds divided by ``scale`` (the naive poller's
60 s tick; liveorch's grace, backoffs, poll interval, watchdog), and the documented rate limits
(the emulator's and liveorch's) are multiplied by ``scale`` and liveorch's read-retry wait
divided by it. Reported figures are simulated
seconds (real seconds x scale). Real latencies (HTTP, the daemon's own reaction) are therefore
inflated ``scale`` times: the compression is conservative for liveorch.

The fault script (each fault hits two rooms at once, at a seeded random phase of the minute, then
waits until every room is back):

1. ``drop_30s``: RTMP ``DISCONNECTED`` held 30 s (the service's own reconnects fail meanwhile);
2. ``drop_forever``: ``DISCONNECTED`` held until someone refreshes the output (the service ends
   the job ``FAILED`` after ``max_exception_waiting_duration`` = 3 min);
3. ``job_failed``: the job fails (``/fail``);
4. ``drop_lost_callbacks``: every callback is lost, then ``drop_forever``;
5. ``fail_in_5xx_storm``: half of all API calls (chosen at random) answer 503 for 60 s, and the
   job fails at its start.

The storm is partial on purpose: a total outage is the same for every client (nobody can start a
job until it ends, so it measures only its own length); what tells clients apart is how soon
they get a start through a gateway that fails half the calls. (Until 2026-11-25 it was total:
liveorch 76 s, naive 89 s, rows of that date in RESULTS.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench._common import Emulator, Target, daemon, emulator, record, room_ids, scaled_recovery
from bench.naive_poller import NaivePoller
from orchestrator import logging as olog
from orchestrator.emulator.service import DEFAULT_RATE_LIMITS, Job

EPISODE_MAX_SIM_S = 480.0
SETTLE_SIM_S = 10.0
STORM_SIM_S = 60.0
STORM_SHARE = 0.5


class Tracker:
    """Per-room off-air time from RTMP state changes (real monotonic seconds)."""

    def __init__(self, emu: Emulator, rooms: Sequence[str]) -> None:
        self.emu = emu
        self.rooms = list(rooms)
        now = time.monotonic()
        self.down_since: dict[str, float | None] = dict.fromkeys(self.rooms, now)
        self.down: dict[str, float] = dict.fromkeys(self.rooms, 0.0)
        self.changed = asyncio.Event()
        emu.service.rtmp_listeners.append(self._on_rtmp)

    def _on_air(self, room: str) -> bool:
        return any(
            j.room_id == room and j.rtmp_state == "CONNECTED"
            for j in self.emu.service.jobs.values()
        )

    def _on_rtmp(self, job: Job, state: str) -> None:
        room = job.room_id
        if room not in self.down_since:
            return
        now = time.monotonic()
        since = self.down_since[room]
        if self._on_air(room):
            if since is not None:
                self.down[room] += now - since
                self.down_since[room] = None
        elif since is None:
            self.down_since[room] = now
        self.changed.set()

    def all_up(self, rooms: Sequence[str]) -> bool:
        return all(self.down_since[r] is None for r in rooms)

    async def wait_all_up(self, rooms: Sequence[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.all_up(rooms):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True

    def take(self) -> dict[str, float]:
        """Off-air seconds per room since the last take (open intervals cut at now)."""
        now = time.monotonic()
        out = {}
        for room in self.rooms:
            since = self.down_since[room]
            total = self.down[room] + (now - since if since is not None else 0.0)
            if since is not None:
                self.down_since[room] = now
            self.down[room] = 0.0
            out[room] = total
        return out


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    apply: Callable[[Emulator, httpx.AsyncClient, list[str], float], Awaitable[None]]
    cleanup: Callable[[Emulator, httpx.AsyncClient], Awaitable[None]] | None = None


def _job(emu: Emulator, room: str) -> str:
    for job in emu.service.jobs.values():
        if job.room_id == room and job.state == "PROCESSING":
            return job.job_id
    raise RuntimeError(f"room {room} has no PROCESSING job")


async def _drop(
    emu: Emulator, admin: httpx.AsyncClient, rooms: list[str], hold_real_s: float | None
) -> None:
    for room in rooms:
        r = await admin.post(
            f"/_emulator/jobs/{_job(emu, room)}/rtmp",
            json={"state": "DISCONNECTED", "hold_s": hold_real_s},
        )
        r.raise_for_status()


async def _fail(emu: Emulator, admin: httpx.AsyncClient, rooms: list[str]) -> None:
    for room in rooms:
        (await admin.post(f"/_emulator/jobs/{_job(emu, room)}/fail")).raise_for_status()


async def _lose_callbacks(emu: Emulator, admin: httpx.AsyncClient, drop_rate: float) -> None:
    (await admin.post("/_emulator/callbacks", json={"drop_rate": drop_rate})).raise_for_status()


async def _storm_then_fail(emu: Emulator, admin: httpx.AsyncClient, rooms: list[str]) -> None:
    # for_s is simulated time: the emulator ends the storm itself
    body = {
        "operation": "any", "status": 503, "error_code": "MSS.00000002",
        "for_s": STORM_SIM_S, "probability": STORM_SHARE,
    }  # fmt: skip
    (await admin.post("/_emulator/faults", json=body)).raise_for_status()
    await _fail(emu, admin, rooms)


FAULTS: tuple[Fault, ...] = (
    Fault("drop_30s", lambda e, a, r, s: _drop(e, a, r, 30.0 / s)),
    Fault("drop_forever", lambda e, a, r, s: _drop(e, a, r, None)),
    Fault("job_failed", lambda e, a, r, s: _fail(e, a, r)),
    Fault(
        "drop_lost_callbacks",
        lambda e, a, r, s: _lose_callbacks(e, a, 1.0),
        # (the drop itself is applied after the knob, see _script)
        lambda e, a: _lose_callbacks(e, a, 0.0),
    ),
    Fault("fail_in_5xx_storm", lambda e, a, r, s: _storm_then_fail(e, a, r)),
)


async def _script(
    emu: Emulator, tracker: Tracker, rooms: list[str], scale: float, reps: int
) -> dict[str, list[float]]:
    """Run every fault ``reps`` times; per fault, the off-air seconds (simulated) of its rooms."""
    results: dict[str, list[float]] = {f.name: [] for f in FAULTS}
    # Recoveries line up with the poller's ticks; a fault injected a fixed time after the
    # previous recovery would always hit the same phase of the tick. Same seeded phases for both.
    phase = random.Random(7)
    async with emu.admin() as admin:
        slot = 0
        for _ in range(reps):
            for fault in FAULTS:
                hit = [rooms[(slot + i) % len(rooms)] for i in range(2)]
                slot += 2
                await asyncio.sleep(phase.uniform(0.0, 60.0) / scale)
                tracker.take()
                await fault.apply(emu, admin, hit, scale)
                if fault.name == "drop_lost_callbacks":
                    await _drop(emu, admin, hit, None)
                ok = await tracker.wait_all_up(rooms, EPISODE_MAX_SIM_S / scale)
                if fault.cleanup is not None:
                    await fault.cleanup(emu, admin)
                (await admin.delete("/_emulator/faults")).raise_for_status()
                await asyncio.sleep(SETTLE_SIM_S / scale)
                ok = ok and await tracker.wait_all_up(rooms, EPISODE_MAX_SIM_S / scale)
                down = tracker.take()
                results[fault.name] += [down[r] * scale for r in hit]
                collateral = sum(v for r, v in down.items() if r not in hit) * scale
                print(
                    f"  {fault.name:<22} rooms {hit}: "
                    + ", ".join(f"{down[r] * scale:.1f}s" for r in hit)
                    + ("" if ok else " (not recovered within the episode limit)")
                    + (f" collateral {collateral:.1f}s" if collateral else ""),
                    flush=True,
                )
    return results


def _emulator_kw(scale: float) -> dict[str, Any]:
    # the documented rate limits run `scale` times faster too (the emulator enforces them in
    # real seconds): a 4/s command limit kept real would cost a second refresh 250 ms, shown
    # here as 5 s of downtime
    limits = {group: rate * scale for group, rate in DEFAULT_RATE_LIMITS.items()}
    return {
        "time_scale": scale, "waiting_s": 1.0, "connect_s": 1.0, "reconnect_interval_s": 5.0,
        "rate_limits": limits,
    }  # fmt: skip


def _daemon_rates(scale: float) -> dict[str, dict[str, float]]:
    from orchestrator.settings import CloudSettings

    d = CloudSettings.model_fields
    names = ("rate_start_per_s", "rate_query_per_s", "rate_write_per_s")
    cloud = {name: float(d[name].default) * scale for name in names}
    # the client's own wait before re-sending a failed read is a delay like any other
    cloud["read_retry_backoff_s"] = float(d["read_retry_backoff_s"].default) / scale
    return {"cloud": cloud}


async def _naive(rooms: list[str], scale: float, reps: int) -> dict[str, list[float]]:
    async with emulator(rooms, **_emulator_kw(scale)) as emu:
        tracker = Tracker(emu, rooms)
        poller = NaivePoller(emu.base_url, rooms, interval_s=60.0 / scale)
        thread = threading.Thread(target=poller.run, name="naive-poller", daemon=True)
        thread.start()
        try:
            if not await tracker.wait_all_up(rooms, 60.0):
                raise RuntimeError("naive poller did not bring every room up")
            return await _script(emu, tracker, rooms, scale, reps)
        finally:
            poller.stop.set()
            await asyncio.to_thread(thread.join, 30.0)


async def _liveorch(rooms: list[str], scale: float, reps: int) -> dict[str, list[float]]:
    async with emulator(rooms, **_emulator_kw(scale)) as emu:
        tracker = Tracker(emu, rooms)
        async with daemon(
            emu.base_url, rooms, recovery=scaled_recovery(scale), extra=_daemon_rates(scale)
        ) as d:
            await d.wait_ready()
            if not await tracker.wait_all_up(rooms, 120.0):
                raise RuntimeError(f"liveorch did not bring every room up: {d.tail()}")
            return await _script(emu, tracker, rooms, scale, reps)


def _summary(prefix: str, results: dict[str, list[float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    every = [v for vs in results.values() for v in vs]
    for name, values in results.items():
        out[f"{prefix}_{name}_mean_s"] = statistics.fmean(values)
        out[f"{prefix}_{name}_max_s"] = max(values)
    out[f"{prefix}_mean_s"] = statistics.fmean(every)
    out[f"{prefix}_max_s"] = max(every)
    out[f"{prefix}_total_s"] = sum(every)
    return out


def run(quick: bool) -> int:
    olog.configure("warning", "json")
    scale, reps, n = (60.0, 1, 10) if quick else (20.0, 3, 10)
    rooms = room_ids(n)
    print(f"naive poller (SDK + 60 s cron), time x{scale:g}:", flush=True)
    naive = asyncio.run(_naive(rooms, scale, reps))
    print(f"liveorch, time x{scale:g}:", flush=True)
    notes = (
        f"time compressed x{scale:g} (figures in simulated s; real latencies inflated x{scale:g}); "
        f"{len(FAULTS)} faults x {reps} rep(s), 2 rooms each, {n} rooms; emulator-side RTMP "
        f"listener; recovery defaults scaled; 5xx storm: {STORM_SHARE:.0%} of calls for "
        f"{STORM_SIM_S:g} s; lost callbacks: GET job has no RTMP state, liveorch reads "
        "stream_duration"
    )
    figures: dict[str, object] = dict(_summary("naive", naive))
    try:
        live = asyncio.run(_liveorch(rooms, scale, reps))
    except (RuntimeError, TimeoutError, OSError) as exc:
        record(
            "downtime",
            figures,
            [Target("liveorch mean downtime ≥10x better", float("nan"), ">=", 10.0)],
            quick=quick,
            notes=notes + f"; liveorch run failed: {str(exc).strip().splitlines()[-1][:200]}",
        )
        return 1
    figures.update(_summary("liveorch", live))
    for fault in FAULTS:
        a, b = naive[fault.name], live[fault.name]
        figures[f"ratio_{fault.name}"] = statistics.fmean(a) / max(statistics.fmean(b), 1e-9)
    ratio = float(figures["naive_mean_s"]) / max(float(figures["liveorch_mean_s"]), 1e-9)  # type: ignore[arg-type]
    figures["ratio_mean_naive_over_liveorch"] = ratio
    record(
        "downtime",
        figures,
        [Target("liveorch mean downtime ≥10x better (naive/liveorch)", ratio, ">=", 10.0)],
        quick=quick,
        notes=notes,
    )
    return 0
