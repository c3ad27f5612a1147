"""Harness for several real daemons sharing one PostgreSQL, plus the emulator, as child processes.

Why real processes: SIGKILL, SIGSTOP/SIGCONT and a PostgreSQL restart are about processes and
connections; only separate processes show them honestly. Each test gets its own PostgreSQL
schema (``store.pg_schema``), dropped afterwards. Nothing waits a fixed time: :func:`eventually`
polls with a deadline (processes and polling: tests/support/procs.py). A
:class:`DuplicateWatch` samples the emulator's job list all along.

Imported as ``tests.support.multi``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.support.pgcluster import PG_DSN, sqlalchemy_url
from tests.support.ports import free_port
from tests.support.procs import DEADLINE, REPO, Proc, eventually, orchestrator_argv

RUNNING = frozenset({"WAITING", "PROCESSING"})
TTL_S = 3.0
POLL_S = 1.0


class Emulator:
    def __init__(self, proc: Proc, info: Mapping[str, Any]) -> None:
        self.proc = proc
        self.info = dict(info)
        self.http = httpx.AsyncClient(base_url=str(info["base_url"]), timeout=5.0)

    async def jobs(self) -> list[dict[str, Any]]:
        r = await self.http.get("/_emulator/jobs")
        r.raise_for_status()
        jobs: list[dict[str, Any]] = r.json()["jobs"]
        return jobs

    async def running(self) -> dict[str, list[str]]:
        """room → job ids in WAITING/PROCESSING."""
        out: dict[str, list[str]] = {}
        for j in await self.jobs():
            if j["state"] in RUNNING:
                out.setdefault(j["room_id"], []).append(j["job_id"])
        return out

    async def starts(self) -> int:
        r = await self.http.get("/_emulator/stats")
        r.raise_for_status()
        return int(r.json()["starts"])


class DuplicateWatch:
    """Samples the emulator's jobs continuously; counts samples with two running jobs per room."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self.samples = 0
        self.duplicates: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(httpx.TransportError):
                for room, ids in (await self._emu.running()).items():
                    if len(ids) > 1:
                        self.duplicates[room] += 1
                self.samples += 1
            await asyncio.sleep(0.02)  # sampling period

    def __enter__(self) -> DuplicateWatch:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dup-watch")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


