"""``downtime``: seconds off air per fault, liveorch vs a naive SDK+cron poller vs the floor.

``python -m bench downtime [--quick] [--push-ffmpeg] [--only FAULT ...]``

What is measured, and where. Downtime is measured where the stream is, never from what a
contestant believes: a room is on air while one of its jobs' push is ``CONNECTED`` on the
emulator, which only happens for a ``PROCESSING`` job whose ingest accepts the push (the
platform fault model refuses it during an ingest outage or for a revoked key). A listener on the
in-process emulator timestamps every RTMP change, so nothing is sampled. One episode = one fault
on one room: from the fault's instant until the room has been back on air for ``SETTLE_SIM_S``
(a relapse meanwhile counts), capped at ``EPISODE_CAP_SIM_S`` (a capped episode is *censored*:
its figure is a lower bound, said in the row). With ``--push-ffmpeg`` (the media subset) the
emulator pushes a real ffmpeg stream into a private nginx-rtmp and the downtime is the time
without media arriving at the ingest (``bytes_in`` of the stream on nginx-rtmp's stat page).

Shipped defaults, time compressed. Only time is compressed (``--time-scale`` of the emulator,
the factor is in every row): every duration default of liveorch's ``[recovery]`` is the shipped
default divided by the factor, every rate (the tenant's limits, the daemon's own, the poll's
query budget) multiplied by it, the client's read-retry wait divided by it; nothing else is set.
The HTTP timeouts stay real: they bound real latencies, which are not compressed. The emulator
runs at its own defaults (WAITING 1 s, connect 1 s, a reconnect attempt every 5 s, the 3-minute
exit deadline). Real latencies (HTTP, the daemon's reaction, the shared machine's load) are thus
inflated by the factor in the simulated figures: the compression is conservative for liveorch.

The fault mix (``FAULTS``; each at least 10 times, at phases drawn from a seeded RNG over one
naive cron period, 60 s = twelve of liveorch's polls of a small tenant, and recorded):

* ``service_drop``: the service's link drops and its own reconnects fail for 30 s (a refresh
  ends the hold early, as it would end a stuck link of the service);
* ``job_failed``: the job ends ``FAILED``;
* ``dark_drop``: the same drop with the room's callbacks lost from the drop until the room is
  back (a proxy between the emulator and the daemon swallows them: isolated per room);
* ``dark_drop_near_live``: the job is failed, and within 2 s of the new job's push going
  ``CONNECTED`` it drops dark (the stall check of a fresh job is not armed yet); the downtime
  counts from the drop;
* ``outage_no_backup``: the room's ingest refuses every push for 60 s; no backup output;
* ``outage_backup`` / ``revoked_backup``: the current ingest out for 60 s / the current stream
  key revoked (until the episode ends), in rooms with a backup output on another ingest with
  its own key (liveorch knows it; the naive peer, unchanged, does not);
* ``storm_5xx`` / ``storm_429``: half of all API calls answer 503 / 429 for 60 s, and the room's
  job fails at the storm's start.

Every episode starts from a steady room (on air for liveorch's shipped ``stable_after_s``, 60 s):
a fault sooner after a recovery is, by design, a failed restart of the previous one (backoff,
then quarantine), which is another case than the fault's own repair.

Parallelism and what rooms share. Rooms have their own ingest hosts and keys, so the per-room
faults of a wave (one fault, every repetition on its own room at its own phase) run at once,
and the waves on the rooms with a backup run beside the waves on the rooms without one. They
share the tenant (its per-group rate limits), the daemon (its poll, its event loop) and the
naive poller's one serial tick. The storms are tenant-wide: they run one repetition at a time
with nothing else going on.

Floors: ``FLOORS`` defines each with a one-line reason. Targets: liveorch p95 ≤ floor + 5 s per
fault; over the whole mix, the mean downtime ≥ 15x lower than the naive peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._common import (
    Emulator,
    Target,
    daemon,
    emulator,
    free_port,
    percentile,
    record,
    scaled_recovery,
)
from bench.naive_poller import NaivePoller
from orchestrator import logging as olog
from orchestrator.emulator.platform import ingest_of
from orchestrator.emulator.service import DEFAULT_RATE_LIMITS, EmulatorService, Job
from orchestrator.httpserver import serve
from orchestrator.settings import CloudSettings, RecoverySettings

PHASE_SPAN_SIM_S = 60.0  # one naive cron period = twelve of liveorch's 5 s polls
SETTLE_SIM_S = 10.0  # back on air this long = recovered (a relapse meanwhile counts)
STEADY_SIM_S = RecoverySettings().stable_after_s  # on air this long before a fault (shipped 60 s)
EPISODE_CAP_SIM_S = 600.0  # beyond this the episode is censored (a lower bound)
HOLD_SIM_S = 30.0  # the service-side stuck link
OUTAGE_SIM_S = 60.0
STORM_SIM_S = 60.0
STORM_SHARE = 0.5
NEAR_LIVE_SIM_S = 2.0
TARGET_SLACK_S = 5.0
TARGET_RATIO = 15.0


# ----------------------------------------------------------------------------- faults, floors


@dataclass(frozen=True, slots=True)
class Defaults:
    """The shipped numbers the floors are made of (simulated seconds)."""

    waiting_s: float  # the emulator's WAITING → PROCESSING
    connect_s: float  # the emulator's CONNECTING → CONNECTED
    grace_s: float  # liveorch's shipped [recovery] grace_s


def _defaults() -> Defaults:
    svc = EmulatorService("p", {})  # not started: only its default delays are read
    return Defaults(svc.waiting_s, svc.connect_s, RecoverySettings().grace_s)


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    backup: bool  # runs on the rooms that have a backup output
    tenant_wide: bool  # storms: one repetition at a time, nothing else meanwhile
    floor: Callable[[Defaults], float]
    floor_why: str


FAULTS: tuple[Fault, ...] = (
    Fault(
        "service_drop",
        False,
        False,
        lambda d: d.grace_s + d.connect_s,
        "a drop looks like one the service heals itself until the grace has passed; then "
        "one connect",
    ),
    Fault(
        "job_failed",
        False,
        False,
        lambda d: d.waiting_s + d.connect_s,
        "a new job's WAITING→PROCESSING→CONNECTED; no start is faster",
    ),
    Fault(
        "dark_drop",
        False,
        False,
        lambda d: d.grace_s + d.connect_s,
        "the same drop as service_drop; lost callbacks can only make it slower to see",
    ),
    Fault(
        "dark_drop_near_live",
        False,
        False,
        lambda d: d.grace_s + d.connect_s,
        "the same drop as service_drop, counted from the drop",
    ),
    Fault(
        "outage_no_backup",
        False,
        False,
        lambda d: OUTAGE_SIM_S + d.connect_s,
        "the only ingest refuses every push for the outage; then one connect",
    ),
    Fault(
        "outage_backup",
        True,
        False,
        lambda d: d.grace_s + d.connect_s,
        "the drop looks transient until the grace; then one connect to the backup ingest",
    ),
    Fault(
        "revoked_backup",
        True,
        False,
        lambda d: d.grace_s + d.connect_s,
        "the drop looks transient until the grace; then one connect with the backup's key",
    ),
    Fault(
        "storm_5xx",
        False,
        True,
        lambda d: d.waiting_s + d.connect_s,
        "the luckiest restart gets its calls through at once: a start's WAITING→CONNECTED",
    ),
    Fault("storm_429", False, True, lambda d: d.waiting_s + d.connect_s, "as storm_5xx"),
)
FAULTS_BY_NAME = {f.name: f for f in FAULTS}
MEDIA_FAULTS = ("service_drop", "job_failed")


# ----------------------------------------------------------------------------- rooms


@dataclass(frozen=True, slots=True)
class RoomSpec:
    room_id: str
    group: str  # "plain", or the one backup fault this room is for
    url: str
    key: str
    backup_url: str | None = None
    backup_key: str | None = None


def room_specs(reps: int, groups: Sequence[str], ingest: str | None = None) -> list[RoomSpec]:
    """``reps`` rooms per group, each with its own ingest hosts and keys (``ingest``: every
    primary on that one). A fault with a backup gets rooms of its own: a room that already
    failed over to its backup is not the case it measures."""
    out = []
    for g, group in enumerate(groups):
        for j in range(reps):
            i = g * reps + j
            rid = f"bench-{i:05d}"
            url = f"rtmp://{ingest or f'in{i:02d}a.bench.invalid:1935'}/live"
            if group == "plain":
                out.append(RoomSpec(rid, group, url, f"key-{rid}-a"))
            else:
                backup = f"rtmp://in{i:02d}b.bench.invalid:1935/live"
                out.append(RoomSpec(rid, group, url, f"key-{rid}-a", backup, f"key-{rid}-b"))
    return out


# ----------------------------------------------------------------------------- on air


class Tracker:
    """Per-room on-air transitions from the emulator's RTMP state changes (monotonic seconds)."""

    def __init__(self, service: EmulatorService, rooms: Sequence[str]) -> None:
        self.connected: dict[str, set[str]] = {r: set() for r in rooms}
        self.flips: dict[str, list[tuple[float, bool]]] = {
            r: [(time.monotonic(), False)] for r in rooms
        }
        self.events: dict[str, list[tuple[float, str, str]]] = {r: [] for r in rooms}
        self.changed: dict[str, asyncio.Event] = {r: asyncio.Event() for r in rooms}
        service.rtmp_listeners.append(self._on_rtmp)

    def _on_rtmp(self, job: Job, state: str) -> None:
        room = job.room_id
        if room not in self.connected:
            return
        now = time.monotonic()
        self.events[room].append((now, job.job_id[:8], state))
        was = bool(self.connected[room])
        if state == "CONNECTED":
            self.connected[room].add(job.job_id)
        else:
            self.connected[room].discard(job.job_id)
        if bool(self.connected[room]) != was:
            self.flips[room].append((now, not was))
        self.changed[room].set()

    def up(self, room: str) -> bool:
        return bool(self.connected[room])

    def up_since(self, room: str) -> float | None:
        return self.flips[room][-1][0] if self.up(room) else None

    async def wait(self, room: str, pred: Callable[[], bool], deadline: float) -> bool:
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed[room].clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed[room].wait(), left)
        return True

    async def wait_stable(self, room: str, settle: float, deadline: float) -> bool:
        """Until the room has been on air ``settle`` seconds without a break (or the deadline)."""
        while True:
            since = self.up_since(room)
            now = time.monotonic()
            if since is not None and now - since >= settle:
                return True
            if now >= deadline:
                return False
            wake = min(deadline, since + settle if since is not None else deadline)
            self.changed[room].clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed[room].wait(), max(0.0, wake - now))

    def down_between(self, room: str, t0: float, t1: float) -> float:
        """Off-air seconds of ``room`` within [t0, t1]."""
        total = 0.0
        flips = self.flips[room]
        for i, (t, up) in enumerate(flips):
            end = flips[i + 1][0] if i + 1 < len(flips) else t1
            if not up:
                total += max(0.0, min(end, t1) - max(t, t0))
        return total


