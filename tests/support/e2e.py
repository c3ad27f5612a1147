"""Real-process harness for the end-to-end tests: the emulator and the daemon as child processes.

Why child processes and not the in-process ``Daemon``: these tests are about the daemon as a
service — signals, exit codes, a SIGKILL in the middle of a job, ``$NOTIFY_SOCKET``, the config
file re-read on SIGHUP, the broker seeing a real client go away. Only separate processes show
those honestly.

Rules kept here so every test keeps them:

* each process is started with ``sys.executable -m orchestrator ...``, its stdout/stderr go to
  files under the test's ``tmp_path`` (quoted in every failure message), and it is killed and
  reaped in teardown whatever happened (:class:`Procs`, tests/support/procs.py);
* nothing waits a fixed time: :func:`eventually` polls an HTTP endpoint (or a log file) until a
  condition holds, with a deadline, and fails with the processes' log tails;
* every MQTT topic lives under a per-test prefix, and retained topics are cleared afterwards
  (the system mosquitto persists them).

Imported as ``tests.support.e2e`` (by tests/e2e and tests/monitoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from tests.support.mqtt import MqttRecorder, payload_json, recording_as
from tests.support.ports import free_port
from tests.support.procs import DEADLINE, Proc, Procs, eventually

RUNNING = frozenset({"WAITING", "PROCESSING"})
RTMP_URL = "rtmp://push.example.com/live"
#: emulated time runs this much faster: WAITING/CONNECTING take 0.1 s, reconnect tries 0.5 s
TIME_SCALE = 10.0


# --- the emulator -------------------------------------------------------------------------


class Emulator:
    """``liveorch emulate`` in a child process plus a client of its admin API."""

    def __init__(self, proc: Proc, info: Mapping[str, Any]) -> None:
        self.proc = proc
        self.base_url = str(info["base_url"])
        self.project_id = str(info["project_id"])
        self.ak = str(info["ak"])
        self.sk = str(info["sk"])
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=5.0)

    async def jobs(self) -> list[dict[str, Any]]:
        r = await self.http.get("/_emulator/jobs")
        r.raise_for_status()
        jobs: list[dict[str, Any]] = r.json()["jobs"]
        return jobs

    async def job(self, job_id: str) -> dict[str, Any]:
        for j in await self.jobs():
            if j["job_id"] == job_id:
                return j
        raise AssertionError(f"the emulator has no job {job_id}")

    async def room_jobs(self, room_id: str) -> list[dict[str, Any]]:
        return [j for j in await self.jobs() if j["room_id"] == room_id]

    async def running(self, room_id: str) -> list[dict[str, Any]]:
        return [j for j in await self.room_jobs(room_id) if j["state"] in RUNNING]

    async def stats(self) -> dict[str, Any]:
        r = await self.http.get("/_emulator/stats")
        r.raise_for_status()
        stats: dict[str, Any] = r.json()
        return stats

    async def commands(self, job_id: str, command: str) -> list[dict[str, Any]]:
        return [
            c
            for c in (await self.stats())["commands"]
            if c["job_id"] == job_id and c["command"] == command
        ]

    async def drop(self, job_id: str, hold_s: float) -> None:
        r = await self.http.post(
            f"/_emulator/jobs/{job_id}/rtmp", json={"state": "DISCONNECTED", "hold_s": hold_s}
        )
        r.raise_for_status()

    async def fail(self, job_id: str) -> None:
        r = await self.http.post(f"/_emulator/jobs/{job_id}/fail")
        r.raise_for_status()

    async def aclose(self) -> None:
        await self.http.aclose()


async def start_emulator(procs: Procs, rooms: Sequence[str]) -> Emulator:
    args = ["emulate", "--port", "0", "--time-scale", str(TIME_SCALE)]
    args += ["--project-id", uuid.uuid4().hex, "--ak", "E2E" + uuid.uuid4().hex[:16].upper()]
    args += ["--sk", uuid.uuid4().hex + uuid.uuid4().hex[:8]]
    for room in rooms:
        args += ["--room", room]
    proc = procs.start("emulator", args)

    async def announced() -> dict[str, Any] | None:
        if proc.returncode is not None:
            raise AssertionError(f"the emulator exited with {proc.returncode}\n{proc.tail()}")
        for line in proc.text().splitlines():
            if line.startswith("{") and '"base_url"' in line:
                info: dict[str, Any] = json.loads(line)
                return info
        return None

    info = await eventually(announced, what="the emulator's JSON line", diag=procs.diag)
    emu = Emulator(proc, info)
    await eventually(emu.stats, what="the emulator's admin API", diag=procs.diag)
    return emu


# --- the daemon ---------------------------------------------------------------------------


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for the shapes our config uses (tables, arrays of tables, inline
    tables inside arrays). JSON string/number/bool literals are valid TOML literals."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float | str):
            return json.dumps(v)
        if isinstance(v, datetime):
            return json.dumps(v.isoformat())
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)

    lines: list[str] = []
    top = {k: v for k, v in data.items() if not isinstance(v, Mapping) and not is_table_array(v)}
    lines += [f"{k} = {value(v)}" for k, v in top.items()]
    for k, v in data.items():
        if isinstance(v, Mapping):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        elif is_table_array(v):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{kk} = {value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


def room(room_id: str, windows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {
        "id": room_id,
        "name": f"e2e {room_id}",
        "output_url": RTMP_URL,
        "stream_key": f"e2e-key-{room_id}-{uuid.uuid4().hex[:8]}",
        "windows": list(windows),
    }


ALWAYS: Mapping[str, Any] = {"always": True}


def daemon_config(
    emu: Emulator,
    *,
    http_port: int,
    db_path: Path,
    rooms: Sequence[Mapping[str, Any]],
    mqtt_prefix: str | None = None,
    stop_jobs: bool = False,
) -> dict[str, Any]:
    """A config with a short recovery ladder: every repair the tests force takes seconds."""
    cfg: dict[str, Any] = {
        "cloud": {
            "base_url": emu.base_url,
            "project_id": emu.project_id,
            "ak": emu.ak,
            "sk": emu.sk,
            "read_timeout_s": 5.0,
        },
        "store": {"url": f"sqlite+aiosqlite:///{db_path}"},
        "mqtt": {"enabled": False},
        "http": {
            "host": "127.0.0.1",
            "port": http_port,
            "public_callback_url": f"http://127.0.0.1:{http_port}/callbacks/metastudio",
        },
        "callbacks": {"auth_type": "MSS_A_HEAD", "key": uuid.uuid4().hex},
        "recovery": {
            "grace_s": 1.0,
            "widen_exit_minutes": 10,
            "refresh_backoff_s": 0.5,
            "refresh_confirm_s": 3.0,
            "restart_backoff_s": 0.5,
            "restart_backoff_max_s": 2.0,
            "start_confirm_s": 15.0,
            "stop_confirm_s": 10.0,
            "stale_after_s": 10.0,
            "poll_interval_s": 2.0,
        },
        "schedule": {"misfire_grace_s": 30.0, "min_remaining_s": 5.0},
        "shutdown": {"stop_jobs": stop_jobs, "timeout_s": 10.0},
        "probe": {"enabled": False},
        "log": {"level": "info", "format": "json"},
        "rooms": [dict(r) for r in rooms],
    }
    if mqtt_prefix is not None:
        cfg["mqtt"] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": 1883,
            "client_id": f"{mqtt_prefix}-daemon",
            "prefix": mqtt_prefix,
            "reconnect_max_s": 2.0,
            "callbacks_topic": f"{mqtt_prefix}/callbacks/in",
            "reply_topic_prefixes": [f"{mqtt_prefix}-replies"],
        }
    return cfg


class Daemon:
    """``liveorch run`` in a child process plus a client of its ops API."""

    def __init__(self, proc: Proc, port: int, diag: Callable[[], str]) -> None:
        self.proc = proc
        self.port = port
        self.diag = diag
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0)

    async def room(self, room_id: str) -> dict[str, Any]:
        r = await self.http.get(f"/rooms/{room_id}")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    async def wait_ready(self, timeout: float = DEADLINE) -> None:
        async def ready() -> bool | None:
            if self.proc.returncode is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}")
            r = await self.http.get("/readyz")
            return True if r.status_code == 200 else None

        await eventually(ready, what="/readyz 200", timeout=timeout, diag=self.diag)

    async def wait_room(
        self,
        room_id: str,
        state: str,
        *,
        job_id: str | None = None,
        not_job: str | None = None,
        timeout: float = DEADLINE,
    ) -> dict[str, Any]:
        """Poll ``/rooms/{id}`` until the room is in ``state`` (with/without a given job)."""

        async def probe() -> dict[str, Any] | None:
            if self.proc.returncode is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}")
            r = await self.http.get(f"/rooms/{room_id}")
            if r.status_code == 404:  # not (yet) configured, e.g. before a reload
                return None
            r.raise_for_status()
            snap: dict[str, Any] = r.json()
            if snap["state"] != state:
                return None
            if job_id is not None and snap["job_id"] != job_id:
                return None
            if not_job is not None and snap["job_id"] in (None, not_job):
                return None
            return snap

        return await eventually(
            probe, what=f"room {room_id} {state}", timeout=timeout, diag=self.diag
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def write_config(path: Path, cfg: Mapping[str, Any]) -> Path:
    path.write_text(to_toml(cfg))
    return path


def start_daemon(
    procs: Procs,
    config_path: Path,
    port: int,
    *,
    name: str = "daemon",
    env: Mapping[str, str] | None = None,
) -> Daemon:
    proc = procs.start(name, ["run", "--config", str(config_path)], env=env)
    return Daemon(proc, port, procs.diag)


# --- invariants sampled while something happens ------------------------------------------


class JobSampler:
    """Reads ``/_emulator/jobs`` back to back and records every moment a room had more than
    one WAITING/PROCESSING job: the "two jobs pushing to one stream key" failure."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.samples = 0
        self.violations: list[dict[str, list[str]]] = []
        self.job_ids: dict[str, set[str]] = {}

    async def run(self) -> None:
        while True:
            with contextlib.suppress(httpx.TransportError):
                jobs = await self.emu.jobs()
                self.samples += 1
                running = Counter(j["room_id"] for j in jobs if j["state"] in RUNNING)
                for j in jobs:
                    self.job_ids.setdefault(j["room_id"], set()).add(j["job_id"])
                bad = {
                    r: [j["job_id"] for j in jobs if j["room_id"] == r and j["state"] in RUNNING]
                    for r, n in running.items()
                    if n > 1
                }
                if bad:
                    self.violations.append(bad)
            await asyncio.sleep(0.05)  # sampling period


