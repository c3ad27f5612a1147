"""Shared bench plumbing: machine/commit facts, RESULTS.md rows, percentiles, emulator, daemon.

Why one module: every bench must report the same facts the same way (so rows compare across
runs and machines), start the emulator with the same credentials, and start the daemon with a
config generated the same way. Nothing here asserts: benches print what they measured and say
whether each target was met.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import DEFAULT_RATE_LIMITS, EmulatorService
from orchestrator.httpserver import serve
from tests.support.ports import free_port
from tests.support.procs import (
    Proc,
    eventually,
    json_lines,
    orchestrator_argv,
    stop_popen,
    tail_text,
)

__all__ = [
    "AK",
    "CALLBACK_KEY",
    "PROJECT",
    "RESULTS",
    "ROOT",
    "SK",
    "DaemonProcess",
    "Emulator",
    "Target",
    "commit",
    "daemon",
    "emulator",
    "emulator_process",
    "fmt",
    "free_port",
    "machine",
    "percentile",
    "record",
    "room_ids",
    "scaled_limits",
    "toml_dumps",
]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
# The emulator's own credentials: they unlock nothing but a loopback process.
AK = "BENCHAK0000000000001"
SK = "bench-sk-0000000000000000000000000000000"
PROJECT = "0" * 24 + "bench000"
CALLBACK_KEY = "bench-callback-key-000000000000"

_HEADER = """# Benchmark results

Rows are appended by `python -m bench <name> [--quick]`; never edit old rows, add new ones.

| column | meaning |
|---|---|
| date | UTC time the bench finished |
| bench | bench name (`quick` = smoke run with reduced counts; not comparable to full runs) |
| machine | logical cores / RAM GiB / CPU model, of the machine that ran it |
| commit | `git rev-parse --short HEAD`; `+wip` = orchestrator/ or bench/ had uncommitted changes |
| figures | what was measured (units in the names: `_s` seconds, `_ms` milliseconds, `_mb` MiB) |
| targets | each issue target: ✅ met / ❌ missed, with the measured value |
| notes | conditions (time compression, limits) and what limits a missed target |

| date | bench | machine | commit | figures | targets | notes |
|---|---|---|---|---|---|---|
"""


# ----------------------------------------------------------------------------- facts


def machine() -> str:
    """``<cores>c/<RAM>GiB/<cpu model>`` of this machine."""
    cores = os.cpu_count() or 0
    ram = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024 / 1024
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{cores}c/{ram:.0f}GiB/{model}"


def commit() -> str:
    """Short HEAD, ``+wip`` when the measured code has uncommitted changes."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    # RESULTS.md is what the benches write: its own rows must not mark the next one "+wip"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "orchestrator", "bench",
                ":(exclude)bench/RESULTS.md")  # fmt: skip
    return head + ("+wip" if dirty else "")


# ----------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


@dataclass(frozen=True, slots=True)
class Target:
    """One issue target: ``value <op> limit`` (op is ``<=`` or ``>=``)."""

    name: str
    value: float
    op: str
    limit: float

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def __str__(self) -> str:
        mark = "✅" if self.met else "❌"
        return f"{mark} {self.name} {fmt(self.value)} {self.op} {fmt(self.limit)}"


def record(
    bench: str,
    figures: Mapping[str, object],
    targets: Sequence[Target] = (),
    *,
    quick: bool,
    notes: str = "",
) -> None:
    """Print the figures and append one row to RESULTS.md (header created on first use)."""
    name = bench + (" (quick)" if quick else "")
    print(f"\n== {name}")
    for key, value in figures.items():
        print(f"  {key:<34} {fmt(value)}")
    for target in targets:
        print(f"  target {target}")
    if notes:
        print(f"  notes: {notes}")
    cell = "; ".join(f"{k}={fmt(v)}" for k, v in figures.items())
    tcell = "; ".join(str(t) for t in targets) or "—"
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if "load avg" not in notes:  # other engineers' tests share the 2 cores: say how busy they were
        notes = f"load avg {load} (1/5/15 min) at end; {notes}"
    notes = notes.replace("|", "/")
    row = f"| {date} | {name} | {machine()} | {commit()} | {cell} | {tcell} | {notes} |\n"
    if os.environ.get("BENCH_NO_RECORD"):  # profiling runs: print only
        return
    if not RESULTS.exists():
        RESULTS.write_text(_HEADER, encoding="utf-8")
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(row.replace("\n", " ").rstrip() + "\n")