class Cluster:
    """The emulator and N daemons of one test, with a private PostgreSQL schema."""

    def __init__(
        self, log_dir: Path, rooms: Sequence[str], *, dsn: str = PG_DSN, poll_s: float = POLL_S
    ) -> None:
        self.poll_s = poll_s  # [recovery] poll_interval_s of every daemon
        self.dsn = dsn  # a private server's for tests that restart it (support/pgcluster)
        self.log_dir = log_dir
        self.rooms = list(rooms)
        self.schema = "multi_" + uuid.uuid4().hex[:12]
        self.procs: list[Proc] = []
        self.emu: Emulator | None = None
        self.daemons: dict[str, tuple[Proc, int]] = {}
        self.http = httpx.AsyncClient(timeout=3.0)
        # one key for the fleet: a callback signed for one instance verifies at any other
        self.callback_key = uuid.uuid4().hex
        self.poll_s = POLL_S
        self.stale_after_s = 10.0
        self.recovery_extra = ""  # more [recovery] lines (e.g. to make reads rare)

    def diag(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    async def start_emulator(self, *, journal: bool = False) -> Emulator:
        """``journal``: the emulator of ``_journal_emulator.py`` (every call and 429 timestamped,
        on a real-time clock so its rate limits are the documented ones per real second)."""
        scale = "1" if journal else "10"
        args = ["emulate", "--port", "0", "--time-scale", scale, "--seed", "3"]
        for r in self.rooms:
            args += ["--room", r]
        if journal:  # a script run by path, next to the multi tests
            argv = [
                sys.executable,
                str(REPO / "tests" / "multi" / "_journal_emulator.py"),
                *args[1:],
            ]
        else:
            argv = orchestrator_argv(*args)
        proc = Proc("emulator", argv, log_dir=self.log_dir)
        self.procs.append(proc)

        async def announced() -> dict[str, Any] | None:
            for line in proc.text().splitlines():
                if line.startswith("{") and '"base_url"' in line:
                    info: dict[str, Any] = json.loads(line)
                    return info
            return None

        info = await eventually(announced, what="emulator announces itself", diag=self.diag)
        self.emu = Emulator(proc, info)
        return self.emu

    def config(self, instance: str, port: int) -> str:
        assert self.emu is not None
        info = self.emu.info
        rooms = "".join(
            f'\n[[rooms]]\nid = "{r}"\noutput_url = "rtmp://push.example.com/live"\n'
            f'stream_key = "k-{r}-{uuid.uuid4().hex[:6]}"\nwindows = [{{ always = true }}]\n'
            for r in self.rooms
        )
        return f"""
[cloud]
base_url = "{info["base_url"]}"
project_id = "{info["project_id"]}"
ak = "{info["ak"]}"
sk = "{info["sk"]}"
read_timeout_s = 2.0
[store]
url = "{sqlalchemy_url(self.dsn)}"
pg_schema = "{self.schema}"
instance_id = "{instance}"
lease_ttl_s = {TTL_S}
[http]
port = {port}
public_callback_url = "http://127.0.0.1:{port}/callbacks/metastudio"
[callbacks]
auth_type = "MSS_A_HEAD"
key = "{self.callback_key}"
[recovery]
poll_interval_s = {self.poll_s}
grace_s = 1.0
stale_after_s = {self.stale_after_s}{self.recovery_extra}
[schedule]
min_remaining_s = 5.0
[probe]
enabled = false
[log]
level = "info"
format = "json"
{rooms}"""

    def start_daemon(self, instance: str) -> Proc:
        port = free_port()
        path = self.log_dir / f"{instance}.toml"
        path.write_text(self.config(instance, port))
        proc = Proc(instance, orchestrator_argv("run", "--config", str(path)), log_dir=self.log_dir)
        self.procs.append(proc)
        self.daemons[instance] = (proc, port)
        return proc

    async def rooms_of(self, instance: str) -> dict[str, dict[str, Any]]:
        """The rooms ``instance`` works on now (its /rooms), room → state JSON."""
        proc, port = self.daemons[instance]
        if proc.popen.poll() is not None:
            raise AssertionError(f"{instance} exited with {proc.popen.poll()}\n{self.diag()}")
        r = await self.http.get(f"http://127.0.0.1:{port}/rooms")
        r.raise_for_status()
        return {s["room_id"]: s for s in r.json()["rooms"]}

    async def layout(self, instances: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        return {i: await self.rooms_of(i) for i in instances}

    async def wait_split(
        self,
        instances: Sequence[str],
        *,
        per_instance: int | None = None,
        timeout: float = DEADLINE,
    ) -> dict[str, dict[str, str]]:
        """Until every room is LIVE at exactly one of ``instances`` (and, if given, each has
        ``per_instance`` rooms). Returns instance → {room: job_id}."""

        async def probe() -> dict[str, dict[str, str]] | None:
            lay = await self.layout(instances)
            owners = Counter(r for rooms in lay.values() for r in rooms)
            if sorted(owners) != sorted(self.rooms) or any(n != 1 for n in owners.values()):
                return None
            if per_instance is not None and any(len(v) != per_instance for v in lay.values()):
                return None
            if any(s["state"] != "LIVE" for rooms in lay.values() for s in rooms.values()):
                return None
            return {i: {r: str(s["job_id"]) for r, s in rooms.items()} for i, rooms in lay.items()}

        return await eventually(
            probe, what=f"rooms split LIVE over {list(instances)}", timeout=timeout, diag=self.diag
        )

    async def post_callback(
        self, instance: str, *, room: str, job: str, state: str, at: float | None = None
    ) -> httpx.Response:
        """An RTMP state callback for ``job``, signed as MetaStudio signs it (MSS_A_HEAD,
        ``hwTime`` = ``at`` or now), POSTed to ``instance``'s callback URL."""
        from orchestrator.emulator.callbacks import CallbackEvent, build_request

        port = self.daemons[instance][1]
        event = CallbackEvent(
            url=f"http://127.0.0.1:{port}/callbacks/metastudio",
            auth_type="MSS_A_HEAD",
            key=self.callback_key,
            event_type="RTMP_STREAM_STATE_CHANGE",
            message={"room_id": room, "job_id": job, "output_url": "rtmp://push.example.com/live",
                     "stream_key": "k", "state": state},
        )  # fmt: skip
        url, headers, body = build_request(event, now=time.time() if at is None else at)
        return await self.http.post(url, headers=headers, content=body)

    async def leases(self) -> dict[str, tuple[str, int]]:
        """room → (owner, fence) straight from this test's lease table."""
        conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            rows = await conn.fetch("SELECT room_id, owner, fence FROM leases")
        finally:
            await conn.close()
        return {r["room_id"]: (r["owner"], int(r["fence"])) for r in rows}

    async def aclose(self) -> None:
        for p in self.procs:
            p.kill()
        await self.http.aclose()
        if self.emu is not None:
            await self.emu.http.aclose()
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()