# ----------------------------------------------------------------------------- callback loss


class CallbackGate:
    """A pass-through between the emulator's callbacks and the daemon that loses a room's
    callbacks while the room is dark: the emulator's own loss knob is tenant-wide, this keeps a
    dark drop to its room, so the rooms of a wave stay independent. Adds one loopback hop."""

    def __init__(self) -> None:
        self.target = ""
        self.dark: set[str] = set()
        self.lost = 0
        self.forwarded = 0
        self._http = httpx.AsyncClient(timeout=10.0)
        self.app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["POST"])])

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        room = ""
        with contextlib.suppress(ValueError, TypeError, KeyError):
            room = str(json.loads(json.loads(body)["message"]).get("room_id", ""))
        if room in self.dark:
            self.lost += 1
            return Response(status_code=200)  # delivered as far as the emulator knows
        headers = {
            k: v
            for k, v in request.headers.items()
            if k in ("content-type", "x-hw-mss-secret", "x-hw-mss-time")
        }
        query = request.url.query
        url = f"{self.target}{request.url.path}" + (f"?{query}" if query else "")
        try:
            r = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError:
            return Response(status_code=502)
        self.forwarded += 1
        return Response(r.content, status_code=r.status_code)

    async def aclose(self) -> None:
        await self._http.aclose()


