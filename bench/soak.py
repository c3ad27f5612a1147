"""``soak``: many rooms, hours of compressed schedules, random faults; invariants always checked.

What runs (each in its own process): the MetaStudio emulator (``--time-scale S``), our own
mosquitto on a free port, and ``liveorch run`` (SQLite store, JSON logs to a file). This module
is the harness: it writes each room's windows, injects faults through the emulator's admin API,
restarts the broker, SIGKILLs and restarts the daemon, sends MQTT commands with ids, reads the
emulator's journal and samples ``/_emulator/jobs`` once per ``sample_s``.

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

Judgement (issue #24: measured where the stream is, at the emulator):

* the timeline is exact, from the emulator's journal (``/_emulator/journal``: every RTMP change
  of every job, every call an injected fault hit, per room); ``/_emulator/jobs`` is still
  sampled once per ``sample_s`` and must agree with the journal wherever the journal shows no
  change while the sample was answered;
* never two ``WAITING``/``PROCESSING`` jobs for one room in any sample; never two jobs pushing
  one stream key at any instant of the journal;
* every scheduled second (after a start allowance at window open) is exactly one of: live (a
  job CONNECTED), an outage attributed to a fault under the strict rule of
  :mod:`bench.soak_timeline` (the fault hit *that* room), or an unaccounted outage, which
  counts against the SLA. SLA = live / (scheduled - attributed); the share of the timeline
  each rule would excuse is reported for the strict rule and the loose one used before;
* recovery per fault class, exact, in simulated seconds, against the floor + 5 s;
* every MQTT command id gets a reply; replays of an id answer the same; an ``ok`` reply has
  exactly one effect in the emulator (its unique script text), an ``error`` reply none, an
  ``outcome_unknown`` at most one. Commands keep flowing into every SIGKILL (a burst right
  before it): one the kill interrupted must end applied once, answered ``outcome_unknown``,
  or refused with no effect — never applied twice;
* daemon RSS and store size (db + WAL) over the last incarnation after a warm-up: least-squares
  slope, limited per simulated hour;
* no error/critical log event and no traceback in the daemon's log beyond an explicit allowlist.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx

from bench._common import (
    DaemonProcess,
    emulator_process,
    free_port,
    record,
    room_ids,
    scaled_recovery,
)
from bench.soak_report import figures, print_details, targets
from bench.soak_timeline import (
    ACTING_OPERATIONS,
    ROOM_FAULTS,
    Excuse,
    Interval,
    LinkTimeline,
    api_fault_class,
    clip,
    excused_share,
    first_live_after,
    live_at,
    merge,
    subtract,
    total,
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
    kill_burst: int = 6
    """Commands sent in the last instants before each SIGKILL (commands keep flowing across a
    kill, never a quiet window): some are interrupted mid-flight, and each of those must end
    applied once, answered ``outcome_unknown``, or refused with no effect — never applied twice."""
    warmup_s: float = 60.0
    """Memory and store growth are fitted over the last daemon incarnation after this warm-up."""


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
    # the emulator-side timeline, exact (journal), real seconds summed over rooms
    scheduled_s: float = 0.0
    live_s: float = 0.0
    attributed_s: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    unaccounted_s: float = 0.0
    outages: int = 0
    attributed_outages: Counter[str] = field(default_factory=Counter)
    unaccounted_outages: list[tuple[str, float, float]] = field(default_factory=list)
    loose_unaccounted_outages: int = 0  # the same outages under the pre-#24 rule
    excused_share_loose: float = float("nan")
    excused_share_strict: float = float("nan")
    sample_disagreements: list[tuple[float, str, bool]] = field(default_factory=list)
    journal_entries: int = 0
    journal_dropped: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    recovery_s: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    recovery_clean_s: defaultdict[str, list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )  # room faults whose recovery no storm, latency or kill touched: the downtime bench's case
    recovery_censored: Counter[str] = field(default_factory=Counter)
    worst: list[tuple[float, str, str, float, float]] = field(default_factory=list)
    duplicates: list[tuple[float, str, list[str]]] = field(default_factory=list)
    double_pushers: list[tuple[float, str, list[str]]] = field(default_factory=list)
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
    commands_interrupted: int = 0
    interrupted_outcomes: Counter[str] = field(default_factory=Counter)
    rss_slope_mb_per_h: float = float("nan")
    rss_mean_mb: float = float("nan")
    rss_fit_span_s: float = 0.0
    rss_fit_from_s: float = float("nan")  # seconds after the run started
    store_slope_mb_per_h: float = float("nan")
    store_mb_end: float = float("nan")
    store_rows: Counter[str] = field(default_factory=Counter)
    error_events: Counter[str] = field(default_factory=Counter)
    unexpected_errors: list[str] = field(default_factory=list)
    non_json_lines: list[str] = field(default_factory=list)
    jobs_created: int = 0

    @property
    def live_pct(self) -> float:
        """Live share of all scheduled time (after the start allowance), faults or not."""
        if not self.scheduled_s:
            return float("nan")
        return 100.0 * self.live_s / self.scheduled_s

    @property
    def sla_pct(self) -> float:
        """Live share of scheduled time outside attributed outages (emulator side)."""
        base = self.scheduled_s - sum(self.attributed_s.values())
        return 100.0 * self.live_s / base if base > 0 else float("nan")

    @property
    def partition_error_s(self) -> float:
        """scheduled - (live + attributed + unaccounted): every scheduled second is exactly one
        of the three, so anything but ~0 is a bug of the accounting itself."""
        parts = self.live_s + sum(self.attributed_s.values()) + self.unaccounted_s
        return abs(self.scheduled_s - parts)

    def invariant_failures(self) -> list[str]:
        """Broken invariants, human-readable (empty = all held)."""
        out = []
        if self.duplicates:
            out.append(
                f"{len(self.duplicates)} samples with two running jobs: {self.duplicates[:3]}"
            )
        if self.double_pushers:
            out.append(f"two jobs pushing one stream key: {self.double_pushers[:3]}")
        if self.commands_effect_mismatch:
            out.append(f"reply/effect mismatches: {self.commands_effect_mismatch[:5]}")
        if self.partition_error_s > 1e-6:
            out.append(f"timeline accounting off by {self.partition_error_s:.6f}s")
        if self.sample_disagreements:
            out.append(f"journal vs /_emulator/jobs disagree: {self.sample_disagreements[:3]}")
        if self.journal_dropped:
            out.append(f"journal dropped {self.journal_dropped} entries: timeline incomplete")
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
        self.samples: list[tuple[float, float, frozenset[str]]] = []  # (asked, answered, live)
        self.rss: list[tuple[float, int, float]] = []  # (t, incarnation, MiB)
        self.store: list[tuple[float, int, float]] = []  # (t, incarnation, MiB of db + WAL)
        self.journal: list[dict[str, Any]] = []
        self.journal_seq = 0
        self.kills: list[tuple[float, float]] = []  # (SIGKILL, ready again)
        self.interrupted: set[str] = set()
        self.hits: defaultdict[str, list[float]] = defaultdict(list)  # room → fault-hit calls
        self.n_commands = 0
        self.pending: dict[str, tuple[str, bytes, float]] = {}  # id → (room, payload, sent)
        self.replies: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        self.sent_ids: list[str] = []
        self.mqtt: aiomqtt.Client | None = None
        self.stopping = asyncio.Event()
        self.daemon_down = False

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
                self.samples.append((t, time.time(), frozenset(live)))
                self.report.jobs_created = len(jobs)
            await self._pause(self.cfg.sample_s - (time.time() - t))

    async def sample_rss(self, daemon: SoakDaemon) -> None:
        db = daemon.workdir / "liveorch.db"
        while not self.stopping.is_set():
            if not self.daemon_down and daemon.proc is not None and daemon.proc.poll() is None:
                t = time.time()
                with contextlib.suppress(OSError, ValueError):
                    self.rss.append((t, daemon.incarnation, daemon.rss_mb()))
                with contextlib.suppress(OSError):
                    size = sum(
                        p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists()
                    )
                    self.store.append((t, daemon.incarnation, size / 2**20))
            await self._pause(2.0)

    async def read_journal(self, admin: httpx.AsyncClient) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self.drain_journal(admin)
            await self._pause(1.0)

    async def drain_journal(self, admin: httpx.AsyncClient) -> None:
        """Fetch every journal entry not read yet (exact link changes and fault hits)."""
        while True:
            resp = await admin.get("/_emulator/journal", params={"since": self.journal_seq})
            body = resp.json()
            entries = body["entries"]
            self.report.journal_dropped = int(body.get("dropped", 0))
            if not entries:
                return
            self.journal.extend(entries)
            self.journal_seq = int(entries[-1]["seq"])

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
            # no quiet window: a burst of commands, then the kill while some are in flight
            for _ in range(self.cfg.kill_burst):
                await self._send_one(live_room=True)
            await asyncio.sleep(self.rng.uniform(0.0, 0.15))
            t = time.time()
            self.daemon_down = True
            daemon.sigkill()
            self.interrupted.update(self.pending)
            self.report.daemon_kills += 1
            await asyncio.sleep(self.rng.uniform(1.0, 4.0))  # a supervisor's restart delay
            daemon.start()
            ready = await daemon.wait_ready()
            self.daemon_down = False
            self.report.restart_ready_s.append(ready)
            self.kills.append((t, time.time()))
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
        while time.time() < until and not self.stopping.is_set():
            await self._pause(self.cfg.command_every_s)
            await self._send_one()

    async def _send_one(self, *, live_room: bool = False) -> None:
        self.n_commands += 1
        cid = f"soak-{self.cfg.seed}-{self.n_commands}"
        live = sorted(self.live) if live_room else []
        # a live room's command reaches the cloud: the window a kill can interrupt
        room = self.rng.choice(live or self.rooms)
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
                    asyncio.create_task(self.read_journal(admin), name="soak-journal"),
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
                    await self.drain_journal(admin)
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
                self._store_rows(daemon.workdir / "liveorch.db")
        return self.report

    # --- evaluation ------------------------------------------------------------------

    def _evaluate(self, stats: dict[str, Any], started: float, end: float) -> None:
        rep, cfg = self.report, self.cfg
        rep.samples = len(self.samples)
        rep.journal_entries = len(self.journal)
        links = LinkTimeline.build(self.journal, end)
        rep.double_pushers = links.double_pushers
        live = {room: links.live.get(room, []) for room in self.rooms}
        scheduled = {
            room: merge(
                (max(a, started) + cfg.start_allowance_s, min(b, end))
                for a, b in self.windows[room]
            )
            for room in self.rooms
        }
        strict, loose = self._excuses()
        rep.excused_share_strict = excused_share(
            scheduled, {r: [(e.start, e.end) for e in v] for r, v in strict.items()}
        )
        rep.excused_share_loose = excused_share(scheduled, loose)
        for room in self.rooms:
            sched = scheduled[room]
            rep.scheduled_s += total(sched)
            rep.live_s += total(clip(live[room], sched))
            for t0, t1 in subtract(sched, live[room]):
                rep.outages += 1
                if not any(a <= t0 <= b for a, b in loose.get(room, ())):
                    rep.loose_unaccounted_outages += 1
                excuse = next((e for e in strict.get(room, ()) if e.start <= t0 <= e.end), None)
                if excuse is None:
                    rep.unaccounted_s += t1 - t0
                    rep.unaccounted_outages.append((room, t0, t1))
                    continue
                rep.attributed_s[excuse.kind] += t1 - t0
                rep.attributed_outages[excuse.kind] += 1
                if excuse.kind not in ROOM_FAULTS:
                    self._recovery_after(excuse, room, t0, t1, live[room])
        self._room_fault_recoveries(live)
        self._check_samples(live, end)
        self._evaluate_commands(stats)
        rep.rss_fit_from_s, rep.rss_fit_span_s, rep.rss_slope_mb_per_h, rep.rss_mean_mb = _fit(
            self.rss, started, cfg.warmup_s
        )
        _, _, rep.store_slope_mb_per_h, _ = _fit(self.store, started, cfg.warmup_s)
        rep.store_mb_end = self.store[-1][2] if self.store else float("nan")

    def _excuses(self) -> tuple[dict[str, list[Excuse]], dict[str, list[Interval]]]:
        """Per room: the strict excuses (see :mod:`bench.soak_timeline`), and the windows of
        the loose rule used until 2026-12-03 (any fault, room-less ones for every room)."""
        lead, attr = self.cfg.sample_s, self.cfg.attribution_s
        strict: dict[str, list[Excuse]] = defaultdict(list)
        loose: dict[str, list[Interval]] = defaultdict(list)
        for f in self.faults:
            for room in [f.room] if f.room is not None else self.rooms:
                loose[room].append((f.start - lead, f.end + attr))
            if f.room is not None and f.kind in ROOM_FAULTS:
                excuse = Excuse(f.room, f.kind, f.start - lead, f.start + attr, f.start)
                strict[f.room].append(excuse)
        for k, r in self.kills:
            for room in self.rooms:
                opened = any(k <= a <= r for a, _ in self.windows[room])
                until = r + (attr if opened else lead)
                strict[room].append(Excuse(room, "daemon_sigkill", k - lead, until, r))
        for e in self.journal:
            rid = e.get("room_id")
            if e.get("kind") != "call" or e.get("cause") != "fault" or rid not in self.windows:
                continue
            self.hits[rid].append(float(e["t"]))
            if e.get("operation") in ACTING_OPERATIONS and int(e["status"]) >= 400:
                h = float(e["t"])
                kind = api_fault_class(int(e["status"]))
                strict[rid].append(Excuse(rid, kind, h - lead, h + attr, h))
        for hits in self.hits.values():
            hits.sort()
        for v in strict.values():  # the room's own fault first, then a kill, then a hit call
            v.sort(key=lambda x: (x.kind not in ROOM_FAULTS, x.kind != "daemon_sigkill", x.start))
        return strict, loose

    def _recovery_after(
        self, excuse: Excuse, room: str, t0: float, t1: float, live: Sequence[Interval]
    ) -> None:
        """An outage blamed on a room-less fault: recovery counts from the fault's end (a storm
        ends, the daemon is ready again) to live; a window that closed first is censored."""
        if not live_at(live, t1):
            self.report.recovery_censored[excuse.kind] += 1
            return
        fault_end = excuse.ref
        if excuse.kind != "daemon_sigkill":
            lead = self.cfg.sample_s
            for f in self.faults:
                hit = f.start - lead <= excuse.ref <= f.end + lead
                if f.kind == excuse.kind and f.room is None and hit:
                    fault_end = max(fault_end, f.end)
        self._add_recovery(excuse.kind, room, max(t0, fault_end), t1)

    def _room_fault_recoveries(self, live: Mapping[str, Sequence[Interval]]) -> None:
        """A room's own fault: from the injection to live again (exact, from the journal)."""
        lead = self.cfg.sample_s
        for f in self.faults:
            if f.room is None or f.kind not in ROOM_FAULTS:
                continue
            spans = live[f.room]
            cur = next(((a, b) for a, b in spans if a <= f.start < b), None)
            if cur is None or cur[1] > f.start + lead:
                self.report.recovery_censored[f.kind] += 1  # was not live, or did not drop
                continue
            back = first_live_after(spans, cur[1] + 1e-9)
            window_end = next((b for a, b in self.windows[f.room] if a <= f.start < b), 0.0)
            if back is None or back > window_end:
                self.report.recovery_censored[f.kind] += 1  # the window closed first
                continue
            self._add_recovery(f.kind, f.room, f.start, back)

    def _add_recovery(self, kind: str, room: str, start: float, back: float) -> None:
        rep = self.report
        rep.recovery_s[kind].append(back - start)
        rep.worst.append((back - start, kind, room, start, back))
        if kind not in ROOM_FAULTS:
            rep.recovery_clean_s[kind].append(back - start)
            return
        hits = self.hits.get(room, [])
        touched = bisect.bisect_left(hits, start) != bisect.bisect_right(hits, back)
        touched = touched or any(k <= back and r >= start for k, r in self.kills)
        touched = touched or any(
            f.room == room and start < f.start <= back for f in self.faults if f.kind in ROOM_FAULTS
        )
        if not touched:
            rep.recovery_clean_s[kind].append(back - start)

    def _check_samples(self, live: Mapping[str, Sequence[Interval]], end: float) -> None:
        """The journal's timeline against what /_emulator/jobs answered: a room whose state the
        journal says did not change while a sample was being answered must agree with it."""
        flat = {room: [t for span in spans for t in span] for room, spans in live.items()}
        for asked, answered, on in self.samples:
            if answered >= end:
                continue
            for room, edges in flat.items():
                i, j = bisect.bisect_right(edges, asked), bisect.bisect_right(edges, answered)
                if i == j and (i % 2 == 1) != (room in on):
                    self.report.sample_disagreements.append((asked, room, room in on))

    def _evaluate_commands(self, stats: Mapping[str, Any]) -> None:
        rep = self.report
        effects: Counter[str] = Counter()
        for c in stats.get("commands", []):
            if c.get("command") == "INSERT_PLAY_SCRIPT":
                text = str(((c.get("params") or {}).get("text_config") or {}).get("text"))
                effects[text] += 1
        for cid in self.sent_ids:
            replies = self.replies.get(cid, [])
            done = effects[_script(cid)]
            if done > 1:
                rep.commands_double.append(f"{cid}x{done}")
            if not replies:
                rep.commands_lost.append(cid)
                continue
            if len(set(replies)) > 1:
                rep.commands_inconsistent.append(f"{cid}:{sorted(set(map(str, replies)))}")
            status, code = replies[0]
            if status == "ok":
                rep.commands_ok += 1
                ok = done == 1
                outcome = "applied_once" if ok else f"ok_applied_{done}"
            else:
                rep.commands_error[str(code)] += 1
                # outcome_unknown promises nothing but "at most once": 0 or 1 effect
                ok = done <= 1 if code == "outcome_unknown" else done == 0
                outcome = str(code) if ok else f"{code}_applied_{done}"
            if not ok:
                rep.commands_effect_mismatch.append(f"{cid}:{status}/{code}/{done}")
            if cid in self.interrupted:
                rep.commands_interrupted += 1
                rep.interrupted_outcomes[outcome] += 1

    def timeline(self, room: str, t0: float, t1: float, pad: float = 20.0) -> list[str]:
        """What happened to one room around an outage: faults, link changes, hit calls."""
        lines = []
        for f in self.faults:
            if f.room in (None, room) and t0 - pad <= f.start <= t1 + pad:
                lines.append((f.start, f"fault {f.kind} (until {f.end - t0:+.2f}s)"))
        for e in self.journal:
            t = float(e["t"])
            if e.get("room_id") != room or not t0 - pad <= t <= t1 + pad:
                continue
            if e["kind"] == "rtmp":
                lines.append((t, f"rtmp {e['state']} job {str(e['job_id'])[:8]}"))
            else:
                lines.append((t, f"call {e['operation']} -> {e['status']} ({e['cause']})"))
        for a, b in self.windows[room]:
            for edge, what in ((a, "window opens"), (b, "window closes")):
                if t0 - pad <= edge <= t1 + pad:
                    lines.append((edge, what))
        return [f"    {t - t0:+8.2f}s {what}" for t, what in sorted(lines)]

    def _store_rows(self, db: Path) -> None:
        """Rows per table at the end: what the store's growth is made of."""
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as conn:
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for name in names:
                # names come from sqlite_master of our own store, not from input
                (n,) = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()  # noqa: S608
                if n:
                    self.report.store_rows[name] = int(n)

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