# ----------------------------------------------------------------------------- emulator


def scaled_limits(factor: float) -> dict[str, float]:
    """The emulator's documented rate limits multiplied by ``factor`` (0 = unlimited)."""
    if factor <= 0:
        return {}
    return {k: v * factor for k, v in DEFAULT_RATE_LIMITS.items()}


@dataclass(slots=True)
class Emulator:
    """An in-process emulator served on a loopback socket."""

    service: EmulatorService
    base_url: str

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30.0)


@contextlib.asynccontextmanager
async def emulator(
    rooms: Iterable[str] = (),
    *,
    seed: int = 1,
    port: int = 0,
    rate_limits: Mapping[str, float] | None = None,
    **kw: Any,
) -> AsyncIterator[Emulator]:
    """Serve an :class:`EmulatorService` (rooms pre-created) until the block exits.

    In-process so a bench can hook ``service.rtmp_listeners`` and read exact timestamps;
    ``rate_limits=None`` keeps the documented limits, ``{}`` removes them.
    """
    service = EmulatorService(PROJECT, {AK: SK}, seed=seed, rate_limits=rate_limits, **kw)
    for room_id in rooms:
        service.add_room(
            room_id,
            {"room_name": room_id, "output_urls": [f"rtmp://127.0.0.1:1935/live/{room_id}"]},
        )
    async with serve(create_app(service), port=port, graceful_timeout_s=2.0) as served:
        yield Emulator(service, served.base_url)


# ----------------------------------------------------------------------------- daemon


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def toml_dumps(config: Mapping[str, Any]) -> str:
    """Enough TOML for our config: scalar tables plus ``[[rooms]]`` (arrays of tables)."""
    lines: list[str] = []
    for key, value in config.items():
        if not isinstance(value, Mapping | list):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in config.items():
        if isinstance(value, Mapping):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def room_ids(n: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(n)]