# ----------------------------------------------------------------------------- media level


class NginxIngest:
    """A private nginx-rtmp (own prefix, free port, stat page) as the media-level ingest."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        w = self.workdir
        (w / "logs").mkdir(parents=True, exist_ok=True)
        conf = w / "nginx.conf"
        conf.write_text(
            "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n"
            f"daemon off;\nmaster_process off;\npid {w}/nginx.pid;\n"
            f"error_log {w}/logs/error.log;\nevents {{ worker_connections 128; }}\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; "
            "application live { live on; } } }\n"
            f"http {{ access_log off; client_body_temp_path {w}; proxy_temp_path {w}; "
            f"fastcgi_temp_path {w}; uwsgi_temp_path {w}; scgi_temp_path {w}; "
            f"server {{ listen 127.0.0.1:{self.http_port}; "
            "location /stat { rtmp_stat all; } } }\n"
        )
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(w), "-e", f"{w}/logs/error.log", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def wait_listening(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError("nginx-rtmp exited")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.stat_url)).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError("nginx-rtmp did not listen")

    @property
    def stat_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/stat"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 9)
        if self.proc is not None:
            self.proc.wait()
            self.proc = None


_STREAM = re.compile(r"<stream>\s*<name>([^<]*)</name>.*?<bytes_in>(\d+)</bytes_in>", re.S)


class MediaWatch:
    """Polls nginx-rtmp's stat page: a room has media while its stream's ``bytes_in`` grows.

    Media-level flips feed a :class:`Tracker`-like record (same ``down_between``)."""

    def __init__(self, stat_url: str, keys: Mapping[str, str], period_s: float = 0.1) -> None:
        self.stat_url = stat_url
        self.room_of = {k: r for r, k in keys.items()}
        self.period_s = period_s
        self.last: dict[str, int] = {}
        self.flips: dict[str, list[tuple[float, bool]]] = {
            r: [(time.monotonic(), False)] for r in keys
        }
        self.polls = 0

    def up(self, room: str) -> bool:
        return self.flips[room][-1][1]

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            while not stop.is_set():
                now = time.monotonic()
                seen: dict[str, int] = {}
                with contextlib.suppress(httpx.HTTPError):
                    text = (await http.get(self.stat_url)).text
                    for name, bytes_in in _STREAM.findall(text):
                        room = self.room_of.get(name)
                        if room is not None:
                            seen[room] = int(bytes_in)
                self.polls += 1
                for room in self.flips:
                    value = seen.get(room)
                    flowing = value is not None and value > self.last.get(room, -1) >= 0
                    if value is not None:
                        self.last[room] = value
                    else:
                        self.last.pop(room, None)
                    if flowing != self.up(room):
                        self.flips[room].append((now, flowing))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.period_s)

    def down_between(self, room: str, t0: float, t1: float) -> float:
        total = 0.0
        flips = self.flips[room]
        for i, (t, up) in enumerate(flips):
            end = flips[i + 1][0] if i + 1 < len(flips) else t1
            if not up:
                total += max(0.0, min(end, t1) - max(t, t0))
        return total


# ----------------------------------------------------------------------------- episodes


@dataclass(slots=True)
class Episode:
    fault: str
    room: str
    phase_sim_s: float
    down_sim_s: float
    censored: bool
    media_down_s: float | None = None
    t0_wall: float = 0.0
    t1_wall: float = 0.0
    timeline: list[str] = field(default_factory=list)


class Runner:
    """Applies faults to rooms through the emulator's admin API and measures each episode."""

    def __init__(
        self,
        emu: Emulator,
        admin: httpx.AsyncClient,
        tracker: Tracker,
        specs: Sequence[RoomSpec],
        scale: float,
        seed: int,
        gate: CallbackGate | None = None,
        media: MediaWatch | None = None,
    ) -> None:
        self.emu = emu
        self.admin = admin
        self.tracker = tracker
        self.specs = {s.room_id: s for s in specs}
        self.scale = scale
        self.seed = seed
        self.gate = gate
        self.media = media
        self.episodes: list[Episode] = []

    def rng(self, *what: str) -> random.Random:
        """Draws of their own per fault (and room): both contestants get the same phases,
        whatever order concurrent waves happen to draw in."""
        return random.Random(f"{self.seed}/{'/'.join(what)}")

    def sim(self, real_s: float) -> float:
        return real_s * self.scale

    def real(self, sim_s: float) -> float:
        return sim_s / self.scale

    async def _job(self, room: str) -> dict[str, Any]:
        jobs = (await self.admin.get("/_emulator/jobs")).raise_for_status().json()["jobs"]
        for job in jobs:
            if (job["room_id"], job["state"], job["rtmp_state"]) == (
                room,
                "PROCESSING",
                "CONNECTED",
            ):
                return dict(job)
        raise RuntimeError(f"room {room} has no connected job")

    async def _post(self, path: str, body: Mapping[str, Any] | None = None) -> None:
        (await self.admin.post(path, json=dict(body or {}))).raise_for_status()

    async def _drop(self, room: str, dark: bool) -> None:
        job = await self._job(room)
        if dark and self.gate is not None:
            self.gate.dark.add(room)
        # hold_s is on the emulator's clock readings (wall time): a simulated 30 s hold is 30/scale
        await self._post(
            f"/_emulator/jobs/{job['job_id']}/rtmp",
            {"state": "DISCONNECTED", "hold_s": self.real(HOLD_SIM_S)},
        )

    async def _storm(self, status: int) -> None:
        code, msg = (
            ("APIGW.0308", "The throttling threshold has been reached")
            if status == 429
            else ("MSS.00000004", "Internal Error")
        )
        body = {
            "operation": "any",
            "status": status,
            "error_code": code,
            "error_msg": msg,
            "for_s": STORM_SIM_S,
            "probability": STORM_SHARE,
        }
        await self._post("/_emulator/faults", body)  # for_s simulated: the emulator ends it

    async def apply(self, fault: str, room: str) -> tuple[float, str]:
        """Inject ``fault`` into ``room``; returns (monotonic t0, what was done)."""
        if fault == "dark_drop_near_live":
            job = await self._job(room)
            await self._post(f"/_emulator/jobs/{job['job_id']}/fail")
            old = job["job_id"][:8]
            deadline = time.monotonic() + self.real(EPISODE_CAP_SIM_S)

            def new_job_up() -> bool:
                return any(j[:8] != old for j in self._connected_ids(room))

            if not await self.tracker.wait(room, new_job_up, deadline):
                raise RuntimeError(f"{room}: no new job went CONNECTED to drop near LIVE")
            up_at = self.tracker.up_since(room) or time.monotonic()
            delay = self.rng(fault, room).uniform(0.0, NEAR_LIVE_SIM_S)
            await asyncio.sleep(max(0.0, up_at + self.real(delay) - time.monotonic()))
            t0 = time.monotonic()
            await self._drop(room, dark=True)
            return t0, f"failed, new job CONNECTED, dark drop {delay:.2f}s later"
        t0 = time.monotonic()
        if fault == "service_drop":
            await self._drop(room, dark=False)
        elif fault == "dark_drop":
            await self._drop(room, dark=True)
        elif fault == "job_failed":
            await self._post(f"/_emulator/jobs/{(await self._job(room))['job_id']}/fail")
        elif fault in ("outage_no_backup", "outage_backup"):
            ingest = ingest_of((await self._job(room))["output_url"])
            await self._post(
                f"/_emulator/ingests/{ingest}/faults", {"kind": "outage", "for_s": OUTAGE_SIM_S}
            )
            return t0, f"ingest {ingest} out {OUTAGE_SIM_S:g}s"
        elif fault == "revoked_backup":
            key = (await self._job(room))["stream_key"]
            await self._post("/_emulator/stream-keys/revoke", {"stream_key": key})
            return t0, "current key revoked"
        elif fault in ("storm_5xx", "storm_429"):
            await self._storm(503 if fault == "storm_5xx" else 429)
            await self._post(f"/_emulator/jobs/{(await self._job(room))['job_id']}/fail")
        else:
            raise ValueError(fault)
        return t0, fault

    def _connected_ids(self, room: str) -> set[str]:
        return self.tracker.connected[room]

    async def cleanup(self, fault: str, room: str) -> None:
        if self.gate is not None:
            self.gate.dark.discard(room)
        if fault in ("storm_5xx", "storm_429"):
            (await self.admin.delete("/_emulator/faults")).raise_for_status()
        if fault in ("outage_no_backup", "outage_backup"):
            spec = self.specs[room]
            for url in (spec.url, spec.backup_url):
                if url:
                    r = await self.admin.delete(f"/_emulator/ingests/{ingest_of(url)}/faults")
                    r.raise_for_status()
        if fault == "revoked_backup":
            spec = self.specs[room]
            for key in (spec.key, spec.backup_key):
                if key:
                    await self._post("/_emulator/stream-keys/restore", {"stream_key": key})

    async def episode(self, fault: str, room: str, phase_sim: float) -> Episode:
        cap = self.real(EPISODE_CAP_SIM_S)
        # every episode starts from a steady room: on air STEADY_SIM_S without a break, so the
        # recovery measured is this fault's, not a failed restart of the previous episode's
        # (liveorch counts a fault within stable_after_s of a recovery as one and backs off)
        await self.tracker.wait_stable(room, self.real(STEADY_SIM_S), time.monotonic() + cap)
        await asyncio.sleep(self.real(phase_sim))
        await self.tracker.wait(room, lambda: self.tracker.up(room), time.monotonic() + cap)
        t0, what = await self.apply(fault, room)
        # the daemon's log is on wall time: t0 on it (a near-LIVE fault stages a failure first)
        wall0 = time.time() - (time.monotonic() - t0)
        ok = await self.tracker.wait_stable(room, self.real(SETTLE_SIM_S), t0 + cap)
        if ok and self.media is not None:  # media flows a little after CONNECTED: wait for it too
            media = self.media
            await _until(lambda: media.up(room), time.monotonic() + cap)
            await asyncio.sleep(self.real(SETTLE_SIM_S))
        t1 = time.monotonic()
        await self.cleanup(fault, room)
        down = self.sim(self.tracker.down_between(room, t0, t1))
        ep = Episode(fault, room, phase_sim, down, not ok, t0_wall=wall0, t1_wall=time.time())
        if self.media is not None:
            ep.media_down_s = self.sim(self.media.down_between(room, t0, t1))
        ep.timeline = [
            f"{self.sim(t - t0):+.1f}s {job} {state}"
            for t, job, state in self.tracker.events[room]
            if t0 - 0.01 <= t <= t1
        ]
        ep.timeline.insert(0, f"+0.0s fault: {what}")
        self.episodes.append(ep)
        media_txt = "" if ep.media_down_s is None else f" media {ep.media_down_s:.1f}s"
        print(
            f"    {fault:<20} {room} phase {phase_sim:5.1f}s: {down:6.1f}s{media_txt}"
            + (" (censored at the cap)" if ep.censored else ""),
            flush=True,
        )
        return ep

    async def wave(self, fault: str, rooms: Sequence[str]) -> None:
        """Every room gets ``fault`` once, at its own seeded phase, all at once."""
        rng = self.rng(fault)
        phases = [rng.uniform(0.0, PHASE_SPAN_SIM_S) for _ in rooms]
        await asyncio.gather(
            *(self.episode(fault, r, p) for r, p in zip(rooms, phases, strict=True))
        )

    async def serial(self, fault: str, rooms: Sequence[str]) -> None:
        rng = self.rng(fault)
        for room in rooms:
            await self.episode(fault, room, rng.uniform(0.0, PHASE_SPAN_SIM_S))