@contextlib.asynccontextmanager
async def sampling(emu: Emulator) -> AsyncIterator[JobSampler]:
    sampler = JobSampler(emu)
    task = asyncio.create_task(sampler.run(), name="job-sampler")
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- MQTT ---------------------------------------------------------------------------------


class MqttWatch(MqttRecorder):
    """The recorder (tests/support/mqtt.py) on ``{prefix}/#``, with the daemon's room state and
    v5 commands. Its waits return the latest match and default to :data:`DEADLINE`."""

    async def wait_for(
        self,
        pred: Callable[[aiomqtt.Message], bool],
        *,
        what: str = "",
        timeout: float | None = None,
        last: bool = True,
    ) -> aiomqtt.Message:
        return await super().wait_for(pred, what=what, timeout=timeout, last=last)

    async def state(
        self, room_id: str, pred: Callable[[dict[str, Any]], bool], *, what: str
    ) -> dict[str, Any]:
        topic = f"{self.prefix}/rooms/{room_id}/state"

        def match(m: aiomqtt.Message) -> bool:
            return m.topic.value == topic and bool(m.payload) and pred(_json(m.payload))

        return _json((await self.wait_for(match, what=what)).payload)

    async def command(
        self, room_id: str, body: Mapping[str, Any], *, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        """Publish a v5 command with a response topic and correlation data; return the reply
        (after checking the correlation data came back unchanged)."""
        reply_topic = f"{self.prefix}-replies/{uuid.uuid4().hex[:8]}"
        correlation = uuid.uuid4().bytes
        await self.send(
            f"{self.prefix}/rooms/{room_id}/command",
            dict(body),
            response_topic=reply_topic,
            correlation=correlation,
        )
        m = await self.wait_for(
            lambda m: m.topic.value == reply_topic, what=f"reply to {body}", timeout=timeout
        )
        got = getattr(m.properties, "CorrelationData", None) if m.properties else None
        assert got == correlation, f"correlation data {got!r} != {correlation!r}"
        return _json(m.payload)


_json = payload_json


def mqtt_watch(prefix: str) -> contextlib.AbstractAsyncContextManager[MqttWatch]:
    """Retained topics are left for the test to clear (:func:`clear_retained`) once the daemon
    that may republish them has stopped."""
    return recording_as(MqttWatch, prefix, timeout=DEADLINE, clear=False)


# --- sd_notify ----------------------------------------------------------------------------


class NotifySocket:
    """A fake systemd: an abstract AF_UNIX datagram socket that records each notification."""

    def __init__(self) -> None:
        self.name = f"liveorch-e2e-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name.encode())
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._cond = asyncio.Condition()

    @property
    def address(self) -> str:
        return "@" + self.name

    async def pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            async with self._cond:
                self.messages.append((loop.time(), fields))
                self._cond.notify_all()

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, m) for t, m in self.messages if key in m]

    async def wait_count(self, key: str, n: int, *, timeout: float = DEADLINE) -> None:
        try:
            async with asyncio.timeout(timeout), self._cond:
                await self._cond.wait_for(lambda: len(self.with_key(key)) >= n)
        except TimeoutError:
            raise AssertionError(
                f"fewer than {n} {key} notifications; got {[m for _, m in self.messages]}"
            ) from None

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def notify_socket() -> AsyncIterator[NotifySocket]:
    ns = NotifySocket()
    task = asyncio.create_task(ns.pump(), name="notify-pump")
    try:
        yield ns
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        ns.close()


