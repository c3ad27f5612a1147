"""``soak``: many rooms, hours of compressed schedules, random faults; invariants always checked.

What runs (each in its own process): the MetaStudio emulator (``--time-scale S``), our own
mosquitto on a free port, and ``liveorch run`` (SQLite store, JSON logs to a file). This module
is the harness: it writes each room's windows, injects faults through the emulator's admin API,
restarts the broker, SIGKILLs and restarts the daemon, sends MQTT commands with ids, and samples
``/_emulator/jobs`` once per ``sample_s``.

Time compression, honestly: the emulator runs every *simulated* delay ``S`` times faster (job
WAITING → PROCESSING, connect, reconnect attempts, the 3-minute exit deadline, held drops), and
the daemon's recovery ladder is configured with its documented defaults divided by ``S`` (grace
10 s → 10/S, poll 30 s → 30/S, …). Wall-clock schedule windows are short real windows
(``window_on_s`` on, ``window_off_s`` off, a random phase per room) read as ``S`` times longer:
at S = 60 one real second stands for one scheduled minute, so a 24-minute run exercises the
equivalent of 24 hours of schedules per room. What is *not* compressed: HTTP round trips, the
daemon's CPU work, SQLite commits, MQTT and process restarts, so each of them weighs ``S`` times
more in simulated terms than in reality (the compression is conservative for liveorch). Rate
limits are *not* scaled by ``S`` (that would be hundreds of starts per second on two cores): the
emulator's documented limits are multiplied by ``rate_scale`` and the daemon is configured to
match.

Invariants (every one is checked, none is assumed):

* never two ``WAITING``/``PROCESSING`` jobs for one room in any sample of ``/_emulator/jobs``;
* every scheduled sample (after a start allowance at window open) is either live (a PROCESSING
  job with RTMP CONNECTED) or part of an outage that began while a recorded fault was active (or
  within ``attribution_s`` after it); each outage has a recovery time;
* every MQTT command id gets a reply; replays of an id answer the same; an ``ok`` reply has
  exactly one effect in the emulator (its unique script text), an ``error`` reply none;
* daemon RSS is flat over its last (longest) incarnation: least-squares slope in MiB/hour;
* no error/critical log event and no traceback in the daemon's log beyond an explicit allowlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from bench._common import (
    DaemonProcess,
    Target,
    emulator_process,
    free_port,
    record,
    room_ids,
    scaled_recovery,
)
from orchestrator import logging as olog

__all__ = ["SoakConfig", "SoakReport", "run", "run_soak"]

PREFIX = "soak"
# Error-level events the daemon is *expected* to log under the injected faults. Empty until a
# fault proves an entry necessary; each entry says which fault explains it.
EXPECTED_ERROR_EVENTS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SoakConfig:
    rooms: int = 200
    duration_s: float = 300.0
    time_scale: float = 60.0
    rate_scale: float = 5.0
    window_on_s: float = 60.0
    window_off_s: float = 15.0
    sample_s: float = 1.0
    fault_every_s: float = 2.0
    storm_real_s: float = 5.0
    daemon_kills: int = 2
    broker_restarts: int = 2
    command_every_s: float = 1.0
    command_resend_s: float = 8.0
    start_allowance_s: float = 15.0
    attribution_s: float = 20.0
    callback_loss: float = 0.05
    callback_duplicates: float = 0.05
    log_level: str = "info"
    seed: int = 1
    quiet_kills: bool = False
    """Hold new commands and wait for every reply before a SIGKILL. A kill between the cloud
    call and the stored reply re-executes the command when the client resends its id (the
    bridge is at-least-once across crashes); the CI test excludes that known window, the bench
    measures it."""


@dataclass(slots=True)
class FaultRecord:
    kind: str
    room: str | None  # None = every room
    start: float
    end: float
    recovered_at: float | None = None


@dataclass(slots=True)
class SoakReport:
    config: SoakConfig
    real_s: float = 0.0
    samples: int = 0
    scheduled_samples: int = 0
    live_samples: int = 0
    outages: int = 0
    unaccounted_outages: list[tuple[str, float, float]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    recovery_s: list[float] = field(default_factory=list)  # real seconds, room faults
    duplicates: list[tuple[float, str, list[str]]] = field(default_factory=list)
    daemon_kills: int = 0
    broker_restarts: int = 0
    restart_ready_s: list[float] = field(default_factory=list)
    commands_sent: int = 0
    commands_resent: int = 0
    commands_replayed: int = 0
    commands_ok: int = 0
    commands_error: Counter[str] = field(default_factory=Counter)
    commands_lost: list[str] = field(default_factory=list)
    commands_double: list[str] = field(default_factory=list)
    commands_inconsistent: list[str] = field(default_factory=list)
    commands_effect_mismatch: list[str] = field(default_factory=list)
    rss_slope_mb_per_h: float = float("nan")
    rss_mean_mb: float = float("nan")
    rss_fit_span_s: float = 0.0
    error_events: Counter[str] = field(default_factory=Counter)
    unexpected_errors: list[str] = field(default_factory=list)
    non_json_lines: list[str] = field(default_factory=list)
    jobs_created: int = 0

    @property
    def sla_pct(self) -> float:
        if not self.scheduled_samples:
            return float("nan")
        return 100.0 * self.live_samples / self.scheduled_samples

    def invariant_failures(self) -> list[str]:
        """Broken invariants, human-readable (empty = all held)."""
        out = []
        if self.duplicates:
            out.append(
                f"{len(self.duplicates)} samples with two running jobs: {self.duplicates[:3]}"
            )
        if self.commands_lost:
            out.append(f"commands without a reply: {self.commands_lost[:5]}")
        if self.commands_double:
            out.append(f"commands executed twice: {self.commands_double[:5]}")
        if self.commands_inconsistent:
            out.append(f"replays answered differently: {self.commands_inconsistent[:5]}")
        if self.unexpected_errors:
            out.append(f"unexpected error log events: {self.unexpected_errors[:5]}")
        if self.non_json_lines:
            out.append(f"non-JSON (traceback?) log lines: {self.non_json_lines[:5]}")
        return out


# ----------------------------------------------------------------------------- processes


class Broker:
    """Our own mosquitto on a free loopback port, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text(errors='replace')}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise TimeoutError("mosquitto did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class SoakDaemon(DaemonProcess):
    """The bench daemon with per-room one-off windows and a log that survives restarts."""

    windows: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    incarnation: int = 0

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        for room in cfg["rooms"]:
            room["windows"] = self.windows[room["id"]]
        return cfg

    def start(self) -> None:
        config = self.write_config() if self.incarnation == 0 else self.workdir / "liveorch.toml"
        self.incarnation += 1
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "run", "--config", str(config)],
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def _windows(
    rooms: Sequence[str], t0: float, cfg: SoakConfig, rng: random.Random
) -> dict[str, list[tuple[float, float]]]:
    """Per room: back-to-back (open, close) real-time windows covering the run, random phase."""
    period = cfg.window_on_s + cfg.window_off_s
    out: dict[str, list[tuple[float, float]]] = {}
    for room in rooms:
        # whole seconds: the config carries ISO times to the second
        start = float(int(t0 - rng.uniform(0.0, period)))
        spans = []
        while start < t0 + cfg.duration_s + period:
            spans.append((start, start + round(cfg.window_on_s)))
            start += round(period)
        out[room] = spans
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- the run