async def _until(pred: Callable[[], bool], deadline: float) -> bool:
    while not pred():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


# ----------------------------------------------------------------------------- contestants


def _emulator_rates(scale: float) -> dict[str, float]:
    # the tenant's documented limits run `scale` times faster too (the emulator's buckets refill
    # on clock readings, which stay wall time under a compressed clock)
    return {group: rate * scale for group, rate in DEFAULT_RATE_LIMITS.items()}


def daemon_settings(scale: float) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """([recovery], other sections): shipped defaults, durations / scale, rates x scale."""
    d = CloudSettings.model_fields
    cloud: dict[str, Any] = {
        name: float(d[name].default) * scale
        for name in ("rate_start_per_s", "rate_query_per_s", "rate_write_per_s")
    }
    cloud["read_retry_backoff_s"] = float(d["read_retry_backoff_s"].default) / scale
    return scaled_recovery(scale), {"cloud": cloud}


def _add_rooms(service: EmulatorService, specs: Sequence[RoomSpec]) -> None:
    for s in specs:  # what a start without outputs uses: the naive peer's case
        service.add_room(
            s.room_id, {"room_name": s.room_id, "output_urls": [s.url], "stream_keys": [s.key]}
        )


@dataclass(slots=True)
class Plan:
    scale: float
    reps: int
    faults: tuple[str, ...]
    seed: int = 7
    media: bool = False

    @property
    def groups(self) -> list[str]:
        plain = any(not FAULTS_BY_NAME[f].backup for f in self.faults)
        return ["plain"] * plain + [f for f in self.faults if FAULTS_BY_NAME[f].backup]