def _fit(
    points: Sequence[tuple[float, int, float]], started: float, warmup_s: float
) -> tuple[float, float, float, float]:
    """Least-squares line over the last incarnation after ``warmup_s``: (from, span, slope
    per hour, mean); NaNs with fewer than 5 points."""
    nan = float("nan")
    last = max((inc for _, inc, _ in points), default=0)
    pts = [(t, v) for t, inc, v in points if inc == last]
    pts = [(t, v) for t, v in pts if t >= pts[0][0] + warmup_s] if pts else []
    if len(pts) < 5:
        return nan, 0.0, nan, nan
    fit = statistics.linear_regression([t for t, _ in pts], [v for _, v in pts])
    mean = statistics.fmean(v for _, v in pts)
    return pts[0][0] - started, pts[-1][0] - pts[0][0], fit.slope * 3600.0, mean


async def run_soak(cfg: SoakConfig, workdir: Path | None = None) -> SoakReport:
    """Run one soak; the work directory is removed unless ``BENCH_KEEP`` is set or it fails."""
    return (await run_soak_with(cfg, workdir))[0]


async def run_soak_with(cfg: SoakConfig, workdir: Path | None = None) -> tuple[SoakReport, Soak]:
    """:func:`run_soak`, also returning the harness (its journal, for outage timelines)."""
    own = workdir is None
    wd = workdir or Path(tempfile.mkdtemp(prefix="liveorch-soak-"))
    ok = False
    try:
        soak = Soak(cfg, wd)
        report = await soak.run()
        ok = not report.invariant_failures()
        return report, soak
    finally:
        if own and ok and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(wd, ignore_errors=True)
        elif own:
            print(f"soak files kept in {wd}", file=sys.stderr)


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
    rep, soak = asyncio.run(run_soak_with(cfg))
    print_details(rep, soak)
    notes = (
        f"emulator (own process) time x{cfg.time_scale:g}: 1 real s = {cfg.time_scale:g} "
        f"simulated s; windows {cfg.window_on_s:g}s on/{cfg.window_off_s:g}s off real "
        f"(= {cfg.window_on_s * cfg.time_scale / 60:g}/{cfg.window_off_s * cfg.time_scale / 60:g} "
        "simulated min); recovery defaults /scale; rate limits x"
        f"{cfg.rate_scale:g} (not x scale); HTTP/CPU/restarts not compressed; "
        f"callbacks {cfg.callback_loss:.0%} lost, {cfg.callback_duplicates:.0%} duplicated, "
        "reordered; timeline exact from the emulator journal (link changes), not sampled; "
        f"start allowance {cfg.start_allowance_s:g}s real after a window opens; STRICT "
        f"attribution: an outage is excused only by a fault on that room, a start/list/command "
        f"of that room an injected fault failed, or a daemon SIGKILL, within "
        f"{cfg.attribution_s:g}s before its start (polls, latency, broker restarts and the "
        "service's own throttling excuse nothing); "
        f"{cfg.kill_burst} commands sent right before each SIGKILL (no quiet window); "
        f"RSS/store fit over the last incarnation after {cfg.warmup_s:g}s warm-up; recovery "
        "bound = floor + 5 sim-s per class (floors as the downtime bench's: drops grace+connect "
        f"= 11 s, a new job waiting+connect = 2 s; bench/soak_report.py)"
    )
    record("soak", figures(rep), targets(rep, full=not quick), quick=quick, notes=notes)
    return 0 if not rep.invariant_failures() else 1