# --- one test's processes -------------------------------------------------------------------


class Stack:
    """The processes and clients of one test; :meth:`aclose` (fixture teardown) kills them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs = Procs(tmp_path)
        self.emu: Emulator | None = None
        self.daemons: list[Daemon] = []
        self.db_path = tmp_path / "liveorch.db"
        self.config_path = tmp_path / "liveorch.toml"
        self.http_port = free_port()

    async def emulator(self, rooms: Sequence[str]) -> Emulator:
        self.emu = await start_emulator(self.procs, rooms)
        return self.emu

    def config(self, rooms: Sequence[Mapping[str, Any]], **kw: Any) -> dict[str, Any]:
        assert self.emu is not None, "start the emulator first"
        return daemon_config(
            self.emu, http_port=self.http_port, db_path=self.db_path, rooms=rooms, **kw
        )

    def write(self, cfg: Mapping[str, Any]) -> Path:
        return write_config(self.config_path, cfg)

    async def daemon(
        self, *, name: str = "daemon", env: Mapping[str, str] | None = None, ready: bool = True
    ) -> Daemon:
        d = start_daemon(self.procs, self.config_path, self.http_port, name=name, env=env)
        self.daemons.append(d)
        if ready:
            await d.wait_ready()
        return d

    def diag(self) -> str:
        return self.procs.diag()

    async def aclose(self) -> None:
        self.procs.kill_all()
        for d in self.daemons:
            await d.aclose()
        if self.emu is not None:
            await self.emu.aclose()


async def inject_outage(emu: Emulator, *, operation: str = "list", count: int = 100_000) -> None:
    """Every matching call answers 503 until ``count`` of them have failed."""
    r = await emu.http.post(
        "/_emulator/faults",
        json={"operation": operation, "status": 503, "error_code": "APIGW.0201", "count": count},
    )
    r.raise_for_status()


async def inject_ghost_start(emu: Emulator) -> None:
    """The next start creates its job but its answer never comes (the client times out)."""
    r = await emu.http.post("/_emulator/faults", json={"operation": "start", "ghost": True})
    r.raise_for_status()


# --- fixtures (re-exported by the conftest.py of tests/e2e and tests/monitoring) ------------


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Processes started through it are SIGKILLed and reaped at teardown, pass or fail."""
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix no other test (or earlier run) uses on the shared broker; it starts with
    the test's area (``e2e-``, ``mon-``) so a leftover retained topic says where it came from."""
    return f"{request.path.parent.name[:3]}-{uuid.uuid4().hex[:12]}"