async def run_script(runner: Runner, plan: Plan) -> None:
    """The waves: per-room faults on the plain rooms, beside each backup fault on its own
    rooms; then the storms, one repetition at a time."""

    def rooms(group: str) -> list[str]:
        return [s.room_id for s in runner.specs.values() if s.group == group]

    async def waves(names: Sequence[str], group: str) -> None:
        for name in names:
            await runner.wave(name, rooms(group))

    isolated = [f for f in plan.faults if not FAULTS_BY_NAME[f].tenant_wide]
    await asyncio.gather(
        waves([f for f in isolated if not FAULTS_BY_NAME[f].backup], "plain"),
        *(waves([f], f) for f in isolated if FAULTS_BY_NAME[f].backup),
    )
    for name in (f for f in plan.faults if FAULTS_BY_NAME[f].tenant_wide):
        await runner.serial(name, rooms("plain"))


@contextlib.asynccontextmanager
async def _stage(plan: Plan, specs: Sequence[RoomSpec]) -> AsyncIterator[tuple[Emulator, Tracker]]:
    """The in-process emulator with the rooms, and a tracker on its RTMP changes."""
    kw: dict[str, Any] = {"time_scale": plan.scale, "rate_limits": _emulator_rates(plan.scale)}
    async with emulator((), **kw) as emu:
        _add_rooms(emu.service, specs)
        yield emu, Tracker(emu.service, [s.room_id for s in specs])


