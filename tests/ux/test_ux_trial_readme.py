"""The README's "Try it against the emulator first" transcript, replayed as a new user would.

The commands are parsed out of the README block (marked ``trial-transcript``) and run as real
processes (``liveorch`` from this venv) from a temp dir holding ``my.toml``, a copy of the
example config. Only the ports move (to free ones, so the test runs next to others): the
emulator's ``8600`` in the commands, the daemon's ``8680`` through ``LIVEORCH_HTTP__PORT`` /
``LIVEORCH_URL``. What the README shows a background command printing must be what it prints;
``status`` must list the same rooms in the states their schedules call for, once the rooms
that are due on air are LIVE (waited for on ``/rooms``, with a timeout). No process may
print a traceback, and every one must stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from orchestrator.schedule.preview import schedule_for_room
from orchestrator.settings import load_settings
from tests.support.ports import free_port

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
WAIT_S = 90.0


@dataclass
class Step:
    command: str
    output: list[str] = field(default_factory=list)

    @property
    def background(self) -> bool:
        return self.command.endswith("&")


def transcript(text: str) -> list[Step]:
    """The ``$`` commands of the block after the ``trial-transcript`` marker, with the lines
    each is shown printing."""
    marker = text.index("<!-- trial-transcript")
    block = re.search(r"```console\n(.*?)```", text[marker:], re.S)
    assert block is not None, "no console block after the trial-transcript marker"
    steps: list[Step] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:].strip()))
        elif steps:
            steps[-1].output.append(line)
    return steps


def test_transcript_parser_reads_the_readme() -> None:
    steps = transcript(README.read_text())
    assert len(steps) <= 3, "the trial must take at most three commands"
    assert [s.command.split()[:2] for s in steps] == [
        ["liveorch", "emulate"],
        ["liveorch", "run"],
        ["liveorch", "status"],
    ]


def _due_on_air(config: Path) -> dict[str, str | None]:
    """Room id → the state its schedule calls for now; None near a window edge (either)."""
    settings = load_settings(config, env=False, check_target=False)
    now = datetime.now(UTC)
    out: dict[str, str | None] = {}
    for room in settings.rooms:
        sched = schedule_for_room(room, settings)
        here, soon = sched.active_at(now), sched.active_at(now + timedelta(minutes=5))
        before = sched.active_at(now - timedelta(minutes=5))
        if (here is None) != (soon is None) or (here is None) != (before is None):
            out[room.id] = None  # a window opens or closes within minutes: do not guess
        else:
            out[room.id] = "LIVE" if here is not None else "IDLE"
    return out


def _rows(lines: list[str]) -> dict[str, str]:
    """``status`` table rows → room id: state."""
    return {cols[0]: cols[1] for line in lines[1:] if len(cols := line.split()) >= 2}


async def _rooms_settled(url: str, want: dict[str, str | None]) -> dict[str, str]:
    """Poll ``/rooms`` until every room with a known target state is in it."""
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        while True:
            try:
                resp = await client.get("/rooms")
                rooms = {r["room_id"]: r["state"] for r in resp.json()["rooms"]}
            except (httpx.HTTPError, ValueError, KeyError):
                rooms = {}
            if rooms.keys() == want.keys() and all(
                w is None or rooms[r] == w for r, w in want.items()
            ):
                return rooms
            await asyncio.sleep(0.25)  # another process: nothing to wait on but its answers


async def _read_lines(stream: asyncio.StreamReader, n: int) -> list[str]:
    lines = []
    for _ in range(n):
        lines.append((await stream.readline()).decode().rstrip("\n"))
    return lines


async def test_readme_trial_reaches_live_rooms(tmp_path: Path) -> None:
    assert shutil.which("liveorch", path=str(Path(sys.executable).parent)), "install -e first"
    steps = transcript(README.read_text())
    shutil.copy(ROOT / "config" / "liveorch.example.toml", tmp_path / "my.toml")
    emu_port, ops_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEORCH_", "CLOUD_SDK"))}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LIVEORCH_HTTP__PORT"] = str(ops_port)
    env["LIVEORCH_URL"] = f"http://127.0.0.1:{ops_port}"
    want = _due_on_air(tmp_path / "my.toml")

    def moved(text: str) -> str:
        return text.replace("127.0.0.1:8600", f"127.0.0.1:{emu_port}")

    background: list[asyncio.subprocess.Process] = []
    errors: list[bytes] = []
    try:
        for step in steps:
            command = moved(step.command.rstrip("&").strip())
            if command.startswith("liveorch emulate"):
                command = command.replace("liveorch emulate", f"liveorch emulate --port {emu_port}")
            if step.background:
                proc = await asyncio.create_subprocess_exec(
                    "bash",
                    "-c",
                    "exec " + command,
                    cwd=tmp_path,
                    env=env,
                    stderr=asyncio.subprocess.PIPE,
                )
                background.append(proc)
                assert proc.stderr is not None
                shown = await asyncio.wait_for(_read_lines(proc.stderr, len(step.output)), WAIT_S)
                assert shown == [moved(line) for line in step.output], command
                continue
            # a person reads status once the rooms had a moment: here, once they settled
            await asyncio.wait_for(_rooms_settled(env["LIVEORCH_URL"], want), WAIT_S)
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(command),
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
            errors.append(err)
            assert proc.returncode == 0, err.decode()
            lines = out.decode().splitlines()
            assert lines[0].split() == step.output[0].split()  # the header (widths vary)
            shown, got = _rows(step.output), _rows(lines)
            assert got.keys() == shown.keys()
            assert shown["room-b"] == got["room-b"] == "LIVE"
            for room, state in want.items():
                if state is not None:
                    assert got[room] == state, (room, lines)
    finally:
        for proc in reversed(background):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 30)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            assert proc.stderr is not None
            errors.append(await proc.stderr.read())
    assert [p.returncode for p in background] == [0, 0]
    logs = [(tmp_path / name).read_text() for name in ("emulator.log", "daemon.log")]
    for text in [e.decode() for e in errors] + logs:
        assert "Traceback" not in text
        assert '"level": "error"' not in text
    assert (tmp_path / "liveorch-emulator.db").exists()  # the trial store, not the config's
    assert not (tmp_path / "var").exists()