class Soak:
    def __init__(self, cfg: SoakConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.rng = random.Random(cfg.seed)
        self.rooms = room_ids(cfg.rooms)
        self.report = SoakReport(cfg)
        self.faults: list[FaultRecord] = []
        self.live: set[str] = set()
        self.jobs_by_room: dict[str, str] = {}
        self.samples: list[tuple[float, frozenset[str]]] = []
        self.rss: list[tuple[float, int, float]] = []  # (t, incarnation, MiB)
        self.pending: dict[str, tuple[str, bytes, float]] = {}  # id → (room, payload, sent)
        self.replies: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        self.sent_ids: list[str] = []
        self.mqtt: aiomqtt.Client | None = None
        self.stopping = asyncio.Event()
        self.daemon_down = False
        self.hold_commands = False

    # --- samplers --------------------------------------------------------------------

    async def sample_jobs(self, admin: httpx.AsyncClient) -> None:
        while not self.stopping.is_set():
            t = time.time()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                jobs = (await admin.get("/_emulator/jobs")).json()["jobs"]
                running: dict[str, list[str]] = defaultdict(list)
                live: set[str] = set()
                for j in jobs:
                    if j["state"] in ("WAITING", "PROCESSING"):
                        running[j["room_id"]].append(j["job_id"])
                        if j["state"] == "PROCESSING" and j["rtmp_state"] == "CONNECTED":
                            live.add(j["room_id"])
                            self.jobs_by_room[j["room_id"]] = j["job_id"]
                for room, ids in running.items():
                    if len(ids) > 1:
                        self.report.duplicates.append((t, room, ids))
                self.live = live
                self.samples.append((t, frozenset(live)))
                self.report.jobs_created = len(jobs)
            await self._pause(self.cfg.sample_s - (time.time() - t))

    async def sample_rss(self, daemon: SoakDaemon) -> None:
        while not self.stopping.is_set():
            if not self.daemon_down and daemon.proc is not None and daemon.proc.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    self.rss.append((time.time(), daemon.incarnation, daemon.rss_mb()))
            await self._pause(2.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), max(0.0, seconds))

    # --- faults ----------------------------------------------------------------------

    def _in_window(self, room: str, t: float, margin: float) -> bool:
        return any(a <= t and t + margin <= b for a, b in self.windows[room])

    def _pick_live(self) -> str | None:
        now = time.time()
        candidates = sorted(r for r in self.live if self._in_window(r, now, 10.0))
        return self.rng.choice(candidates) if candidates else None

    async def inject_faults(self, admin: httpx.AsyncClient, until: float) -> None:
        s = self.cfg.time_scale
        kinds = ["drop_held", "drop_forever", "job_failed", "storm_5xx", "storm_429"]
        kinds += ["latency", "ghost_start"]
        weights = [4, 2, 3, 1, 1, 1, 1]
        while time.time() < until and not self.stopping.is_set():
            await self._pause(self.rng.expovariate(1.0 / self.cfg.fault_every_s))
            if time.time() >= until:
                break
            if self.daemon_down:
                # faults need a daemon to hit: none while it is dead or not ready yet
                continue
            kind = self.rng.choices(kinds, weights)[0]
            with contextlib.suppress(httpx.HTTPError):
                await self._inject(admin, kind, s)

    async def _inject(self, admin: httpx.AsyncClient, kind: str, s: float) -> None:
        now = time.time()
        if kind in ("drop_held", "drop_forever", "job_failed", "ghost_start"):
            room = self._pick_live()
            job = self.jobs_by_room.get(room) if room else None
            if room is None or job is None:
                return
            if kind == "job_failed":
                r = await admin.post(f"/_emulator/jobs/{job}/fail")
            elif kind == "ghost_start":
                # the next start (ours: after this failure) is accepted but never answered
                f = {"operation": "start", "ghost": True, "count": 1}
                if (await admin.post("/_emulator/faults", json=f)).status_code != 200:
                    return
                r = await admin.post(f"/_emulator/jobs/{job}/fail")
            else:
                hold = self.rng.uniform(20.0, 240.0) / s if kind == "drop_held" else None
                r = await admin.post(
                    f"/_emulator/jobs/{job}/rtmp", json={"state": "DISCONNECTED", "hold_s": hold}
                )
            if r.status_code == 200:
                self.faults.append(FaultRecord(kind, room, now, now))
                self.report.faults[kind] += 1
            return
        if kind == "latency":
            body: dict[str, Any] = {"operation": "any", "latency_ms": 1500, "count": 20}
        elif kind == "storm_5xx":
            body = {"operation": "any", "status": 503, "error_code": "MSS.00000002"}
        else:
            body = {"operation": "any", "status": 429, "error_code": "APIGW.0308"}
        # a storm in time (the emulator's clock is simulated: x scale). It used to be a count
        # of calls, and a count left by a SIGKILLed daemon outlived the restart: a daemon
        # retrying adoption every ~30 s took minutes to use it up (CI saw "not ready")
        body["for_s"] = self.cfg.storm_real_s * s
        if (await admin.post("/_emulator/faults", json=body)).status_code == 200:
            self.faults.append(FaultRecord(kind, None, now, now + self.cfg.storm_real_s))
            self.report.faults[kind] += 1

    async def kill_daemon(self, daemon: SoakDaemon, at: Sequence[float]) -> None:
        for when in at:
            await self._pause(when - time.time())
            if self.stopping.is_set():
                return
            if self.cfg.quiet_kills:
                self.hold_commands = True
                deadline = time.monotonic() + 30.0
                while self.pending and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            t = time.time()
            self.daemon_down = True
            daemon.sigkill()
            self.report.daemon_kills += 1
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))  # a supervisor's restart delay
            daemon.start()
            ready = await daemon.wait_ready()
            self.daemon_down = False
            self.hold_commands = False
            self.report.restart_ready_s.append(ready)
            self.faults.append(FaultRecord("daemon_sigkill", None, t, time.time()))
            self.report.faults["daemon_sigkill"] += 1

    async def restart_broker(self, broker: Broker, at: Sequence[float]) -> None:
        for when in at:
            await self._pause(when - time.time())
            if self.stopping.is_set():
                return
            t = time.time()
            broker.stop()
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            await broker.start()
            self.report.broker_restarts += 1
            self.faults.append(FaultRecord("broker_restart", None, t, time.time()))
            self.report.faults["broker_restart"] += 1

    # --- MQTT commands ---------------------------------------------------------------

    async def mqtt_loop(self, broker: Broker) -> None:
        """Stay subscribed to replies across broker restarts (the loop is ours)."""
        while not self.stopping.is_set():
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", broker.port, identifier=f"soak-harness-{os.getpid()}"
                ) as client:
                    await client.subscribe(f"{PREFIX}/rooms/+/command/reply", qos=1)
                    self.mqtt = client
                    async for msg in client.messages:
                        payload = msg.payload
                        if isinstance(payload, bytes | bytearray):
                            self._on_reply(bytes(payload))
            except aiomqtt.MqttError:
                self.mqtt = None
                await self._pause(0.3)
        self.mqtt = None

    def _on_reply(self, payload: bytes) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            reply = json.loads(payload)
            cid = reply.get("id")
            if not isinstance(cid, str) or not cid.startswith("soak-"):
                return
            code = (reply.get("error") or {}).get("code")
            self.replies[cid].append((str(reply.get("status")), code))
            self.pending.pop(cid, None)

    async def _publish(self, room: str, payload: bytes) -> bool:
        client = self.mqtt
        if client is None:
            return False
        try:
            await client.publish(f"{PREFIX}/rooms/{room}/command", payload, qos=1)
        except aiomqtt.MqttError:
            return False
        return True

    async def send_commands(self, until: float) -> None:
        n = 0
        while time.time() < until and not self.stopping.is_set():
            await self._pause(self.cfg.command_every_s)
            if self.hold_commands:
                continue
            n += 1
            cid = f"soak-{self.cfg.seed}-{n}"
            room = self.rng.choice(self.rooms)
            body = {"id": cid, "action": "insert_script", "text": _script(cid), "client": "soak"}
            payload = json.dumps(body).encode()
            self.pending[cid] = (room, payload, time.time())
            self.sent_ids.append(cid)
            self.report.commands_sent += 1
            await self._publish(room, payload)
            if self.rng.random() < 0.1:  # a client that sends the same id twice on purpose
                self.report.commands_replayed += 1
                await self._publish(room, payload)

    async def resend(self) -> None:
        """An MQTT client's duty: resend a command (same id) until it gets its reply."""
        while not self.stopping.is_set():
            await self._pause(1.0)
            now = time.time()
            for cid, (room, payload, sent) in list(self.pending.items()):
                if now - sent >= self.cfg.command_resend_s and await self._publish(room, payload):
                    self.pending[cid] = (room, payload, now)
                    self.report.commands_resent += 1

    # --- the run ---------------------------------------------------------------------

    async def run(self) -> SoakReport:
        cfg = self.cfg
        t0 = time.time() + 5.0
        self.windows = _windows(self.rooms, t0, cfg, self.rng)
        broker = Broker(self.workdir)
        await broker.start()
        try:
            async with emulator_process(
                cfg.rooms, rate_scale=cfg.rate_scale, time_scale=cfg.time_scale
            ) as emu_url:
                return await self._with_emulator(emu_url, broker, t0)
        finally:
            broker.stop()

    async def _with_emulator(self, emu_url: str, broker: Broker, t0: float) -> SoakReport:
        cfg = self.cfg
        rate = cfg.rate_scale
        daemon = SoakDaemon(
            emu_url,
            self.rooms,
            # The API runs only `rate` times faster here, not time_scale: a poll sized by a
            # time-scaled query budget would poll 4-6x as often as before and load the 2
            # cores; the soak is about invariants under faults, so it polls at the longest.
            recovery={
                **scaled_recovery(cfg.time_scale),
                "poll_min_interval_s": scaled_recovery(cfg.time_scale)["poll_interval_s"],
            },
            extra={
                "cloud": {
                    "rate_start_per_s": 4.0 * rate,
                    "rate_query_per_s": 20.0 * rate,
                    "rate_write_per_s": 4.0 * rate,
                    "read_timeout_s": 5.0,
                },
                "mqtt": {
                    "enabled": True,
                    "port": broker.port,
                    "prefix": PREFIX,
                    "client_id": "liveorch-soak",
                },
                "schedule": {"min_remaining_s": 3.0, "misfire_grace_s": 30.0},
            },
            log_level=cfg.log_level,
            workdir=self.workdir / "daemon",
            windows={
                r: [{"start": _iso(a), "end": _iso(b)} for a, b in w]
                for r, w in self.windows.items()
            },
        )
        daemon.workdir.mkdir(parents=True, exist_ok=True)
        async with httpx.AsyncClient(base_url=emu_url, timeout=30.0) as admin:
            knobs = {
                "drop_rate": cfg.callback_loss,
                "duplicate_rate": cfg.callback_duplicates,
                "reorder": True,
            }
            (await admin.post("/_emulator/callbacks", json=knobs)).raise_for_status()
            daemon.start()
            try:
                await daemon.wait_ready()
                started = time.time()
                end = max(t0, started) + cfg.duration_s
                # disruptions in the first 60 %: the rest is the memory-fit window
                kills = [
                    started + cfg.duration_s * (i + 1) * 0.6 / (cfg.daemon_kills + 1)
                    for i in range(cfg.daemon_kills)
                ]
                brokers = [
                    started + cfg.duration_s * (i + 0.5) * 0.8 / max(cfg.broker_restarts, 1)
                    for i in range(cfg.broker_restarts)
                ]
                tasks = [
                    asyncio.create_task(self.sample_jobs(admin), name="soak-sample-jobs"),
                    asyncio.create_task(self.sample_rss(daemon), name="soak-sample-rss"),
                    asyncio.create_task(self.mqtt_loop(broker), name="soak-mqtt"),
                    asyncio.create_task(self.resend(), name="soak-resend"),
                ]
                work = [
                    asyncio.create_task(self.inject_faults(admin, end - 20.0), name="soak-faults"),
                    asyncio.create_task(self.kill_daemon(daemon, kills), name="soak-kills"),
                    asyncio.create_task(self.restart_broker(broker, brokers), name="soak-broker"),
                    asyncio.create_task(self.send_commands(end - 15.0), name="soak-commands"),
                ]
                try:
                    await asyncio.gather(*work)
                    await asyncio.sleep(max(0.0, end - time.time()))
                    # replies still owed: keep resending for a while (the daemon is up)
                    deadline = time.monotonic() + 60.0
                    while self.pending and time.monotonic() < deadline:
                        await asyncio.sleep(0.5)
                    stats = (await admin.get("/_emulator/stats")).json()
                finally:
                    self.stopping.set()
                    for t in work + tasks:
                        t.cancel()
                    await asyncio.gather(*work, *tasks, return_exceptions=True)
                self.report.real_s = time.time() - started
                self._evaluate(stats, started, end)
            finally:
                await daemon.stop()
                self._scan_logs(daemon)
        return self.report

    # --- evaluation ------------------------------------------------------------------

    def _evaluate(self, stats: dict[str, Any], started: float, end: float) -> None:
        rep, cfg = self.report, self.cfg
        rep.samples = len(self.samples)
        # outages per room, from scheduled samples after the start allowance
        for room in self.rooms:
            down_since: float | None = None
            last_down = 0.0
            for t, live in self.samples:
                if t < started or t > end:
                    continue
                scheduled = any(
                    max(a, started) + cfg.start_allowance_s <= t < b for a, b in self.windows[room]
                )
                if not scheduled:
                    if down_since is not None:
                        self._close_outage(room, down_since, last_down)
                        down_since = None
                    continue
                rep.scheduled_samples += 1
                if room in live:
                    rep.live_samples += 1
                    if down_since is not None:
                        self._close_outage(room, down_since, t)
                        down_since = None
                else:
                    last_down = t
                    if down_since is None:
                        down_since = t
            if down_since is not None:
                self._close_outage(room, down_since, last_down)
        # recovery per room fault: first live sample after a down one (or the first live one)
        for f in self.faults:
            if f.room is None:
                continue
            seen_down = False
            for t, live in self.samples:
                if t <= f.start:
                    continue
                if f.room in live:
                    f.recovered_at = t
                    break
                seen_down = True
                if not self._in_window(f.room, t, 0.0):
                    break  # the window closed first: not a recovery to measure
            if f.recovered_at is not None and (
                seen_down or f.recovered_at - f.start < 2 * cfg.sample_s
            ):
                rep.recovery_s.append(f.recovered_at - f.start)
        # commands
        effects: Counter[str] = Counter()
        for c in stats.get("commands", []):
            if c.get("command") == "INSERT_PLAY_SCRIPT":
                text = str(((c.get("params") or {}).get("text_config") or {}).get("text"))
                effects[text] += 1
        for cid in self.sent_ids:
            replies = self.replies.get(cid, [])
            done = effects[_script(cid)]
            if not replies:
                rep.commands_lost.append(cid)
                continue
            if len(set(replies)) > 1:
                rep.commands_inconsistent.append(f"{cid}:{sorted(set(map(str, replies)))}")
            status, code = replies[0]
            if done > 1:
                rep.commands_double.append(f"{cid}x{done}")
            if status == "ok":
                rep.commands_ok += 1
                if done != 1:
                    rep.commands_effect_mismatch.append(f"{cid}:ok/{done}")
            else:
                rep.commands_error[str(code)] += 1
                if done != 0:
                    rep.commands_effect_mismatch.append(f"{cid}:{code}/{done}")
        # memory: the last incarnation, after a 30 s warm-up
        last = max((inc for _, inc, _ in self.rss), default=0)
        pts = [(t, mb) for t, inc, mb in self.rss if inc == last]
        pts = [(t, mb) for t, mb in pts if t >= pts[0][0] + 30.0] if pts else []
        if len(pts) >= 5:
            fit = statistics.linear_regression([t for t, _ in pts], [mb for _, mb in pts])
            rep.rss_slope_mb_per_h = fit.slope * 3600.0
            rep.rss_mean_mb = statistics.fmean(mb for _, mb in pts)
            rep.rss_fit_span_s = pts[-1][0] - pts[0][0]

    def _close_outage(self, room: str, start: float, end: float) -> None:
        self.report.outages += 1
        lead = self.cfg.sample_s
        for f in self.faults:
            if f.room not in (None, room):
                continue
            if f.start - lead <= start <= f.end + self.cfg.attribution_s:
                return
        self.report.unaccounted_outages.append((room, start, end))

    def _scan_logs(self, daemon: SoakDaemon) -> None:
        rep = self.report
        with (
            contextlib.suppress(OSError),
            daemon.log_path.open(encoding="utf-8", errors="replace") as f,
        ):
            for line in f:
                line = line.rstrip("\n")
                if not line:
                    continue
                if not line.startswith("{"):
                    rep.non_json_lines.append(line[:200])
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    rep.non_json_lines.append(line[:200])
                    continue
                level = str(entry.get("level", "")).lower()
                if level in ("error", "critical", "exception") or "exception" in entry:
                    event = str(entry.get("event"))
                    rep.error_events[event] += 1
                    if event not in EXPECTED_ERROR_EVENTS:
                        rep.unexpected_errors.append(line[:300])


