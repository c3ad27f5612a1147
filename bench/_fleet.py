"""A fleet of running jobs for the daemon benches (react, adopt, scale), and emulator-side probes.

Why pre-seed instead of letting the daemon start everything: 1,000-10,000 starts at the
documented 4 starts/s would take minutes to hours and measure the rate limit, not the daemon.
Jobs are started inside the emulator (with the daemon's callback URL and key, as the daemon
would), brought to RTMP ``CONNECTED`` with callbacks muted (nobody is listening yet), and the
daemon then adopts them on start-up exactly as after a restart.

Probes wrap the in-process :class:`EmulatorService` instance (never the class): every API call
and every job view is timestamped on arrival, every callback on departure.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from bench._common import CALLBACK_KEY, Emulator
from orchestrator.emulator.callbacks import CallbackEvent

__all__ = [
    "CallbackRecorder",
    "Probe",
    "ScriptSwitches",
    "daemon_states",
    "preseed",
    "wait_daemon_states",
]


async def preseed(emu: Emulator, rooms: Sequence[str], callback_url: str) -> None:
    """Start one job per room (in-process, no rate limit) and wait until every link is up."""
    service = emu.service
    knobs = service.callbacks.knobs
    knobs.drop_rate = 1.0  # nobody listens yet: do not queue thousands of doomed deliveries
    for room in rooms:
        service.start_job(
            room,
            {
                "output_urls": [f"rtmp://127.0.0.1:1935/live/{room}"],
                "stream_keys": [f"key-{room}"],
                "live_event_callback_config": {
                    "live_event_type_callback_url": callback_url,
                    "auth_type": "MSS_A_HEAD",
                    "key": CALLBACK_KEY,
                },
            },
            base_url=emu.base_url,
        )
    deadline = time.monotonic() + 60 + len(rooms) / 100
    while time.monotonic() < deadline:
        if all(j.rtmp_state == "CONNECTED" for j in service.jobs.values()):
            break
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError("pre-seeded jobs did not connect")
    await service.callbacks.join()
    knobs.drop_rate = 0.0
    service.calls.clear()
    service.starts = 0


async def daemon_states(http: httpx.AsyncClient, base_url: str) -> dict[str, str]:
    """room id → state, from the daemon's ``/rooms`` JSON."""
    resp = await http.get(base_url + "/rooms")
    resp.raise_for_status()
    body: Any = resp.json()
    items = body.get("rooms", body) if isinstance(body, dict) else body
    if isinstance(items, dict):
        return {str(k): str(v.get("state")) for k, v in items.items()}
    return {str(i["room_id"]): str(i.get("state")) for i in items}


async def wait_daemon_states(
    base_url: str, rooms: Sequence[str], want: str, timeout_s: float
) -> float:
    """Seconds until every room is in state ``want`` in the daemon's view (raises on timeout)."""
    started = time.monotonic()
    last: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=30.0) as http:
        while time.monotonic() - started < timeout_s:
            asked = time.monotonic()
            with contextlib.suppress(httpx.HTTPError, ValueError):
                last = await daemon_states(http, base_url)
                if all(last.get(r) == want for r in rooms):
                    return time.monotonic() - started
            # /rooms of 10,000 rooms costs the daemon ~0.5 s of CPU: asking every 0.25 s took
            # 62% of its CPU (py-spy) and measured the observer. Keep it under ~20%.
            await asyncio.sleep(max(0.25, 4 * (time.monotonic() - asked)))
    counts: dict[str, int] = defaultdict(int)
    for r in rooms:
        counts[last.get(r, "missing")] += 1
    raise TimeoutError(f"rooms not all {want} after {timeout_s:.0f}s: {dict(counts)}")