def _specs(plan: Plan) -> list[RoomSpec]:
    if plan.media:  # every primary on the one local nginx; per-room faults only
        return room_specs(plan.reps, plan.groups, ingest="127.0.0.1:{port}")
    return room_specs(plan.reps, plan.groups)


def _bind(specs: list[RoomSpec], port: int) -> list[RoomSpec]:
    return [
        RoomSpec(
            s.room_id,
            s.group,
            s.url.replace("{port}", str(port)),
            s.key,
            s.backup_url,
            s.backup_key,
        )
        for s in specs
    ]


async def run_naive(plan: Plan) -> list[Episode]:
    specs = _specs(plan)
    async with _staged(plan, specs) as (emu, tracker, watch, specs):
        rooms = [s.room_id for s in specs]
        poller = NaivePoller(emu.base_url, rooms, interval_s=60.0 / plan.scale)
        thread = threading.Thread(target=poller.run, name="naive-poller", daemon=True)
        thread.start()
        try:
            for r in rooms:
                if not await tracker.wait(r, lambda r=r: tracker.up(r), time.monotonic() + 120):
                    raise RuntimeError("the naive poller did not bring every room up")
            async with emu.admin() as admin:
                runner = Runner(emu, admin, tracker, specs, plan.scale, plan.seed, media=watch)
                await run_script(runner, plan)
                return runner.episodes
        finally:
            poller.stop.set()
            await asyncio.to_thread(thread.join, 30.0)


@contextlib.asynccontextmanager
async def _staged(
    plan: Plan, specs: list[RoomSpec]
) -> AsyncIterator[tuple[Emulator, Tracker, MediaWatch | None, list[RoomSpec]]]:
    if plan.media:
        # the nginx port is known only once it is chosen: bind the rooms' URLs to it
        async with _media_stage(plan, specs) as staged:
            yield staged
        return
    async with _stage(plan, specs) as (emu, tracker):
        yield emu, tracker, None, specs


@contextlib.asynccontextmanager
async def _media_stage(
    plan: Plan, specs: list[RoomSpec]
) -> AsyncIterator[tuple[Emulator, Tracker, MediaWatch | None, list[RoomSpec]]]:
    from orchestrator.emulator.media import FfmpegPusher

    workdir = Path(tempfile.mkdtemp(prefix="liveorch-downtime-"))
    nginx = NginxIngest(workdir)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        nginx.start()
        await nginx.wait_listening()
        bound = _bind(specs, nginx.port)
        watch = MediaWatch(nginx.stat_url, {s.room_id: s.key for s in bound})
        task = asyncio.create_task(watch.run(stop))
        kw: dict[str, Any] = {"time_scale": plan.scale, "rate_limits": _emulator_rates(plan.scale)}
        async with emulator((), media=FfmpegPusher(), **kw) as emu:
            _add_rooms(emu.service, bound)
            yield emu, Tracker(emu.service, [s.room_id for s in bound]), watch, bound
    finally:
        stop.set()
        if task is not None:
            await task
        nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _daemon_rooms(specs: Sequence[RoomSpec]) -> list[dict[str, Any]]:
    rooms: list[dict[str, Any]] = []
    for s in specs:
        room: dict[str, Any] = {
            "id": s.room_id,
            "output_url": s.url,
            "stream_key": s.key,
            "windows": [{"always": True}],
        }
        if s.backup_url:
            room["backup_outputs"] = [{"url": s.backup_url, "stream_key": s.backup_key}]
        rooms.append(room)
    return rooms