@dataclass
class DaemonProcess:
    """``liveorch run --config F`` in a child process against an emulator, JSON logs to a file.

    ``recovery`` overrides ``[recovery]``; ``extra`` adds/overrides whole sections.
    """

    emulator_url: str
    rooms: Sequence[str]
    recovery: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    log_level: str = "info"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="liveorch-bench-")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _child: Proc | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def callback_url(self) -> str:
        return f"{self.base_url}/callbacks/metastudio"

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.out"  # Proc's name for the one log of "daemon"

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "cloud": {
                "base_url": self.emulator_url,
                "project_id": PROJECT,
                "ak": AK,
                "sk": SK,
            },
            "store": {"url": f"sqlite+aiosqlite:///{self.workdir / 'liveorch.db'}"},
            "http": {
                "host": "127.0.0.1",
                "port": self.port,
                "public_callback_url": self.callback_url,
            },
            "callbacks": {"auth_type": "MSS_A_HEAD", "key": CALLBACK_KEY},
            "recovery": dict(self.recovery),
            "log": {"level": self.log_level, "format": "json"},
        }
        for section, values in self.extra.items():
            cfg.setdefault(section, {}).update(values)
        cfg["rooms"] = [
            {
                "id": rid,
                "output_url": f"rtmp://127.0.0.1:1935/live/{rid}",
                "stream_key": f"key-{rid}",
                "windows": [{"always": True}],
            }
            for rid in self.rooms
        ]
        return cfg

    def write_config(self) -> Path:
        path = self.workdir / "liveorch.toml"
        path.touch(mode=0o600)  # it holds the emulator's AK/SK: never world-readable
        path.chmod(0o600)
        path.write_text(toml_dumps(self.config()), encoding="utf-8")
        return path

    def start(self) -> None:
        config = self.write_config()
        cmd = orchestrator_argv("run", "--config", str(config))
        profile = os.environ.get("BENCH_PROFILE_DAEMON")  # a path: pyinstrument text report
        if profile:
            cmd[1:2] = ["-m", "pyinstrument", "-o", profile, "-m"]
        # the child-process plumbing of the tests (tests/support/procs.py): one log, own session
        self._child = Proc(
            "daemon",
            cmd,
            log_dir=self.workdir,
            cwd=self.workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr_to_stdout=True,
        )
        self.proc = self._child.popen

    async def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Seconds until ``/readyz`` answers 200; raises if the process died or timed out."""
        proc = self.proc
        assert proc is not None
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2.0) as http:

            async def ready() -> bool | None:
                if proc.poll() is not None:
                    raise RuntimeError(f"daemon exited with {proc.returncode}: {self.tail()}")
                return (
                    True if (await http.get(self.base_url + "/readyz")).status_code == 200 else None
                )

            await eventually(ready, what="daemon /readyz 200", timeout=timeout_s, diag=self.tail)
        return time.monotonic() - started

    def spy(self, seconds: float, label: str) -> subprocess.Popen[bytes] | None:
        """With ``BENCH_PYSPY=<py-spy binary>``: sample the daemon for ``seconds`` into
        ``<workdir>/pyspy-<label>.txt`` (collapsed stacks); profiling runs only."""
        exe = os.environ.get("BENCH_PYSPY")
        if not exe or self.proc is None:
            return None
        out = self.workdir / f"pyspy-{label}.txt"
        return subprocess.Popen(
            [exe, "record", "--pid", str(self.proc.pid), "--duration", str(int(seconds)),
             "--format", "raw", "--output", str(out), "--nonblocking", "--rate", "200"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def tail(self, n: int = 15) -> str:
        return tail_text(self.log_path, n)

    def logs(self) -> Iterator[dict[str, Any]]:
        """The daemon's JSON log lines (non-JSON lines skipped)."""
        yield from json_lines(self.log_path)

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def peak_rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return math.nan

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (jobs keep streaming), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        code = await stop_popen(self.proc, timeout_s)
        if self._child is not None:
            self._child.kill()  # reaped already: closes its log file
        return code

    def cleanup(self, keep: bool = False) -> None:
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def daemon(
    emulator_url: str, rooms: Sequence[str], *, autostart: bool = True, **kw: Any
) -> AsyncIterator[DaemonProcess]:
    """Yield a daemon (started unless ``autostart`` is false: the caller calls ``start()``
    after preparing the emulator); stop it (SIGTERM) on exit; keep its files on failure."""
    proc = DaemonProcess(emulator_url, rooms, **kw)
    if autostart:
        proc.start()
    ok = False
    try:
        yield proc
        ok = True
    finally:
        await proc.stop()
        proc.cleanup(keep=not ok or bool(os.environ.get("BENCH_KEEP")))
        if not ok or os.environ.get("BENCH_KEEP"):
            print(f"daemon files kept in {proc.workdir}", file=sys.stderr)


@contextlib.asynccontextmanager
async def emulator_process(
    rooms: int = 1, *, rate_scale: float = 1.0, time_scale: float = 1.0
) -> AsyncIterator[str]:
    """The emulator in a child process (see :mod:`bench._emulator_proc`); yields its base URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench._emulator_proc",
        "--rooms",
        str(rooms),
        "--rate-scale",
        str(rate_scale),
        "--time-scale",
        str(time_scale),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("emulator process exited before listening")
        yield str(json.loads(line)["base_url"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# Durations of the recovery ladder that a time-compressed bench divides by its scale.
_SCALED_RECOVERY = (
    "grace_s", "refresh_backoff_s", "refresh_confirm_s", "restart_backoff_s", "api_retry_s",
    "restart_backoff_max_s", "quarantine_window_s", "start_confirm_s", "stop_confirm_s",
    "stale_after_s", "stall_after_s", "poll_interval_s", "unrecovered_alert_s",
    "stable_after_s", "poll_min_interval_s", "ingest_wait_s",
)  # fmt: skip


def scaled_recovery(scale: float) -> dict[str, float]:
    """liveorch's documented recovery defaults (settings.RecoverySettings) divided by ``scale``,
    for benches that run the emulator ``scale`` times faster than real time."""
    from orchestrator.settings import RecoverySettings

    defaults = RecoverySettings()
    out = {name: float(getattr(defaults, name)) / scale for name in _SCALED_RECOVERY}
    out["poll_queries_per_s"] = defaults.poll_queries_per_s * scale  # a rate: faster, not shorter
    return out