def _script(cid: str) -> str:
    return f"soak script [{cid}]"


async def run_soak(cfg: SoakConfig, workdir: Path | None = None) -> SoakReport:
    """Run one soak; the work directory is removed unless ``BENCH_KEEP`` is set or it fails."""
    own = workdir is None
    wd = workdir or Path(tempfile.mkdtemp(prefix="liveorch-soak-"))
    ok = False
    try:
        report = await Soak(cfg, wd).run()
        ok = not report.invariant_failures()
        return report
    finally:
        if own and ok and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(wd, ignore_errors=True)
        elif own:
            print(f"soak files kept in {wd}", file=sys.stderr)


def _figures(rep: SoakReport) -> dict[str, object]:
    cfg = rep.config
    s = cfg.time_scale
    rec = rep.recovery_s
    return {
        "rooms": cfg.rooms,
        "real_s": rep.real_s,
        "time_scale": s,
        "simulated_h": rep.real_s * s / 3600.0,
        "scheduled_room_minutes_sim": rep.scheduled_samples * cfg.sample_s * s / 60.0,
        "sla_pct": rep.sla_pct,
        "outages": rep.outages,
        "unaccounted_outages": len(rep.unaccounted_outages),
        "recovery_mean_sim_s": statistics.fmean(rec) * s if rec else float("nan"),
        "recovery_max_sim_s": max(rec) * s if rec else float("nan"),
        "recovery_mean_real_s": statistics.fmean(rec) if rec else float("nan"),
        "recovery_max_real_s": max(rec) if rec else float("nan"),
        "faults_injected": sum(rep.faults.values()),
        "faults_by_kind": " ".join(f"{k}:{v}" for k, v in sorted(rep.faults.items())),
        "daemon_sigkills": rep.daemon_kills,
        "restart_ready_max_s": max(rep.restart_ready_s, default=float("nan")),
        "broker_restarts": rep.broker_restarts,
        "duplicate_job_samples": len(rep.duplicates),
        "jobs_created": rep.jobs_created,
        "commands_sent": rep.commands_sent,
        "commands_resent": rep.commands_resent,
        "commands_replayed": rep.commands_replayed,
        "commands_ok": rep.commands_ok,
        "commands_error": " ".join(f"{k}:{v}" for k, v in sorted(rep.commands_error.items()))
        or "0",
        "commands_lost": len(rep.commands_lost),
        "commands_double": len(rep.commands_double),
        "commands_effect_mismatch": len(rep.commands_effect_mismatch),
        "rss_mean_mb": rep.rss_mean_mb,
        "rss_slope_mb_per_h": rep.rss_slope_mb_per_h,
        "rss_fit_span_s": rep.rss_fit_span_s,
        "log_error_events": sum(rep.error_events.values()),
        "log_unexpected_errors": len(rep.unexpected_errors) + len(rep.non_json_lines),
    }