class Probe:
    """Timestamps of API calls (by operation), commands and job views, on arrival."""

    def __init__(self, emu: Emulator) -> None:
        service = emu.service
        self.calls: list[tuple[float, str]] = []
        self.commands: list[tuple[float, str, str]] = []  # (t, job_id, command)
        self.views: dict[str, list[float]] = defaultdict(list)
        record_call = service.record_call
        command = service.command
        job_view = service.job_view

        def on_call(operation: str) -> None:
            self.calls.append((time.monotonic(), operation))
            record_call(operation)

        def on_command(room_id: str, job_id: str, body: Any) -> dict[str, Any]:
            name = body.get("command") if isinstance(body, dict) else None
            self.commands.append((time.monotonic(), job_id, str(name)))
            return command(room_id, job_id, body)

        def on_view(job: Any) -> dict[str, Any]:
            self.views[job.job_id].append(time.monotonic())
            return job_view(job)

        service.record_call = on_call  # type: ignore[method-assign]
        service.command = on_command  # type: ignore[method-assign]
        service.job_view = on_view  # type: ignore[method-assign]

    def count(self, since: float, until: float, ops: Sequence[str] | None = None) -> int:
        return sum(1 for t, op in self.calls if since <= t < until and (ops is None or op in ops))

    def max_rate(
        self, since: float, until: float, ops: Sequence[str], window_s: float = 1.0
    ) -> float:
        """Highest number of ``ops`` calls in any sliding ``window_s`` window, per second."""
        times = sorted(t for t, op in self.calls if since <= t < until and op in ops)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while times[lo] <= t - window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best / window_s

    def max_gap(self, job_ids: Sequence[str], since: float, until: float) -> float:
        """Longest time any of ``job_ids`` went without being viewed in [since, until]."""
        worst = 0.0
        for job_id in job_ids:
            seen = [t for t in self.views.get(job_id, ()) if since <= t <= until]
            edges = [since, *seen, until]
            worst = max(worst, max(b - a for a, b in itertools.pairwise(edges)))
        return worst


class CallbackRecorder(httpx.AsyncBaseTransport):
    """The emulator's callback transport: stamps each delivery (job, event, state) as it leaves."""

    def __init__(self) -> None:
        # The dispatcher sizes its pool at one connection per lane (1,024); a transport passed
        # in replaces that pool, so mirror it. With httpx's default 100 connections, 1,000 lanes
        # queued in the pool, whose request-to-connection matching is quadratic: the bench
        # process (the emulator) spent seconds per callback and stopped answering the daemon.
        self._inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=100)
        )
        self.sent: list[tuple[float, str, str, str]] = []  # (t, job_id, event_type, state)
        self.on_sent: Callable[[str, str], None] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            body = json.loads(request.content)
            msg = json.loads(body["message"])
            self.sent.append(
                (
                    time.monotonic(),
                    str(msg.get("job_id")),
                    body["event_type"],
                    str(msg.get("state")),
                )
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ScriptSwitches:
    """Background ``SHOOT_SCRIPT_SWITCH`` callbacks at ``rate``/s, round-robin over the running
    jobs, leaving through the emulator's own delivery lanes (so they share its sockets, lanes
    and retries with every other callback, as the service's would).

    Why paced here and not by the emulator's per-job script timer: jobs pre-seeded together
    switch together (1,000 callbacks in one burst every period); a service whose jobs started at
    different times spreads them, which is the realistic background. The message is the one
    the emulator's own script switch builds (scene, sequence number, title).
    """

    def __init__(self, emu: Emulator, rate: float) -> None:
        self.service = emu.service
        self.rate = rate
        self.submitted = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        jobs = [j for j in self.service.jobs.values() if j.running and j.callback_config]
        if not jobs:
            return
        t0 = time.monotonic()
        while True:
            due = int((time.monotonic() - t0) * self.rate)
            while self.submitted < due:
                job = jobs[self.submitted % len(jobs)]
                cfg = job.callback_config or {}
                seq = self.submitted // len(jobs) % 3 + 1
                self.service.callbacks.submit(
                    CallbackEvent(
                        url=str(cfg["live_event_type_callback_url"]),
                        auth_type=str(cfg.get("auth_type") or "NONE"),
                        key=str(cfg.get("key") or ""),
                        event_type="SHOOT_SCRIPT_SWITCH",
                        message={
                            "room_id": job.room_id,
                            "job_id": job.job_id,
                            "scene_script_name": "default-scene",
                            "shoot_script_sequence_no": str(seq),
                            "shoot_script_title": "",
                        },
                        lane=job.job_id,
                    )
                )
                self.submitted += 1
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-script-switches")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