async def run_liveorch(plan: Plan, keep_logs: list[dict[str, Any]] | None = None) -> list[Episode]:
    specs = _specs(plan)
    recovery, extra = daemon_settings(plan.scale)
    gate = CallbackGate()
    try:
        async with (
            _staged(plan, specs) as (emu, tracker, watch, specs),
            serve(gate.app, graceful_timeout_s=2.0) as gate_http,
        ):
            extra = {
                **extra,
                "http": {"public_callback_url": f"{gate_http.base_url}/callbacks/metastudio"},
            }
            async with daemon(
                emu.base_url,
                [s.room_id for s in specs],
                recovery=recovery,
                extra=extra,
                autostart=False,
            ) as d:
                gate.target = d.base_url
                config = d.config()
                config["rooms"] = _daemon_rooms(specs)
                d.config = lambda: config  # type: ignore[method-assign]
                d.start()
                await d.wait_ready()
                rooms = [s.room_id for s in specs]
                for r in rooms:
                    if not await tracker.wait(r, lambda r=r: tracker.up(r), time.monotonic() + 120):
                        raise RuntimeError(f"liveorch did not bring every room up: {d.tail()}")
                async with emu.admin() as admin:
                    runner = Runner(
                        emu,
                        admin,
                        tracker,
                        specs,
                        plan.scale,
                        plan.seed,
                        gate=gate,
                        media=watch,
                    )
                    await run_script(runner, plan)
                if keep_logs is not None:
                    keep_logs.extend(d.logs())
                print(
                    f"  callbacks through the gate: {gate.forwarded} forwarded, "
                    f"{gate.lost} lost on purpose",
                    flush=True,
                )
                return runner.episodes
    finally:
        await gate.aclose()


# ----------------------------------------------------------------------------- report


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    return percentile(values, 50), percentile(values, 95), statistics.fmean(values)


def _daemon_timeline(logs: Sequence[Mapping[str, Any]], ep: Episode, scale: float) -> list[str]:
    """The daemon's own log lines about the room during the episode (simulated s from t0)."""
    out = []
    for line in logs:
        if line.get("room_id") != ep.room:
            continue
        try:  # structlog's ISO timestamp, UTC
            when = datetime.fromisoformat(str(line.get("timestamp"))).timestamp()
        except ValueError:
            continue
        if ep.t0_wall - 0.05 <= when <= ep.t1_wall:
            event = line.get("event", "?")
            if event.startswith("callback_"):  # the emulator side already shows those states
                continue
            extra = line.get("to_state") or line.get("state") or line.get("action") or ""
            if line.get("trigger"):
                extra = f"{extra} ({line['trigger']})"
            out.append(f"{(when - ep.t0_wall) * scale:+.1f}s liveorch {event} {extra}".rstrip())
    return out