def _print_details(rep: SoakReport) -> None:
    for failure in rep.invariant_failures():
        print(f"  INVARIANT BROKEN: {failure}")
    for room, a, b in rep.unaccounted_outages[:10]:
        print(f"  unaccounted outage {room} {_iso(a)} .. {_iso(b)} ({b - a:.1f}s real)")
    for m in rep.commands_effect_mismatch[:10]:
        print(f"  command reply/effect mismatch {m}")
    for event, n in rep.error_events.most_common(10):
        print(f"  error log event {event} x{n}")


def run(quick: bool) -> int:
    olog.configure("warning", "json")
    if quick:
        cfg = SoakConfig(rooms=200, duration_s=270.0, daemon_kills=2, broker_restarts=1)
    else:
        cfg = SoakConfig(
            rooms=200, duration_s=1470.0, daemon_kills=4, broker_restarts=3, log_level="info"
        )
    print(
        f"soak: {cfg.rooms} rooms, {cfg.duration_s:.0f}s real at time x{cfg.time_scale:g}",
        flush=True,
    )
    rep = asyncio.run(run_soak(cfg))
    _print_details(rep)
    figures = _figures(rep)
    targets = [
        Target("duplicate job samples", len(rep.duplicates), "<=", 0),
        Target("commands lost", len(rep.commands_lost), "<=", 0),
        Target("commands executed twice", len(rep.commands_double), "<=", 0),
        Target("unaccounted outages", len(rep.unaccounted_outages), "<=", 0),
        Target("unexpected error log lines", figures["log_unexpected_errors"], "<=", 0),  # type: ignore[arg-type]
        Target("simulated hours", figures["simulated_h"], ">=", 24.0 if not quick else 0.0),  # type: ignore[arg-type]
    ]
    notes = (
        f"emulator (own process) time x{cfg.time_scale:g}: 1 real s = {cfg.time_scale:g} "
        f"simulated s; windows {cfg.window_on_s:g}s on/{cfg.window_off_s:g}s off real "
        f"(= {cfg.window_on_s * cfg.time_scale / 60:g}/{cfg.window_off_s * cfg.time_scale / 60:g} "
        "simulated min); recovery defaults /scale; rate limits x"
        f"{cfg.rate_scale:g} (not x scale); HTTP/CPU/restarts not compressed; "
        f"callbacks {cfg.callback_loss:.0%} lost, {cfg.callback_duplicates:.0%} duplicated, "
        f"reordered; samples every {cfg.sample_s:g}s real; start allowance "
        f"{cfg.start_allowance_s:g}s; outage accounted if it began within "
        f"{cfg.attribution_s:g}s of a recorded fault; RSS fit over last incarnation"
    )
    record("soak", figures, targets, quick=quick, notes=notes)
    return 0 if not rep.invariant_failures() else 1
