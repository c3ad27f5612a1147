"""`liveorch demo`: the emulator and the daemon in one process, a forced RTMP drop, its repair.

Nothing outside this process is needed: the MetaStudio emulator serves on a loopback port, the
daemon talks to it over real HTTP with AK/SK signatures, callbacks come back over HTTP with
MSS_A_HEAD auth, and the store is a SQLite file in a temporary directory. Two rooms:

* ``demo-247``: a 24/7 window; once it is LIVE the demo holds its RTMP link down, and the daemon
  repairs it (grace → REFRESH_OUTPUT_URL → LIVE).
* ``demo-window``: a one-off window that opens a short while after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx

from orchestrator import logging as olog
from orchestrator.rooms.model import RoomState
from orchestrator.rooms.supervisor import Transition
from orchestrator.settings import Settings

ROOM_247 = "demo-247"
ROOM_WINDOW = "demo-window"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_settings(
    *,
    base_url: str,
    project_id: str,
    ak: str,
    sk: str,
    http_port: int,
    state_dir: Path,
    window_in_s: float,
) -> Settings:
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "cloud": {"base_url": base_url, "project_id": project_id, "ak": ak, "sk": sk},
        "store": {"url": f"sqlite+aiosqlite:///{state_dir / 'demo.db'}"},
        "http": {
            "port": http_port,
            "public_callback_url": f"http://127.0.0.1:{http_port}/callbacks/metastudio",
        },
        "callbacks": {"auth_type": "MSS_A_HEAD", "key": secrets.token_hex(8)},
        # short ladder so the demo shows a repair within seconds
        "recovery": {
            "grace_s": 2.0,
            "widen_exit_minutes": 10,
            "refresh_confirm_s": 6.0,
            "refresh_backoff_s": 1.0,
            "restart_backoff_s": 2.0,
            "poll_interval_s": 10.0,
            "stale_after_s": 30.0,
        },
        "log": {"level": "warning"},
        "rooms": [
            {
                "id": ROOM_247,
                "name": "24/7 shop",
                "output_url": "rtmp://push.example.com/live",
                "stream_key": "demo-key-247-" + secrets.token_hex(4),
                "windows": [{"always": True}],
            },
            {
                "id": ROOM_WINDOW,
                "name": "evening show",
                "output_url": "rtmp://push.example.com/live",
                "stream_key": "demo-key-win-" + secrets.token_hex(4),
                "windows": [
                    {
                        "start": (now + timedelta(seconds=window_in_s)).isoformat(),
                        "end": (now + timedelta(hours=1)).isoformat(),
                    }
                ],
            },
        ],
    }
    return Settings.model_validate(data)


class _Printer:
    """Prints one readable line per state change."""

    def __init__(self, out: TextIO, t0: float) -> None:
        self.out = out
        self.t0 = t0
        self.changed = asyncio.Event()

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", file=self.out, flush=True)

    def __call__(self, t: Transition) -> None:
        if t.before.state != t.after.state:
            job = (t.after.job_id or "-")[:8]
            why = f"  ({t.cause})" if t.cause else ""
            self.line(
                f"{t.room_id:<12} {t.before.state.value:>11} → {t.after.state.value:<11} "
                f"job {job}{why}"
            )
        for kind, status, message in t.alerts:
            self.line(f"{t.room_id:<12} ALERT {status} {kind}: {message}")
        self.changed.set()


@contextlib.asynccontextmanager
async def _ticking(
    printer: _Printer, message: Callable[[], str], every_s: float
) -> AsyncIterator[None]:
    """Print ``message()`` every ``every_s`` while the body waits: never silent for long."""

    async def tick() -> None:
        while True:
            await asyncio.sleep(every_s)
            printer.line(message())

    task = asyncio.create_task(tick(), name="demo-ticker")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


async def _wait_for(
    daemon: Any, printer: _Printer, room: str, state: RoomState, within_s: float
) -> bool:
    deadline = time.monotonic() + within_s
    while daemon.supervisor is None or daemon.supervisor.snapshot(room).state is not state:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        printer.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(printer.changed.wait(), left)
    return True


async def run_demo(
    *,
    duration_s: float = 90.0,
    fast: bool = True,
    out: TextIO = sys.stdout,
    state_dir: Path | None = None,
    window_in_s: float = 20.0,
    tick_s: float = 10.0,
) -> int:
    """Run the demo; with ``state_dir`` (an existing directory) the SQLite store ``demo.db``
    survives the run, so ``liveorch report`` can read the SLA it accounted. While it waits it
    says for what, every ``tick_s``, with the seconds left."""
    from orchestrator.app import Daemon
    from orchestrator.emulator.app import create_app
    from orchestrator.emulator.service import EmulatorService
    from orchestrator.httpserver import serve
    from orchestrator.status import render_table

    olog.configure("warning", "console", stream=sys.stderr)
    t0 = time.monotonic()
    printer = _Printer(out, t0)
    ak, sk = "DEMO" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    project_id = secrets.token_hex(16)
    service = EmulatorService(project_id, {ak: sk}, seed=7, time_scale=10.0 if fast else 1.0)
    for rid in (ROOM_247, ROOM_WINDOW):
        service.add_room(rid)
    keep = contextlib.nullcontext(str(state_dir)) if state_dir is not None else None
    with keep or tempfile.TemporaryDirectory(prefix="liveorch-demo-") as tmp:
        async with serve(create_app(service)) as emu:
            settings = demo_settings(
                base_url=emu.base_url,
                project_id=project_id,
                ak=ak,
                sk=sk,
                http_port=_free_port(),
                state_dir=Path(tmp),
                window_in_s=window_in_s,
            )
            window_at = t0 + window_in_s
            printer.line(
                f"emulator at {emu.base_url}; daemon ops at "
                f"http://127.0.0.1:{settings.http.port}/  (status page)"
            )
            daemon = Daemon(settings, listeners=[printer])
            task = asyncio.create_task(daemon.run(), name="daemon")
            rc = 1
            try:
                printer.line("starting the daemon (store, adoption of running jobs, schedule)")
                await asyncio.wait_for(daemon.ready.wait(), 30)
                printer.line("daemon ready: adoption done, schedule loaded")
                printer.line(f"{ROOM_247:<12} 24/7 window: starting its job, waiting for LIVE")
                live_by = time.monotonic() + 60
                async with _ticking(
                    printer,
                    lambda: f"{ROOM_247:<12} waiting for LIVE ({_left(live_by):.0f} s left)",
                    tick_s,
                ):
                    went_live = await _wait_for(daemon, printer, ROOM_247, RoomState.LIVE, 60)
                if not went_live:
                    printer.line(f"{ROOM_247} did not go LIVE within 60 s")
                    return 1
                assert daemon.supervisor is not None
                job_id = daemon.supervisor.snapshot(ROOM_247).job_id
                async with httpx.AsyncClient(base_url=emu.base_url) as admin:
                    await admin.post(
                        f"/_emulator/jobs/{job_id}/rtmp",
                        json={"state": "DISCONNECTED", "hold_s": 600},
                    )
                drop_at = time.monotonic()
                printer.line(f"{ROOM_247:<12} >>> forced RTMP drop (held down until refreshed)")
                await _wait_for(daemon, printer, ROOM_247, RoomState.DEGRADED, 30)
                grace = settings.recovery.grace_s
                printer.line(
                    f"{ROOM_247:<12} the service gets {grace:g} s to reconnect by itself, "
                    "then the daemon refreshes the output"
                )
                fixed_by = time.monotonic() + 120
                async with _ticking(
                    printer,
                    lambda: f"{ROOM_247:<12} repairing ({_left(fixed_by):.0f} s left)",
                    tick_s,
                ):
                    recovered = await _wait_for(daemon, printer, ROOM_247, RoomState.LIVE, 120)
                if recovered:
                    printer.line(
                        f"{ROOM_247:<12} <<< recovered in {time.monotonic() - drop_at:.1f}s"
                    )
                    rc = 0
                else:
                    printer.line(f"{ROOM_247:<12} did not recover within 120 s")
                end_at = t0 + duration_s

                def window_news() -> str:
                    if time.monotonic() < window_at:
                        return (
                            f"{ROOM_WINDOW:<12} waiting for its one-off window: opens in "
                            f"{_left(window_at):.0f} s"
                        )
                    return f"{ROOM_WINDOW:<12} window open, waiting for LIVE"

                if _left(end_at) > 0:
                    printer.line(window_news())
                    async with _ticking(printer, window_news, tick_s):
                        await _wait_for(daemon, printer, ROOM_WINDOW, RoomState.LIVE, _left(end_at))
                if _left(end_at) > 0:
                    page = f"http://127.0.0.1:{settings.http.port}/"
                    printer.line(
                        f"demo done; the status page {page} stays up for "
                        f"{_left(end_at):.0f} s (Ctrl-C ends it now)"
                    )
                    async with _ticking(
                        printer, lambda: f"ending in {_left(end_at):.0f} s", tick_s
                    ):
                        await asyncio.sleep(_left(end_at))  # the operator watches the page
                print("", file=out)
                assert daemon.control is not None  # built before ready
                rooms = [dict(r) for r in daemon.control.rooms_json()]
                print(render_table(rooms, datetime.now(UTC)), file=out)
                jobs = service.admin_jobs()
                running = [j for j in jobs if j["state"] in ("WAITING", "PROCESSING")]
                print(
                    f"\nemulator: {len(jobs)} jobs created, {len(running)} running "
                    f"(one per room: {len(running) == len({j['room_id'] for j in running})})",
                    file=out,
                )
            finally:
                daemon.stop_requested.set()
                rc_daemon = await task
            if state_dir is not None:
                print(
                    f"\nstore kept: {settings.store.url}\n"
                    f"  liveorch report --since 1d --store {settings.store.url}",
                    file=out,
                )
            return rc if rc_daemon == 0 else rc_daemon