def report(
    plan: Plan,
    naive: Sequence[Episode],
    live: Sequence[Episode],
    logs: Sequence[Mapping[str, Any]],
    *,
    quick: bool,
) -> int:
    defaults = _defaults()
    kind = "media" if plan.media else "emulator"
    measure = (
        "media level: seconds without bytes arriving at nginx-rtmp (stat page, 0.1 s polls); "
        "emulator-level figures alongside"
        if plan.media
        else "emulator level: seconds without a CONNECTED push"
    )
    common = (
        f"time compressed x{plan.scale:g} (shipped defaults: [recovery] durations /{plan.scale:g}, "
        f"rates x{plan.scale:g}, cloud.read_retry_backoff_s /{plan.scale:g}, nothing else set; "
        f"figures in simulated s, real latencies inflated x{plan.scale:g}); {measure}; "
        f"{plan.reps} reps per fault, phases U(0,{PHASE_SPAN_SIM_S:g}) s seeded ({plan.seed}); "
        "per-room faults of a wave run at once on their own rooms/ingests/keys, sharing the "
        "tenant's rate limits, the daemon and the naive poller's serial tick; storms one at a "
        f"time; episode = fault → back on air {SETTLE_SIM_S:g} s, cap {EPISODE_CAP_SIM_S:g} s "
        f"(censored = lower bound), from a room on air ≥{STEADY_SIM_S:g} s (stable_after_s)"
    )
    print(
        f"\n{'fault':<22}{'floor':>7}{'live p50':>10}{'p95':>8}{'mean':>8}"
        f"{'naive p50':>11}{'p95':>8}{'mean':>8}  target",
        flush=True,
    )
    worst = 0
    all_live: list[float] = []
    all_naive: list[float] = []
    for fault in (FAULTS_BY_NAME[n] for n in plan.faults):
        lv = [e for e in live if e.fault == fault.name]
        nv = [e for e in naive if e.fault == fault.name]

        def values(eps: Sequence[Episode]) -> list[float]:
            if plan.media:
                return [e.media_down_s for e in eps if e.media_down_s is not None]
            return [e.down_sim_s for e in eps]

        lvals, nvals = values(lv), values(nv)
        all_live += lvals
        all_naive += nvals
        floor = fault.floor(defaults)
        lp50, lp95, lmean = _stats(lvals)
        np50, np95, nmean = _stats(nvals)
        target = Target(
            f"liveorch p95 ≤ floor+{TARGET_SLACK_S:g}s", lp95, "<=", floor + TARGET_SLACK_S
        )
        print(
            f"{fault.name:<22}{floor:7.1f}{lp50:10.1f}{lp95:8.1f}{lmean:8.1f}"
            f"{np50:11.1f}{np95:8.1f}{nmean:8.1f}  {'✅' if target.met else '❌'}",
            flush=True,
        )
        figures: dict[str, object] = {
            "floor_s": floor,
            "liveorch_p50_s": lp50,
            "liveorch_p95_s": lp95,
            "liveorch_mean_s": lmean,
            "naive_p50_s": np50,
            "naive_p95_s": np95,
            "naive_mean_s": nmean,
            "n_liveorch": len(lvals),
            "n_naive": len(nvals),
        }
        if plan.media:
            figures["liveorch_emulator_p95_s"] = _stats([e.down_sim_s for e in lv])[1]
            figures["naive_emulator_p95_s"] = _stats([e.down_sim_s for e in nv])[1]
        censored_l = sum(e.censored for e in lv)
        censored_n = sum(e.censored for e in nv)
        notes = [f"floor = {fault.floor_why}"]
        if plan.media:
            notes.append(
                "the floor is the emulator's: ffmpeg pushes from the start of a connect while "
                "CONNECTED comes connect_s later, so media figures may sit up to 1 s below it"
            )
        if censored_n:
            notes.append(f"naive: {censored_n} episode(s) never recovered, counted at the cap")
        if censored_l:
            notes.append(f"liveorch: {censored_l} episode(s) never recovered, counted at the cap")
        phases = ",".join(f"{e.phase_sim_s:.0f}" for e in lv)
        notes.append(f"liveorch phases (s) {phases}")
        if not target.met and lv:
            worst_ep = max(
                lv,
                key=lambda e: (
                    e.media_down_s if plan.media and e.media_down_s is not None else e.down_sim_s
                ),
            )
            tl = worst_ep.timeline + _daemon_timeline(logs, worst_ep, plan.scale)
            tl.sort(key=lambda s: float(s.split("s", 1)[0]))
            notes.append(
                f"worst rep ({worst_ep.room}, {worst_ep.down_sim_s:.1f} s) timeline: "
                + "; ".join(tl[:40])
            )
            worst = 1
        record(
            f"downtime/{kind}/{fault.name}",
            figures,
            [target],
            quick=quick,
            notes=common + "; " + "; ".join(notes),
        )
    lmean = statistics.fmean(all_live) if all_live else math.nan
    nmean = statistics.fmean(all_naive) if all_naive else math.nan
    ratio = nmean / lmean if lmean and lmean > 0 else math.nan
    summary: dict[str, object] = {
        "liveorch_mean_s": lmean,
        "naive_mean_s": nmean,
        "ratio_naive_over_liveorch": ratio,
    }
    finite_n = [e.down_sim_s for e in naive if e.fault != "revoked_backup"]
    finite_l = [e.down_sim_s for e in live if e.fault != "revoked_backup"]
    if not plan.media and finite_n and finite_l and len(finite_n) != len(naive):
        summary["ratio_without_revoked_backup"] = statistics.fmean(finite_n) / max(
            statistics.fmean(finite_l), 1e-9
        )
    # what the target allows at best: an orchestrator at the floor of every episode
    floor_of = {f.name: f.floor(defaults) for f in FAULTS}
    at_floor = [floor_of[e.fault] for e in live]
    if at_floor and all_naive:
        summary["ratio_if_liveorch_at_every_floor"] = statistics.fmean(all_naive) / max(
            statistics.fmean(at_floor), 1e-9
        )
    targets = [Target(f"mix mean ≥{TARGET_RATIO:g}x lower than naive", ratio, ">=", TARGET_RATIO)]
    print(f"\nmix mean: liveorch {lmean:.1f} s, naive {nmean:.1f} s, ratio {ratio:.2f}", flush=True)
    if not targets[0].met:
        worst = 1
    record(
        f"downtime/{kind} (mix of {len(plan.faults)})",
        summary,
        targets,
        quick=quick,
        notes=common + "; faults " + ",".join(plan.faults),
    )
    return worst


# ----------------------------------------------------------------------------- entry


def plan_for(quick: bool, media: bool, only: Sequence[str], scale: float | None = None) -> Plan:
    if scale is not None:
        plan = plan_for(quick, media, only)
        plan.scale = scale
        return plan
    if media:  # real ffmpeg and nginx run in real time: no compression
        return Plan(
            scale=1.0, reps=2 if quick else 3, faults=tuple(only or MEDIA_FAULTS), media=True
        )
    faults = tuple(only or (f.name for f in FAULTS))
    return Plan(scale=60.0, reps=2, faults=faults) if quick else Plan(20.0, 10, faults)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench downtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="2 reps per fault, time x60")
    parser.add_argument(
        "--push-ffmpeg",
        action="store_true",
        help="the media subset: real ffmpeg pushes into nginx-rtmp, real time",
    )
    parser.add_argument("--only", nargs="+", choices=list(FAULTS_BY_NAME), default=[])
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="time compression factor (default x20, --quick x60, media x1); stated in the rows",
    )
    args = parser.parse_args(argv)
    olog.configure("warning", "json")
    plan = plan_for(args.quick, args.push_ffmpeg, args.only, args.scale)
    print(f"naive poller (SDK + 60 s cron), time x{plan.scale:g}:", flush=True)
    naive = asyncio.run(run_naive(plan))
    print(f"liveorch at shipped defaults, time x{plan.scale:g}:", flush=True)
    logs: list[dict[str, Any]] = []
    live = asyncio.run(run_liveorch(plan, logs))
    return report(plan, naive, live, logs, quick=args.quick)
