"""The fleet bench's emulator: ``liveorch emulate`` in its own process, plus a recorder.

``python -m bench._fleet_emulator --jobs N [liveorch emulate options]`` builds the service
exactly as ``liveorch emulate`` does (same options: ``--region`` picks the documented rate
limits, ``--rate-limit GROUP=PER_S`` overrides one), creates rooms ``bench-00000``… and starts a
CONNECTED job in each (as :func:`bench._fleet.preseed` does: 10,000 starts at the documented
4 starts/s would take 42 minutes and measure the limit, not the fleet), then serves.

Why its own process: several daemons' polls must meet one tenant's limits the way the cloud
would, and the emulator must not share an event loop with the harness that kills daemons.

Why a recorder inside it: the limits, the 429s and "when was this job last in an answer" are
facts of the tenant, so they are taken where they happen, timestamped with the wall clock of
this machine (the harness on the same machine compares them with its own). Served on the
emulator's loopback-only admin prefix:

* ``GET /_emulator/bench/dump?since=T``: every API call ``[t, operation]``, every throttled
  call (429) ``[t, operation]``, every job view ``{job_id: [t, ...]}`` (a show or list answer
  that contained the job), every command ``[t, job_id, command]`` and every start ``[t, room]``
  after wall time ``T`` (``&views=0``: without the views, a cheap poll);
* ``GET /_emulator/bench/running``: running jobs per room (duplicates = rooms with two).

The emulator's own callbacks are muted (dropped): the harness sends the callbacks it measures
itself, to the instance it chooses, so nothing else reaches a daemon by callback.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import signal
import sys
import time
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator import logging as olog
from orchestrator.emulator.app import create_app
from orchestrator.emulator.cli import add_arguments, build_service
from orchestrator.emulator.service import ApiError, EmulatorService
from orchestrator.httpserver import serve

_RUNNING = ("WAITING", "PROCESSING")


class Recorder:
    """Wraps one service instance (never the class): timestamps on arrival, wall clock."""

    def __init__(self, service: EmulatorService) -> None:
        self.calls: list[tuple[float, str]] = []
        self.throttled: list[tuple[float, str]] = []
        self.views: dict[str, list[float]] = defaultdict(list)
        self.commands: list[tuple[float, str, str]] = []
        self.starts: list[tuple[float, str]] = []
        self.shows: list[tuple[float, str]] = []  # (t, job): a room's own read of its job
        record_call, check_rate, show_job = (
            service.record_call,
            service.check_rate,
            service.show_job,
        )
        command, job_view, start_job = service.command, service.job_view, service.start_job

        def on_call(operation: str) -> None:
            self.calls.append((time.time(), operation))
            record_call(operation)

        def on_rate(group: str) -> None:
            try:
                check_rate(group)
            except ApiError as exc:
                if exc.status == 429:
                    self.throttled.append((time.time(), group))
                raise

        def on_command(room_id: str, job_id: str, body: Any) -> dict[str, Any]:
            name = body.get("command") if isinstance(body, dict) else None
            self.commands.append((time.time(), job_id, str(name)))
            return command(room_id, job_id, body)

        def on_view(job: Any) -> dict[str, Any]:
            self.views[job.job_id].append(time.time())
            return job_view(job)

        def on_show(room_id: str, job_id: str) -> dict[str, Any]:
            self.shows.append((time.time(), job_id))
            return show_job(room_id, job_id)

        def on_start(room_id: str, body: Any, *, base_url: str) -> dict[str, Any]:
            self.starts.append((time.time(), room_id))
            return start_job(room_id, body, base_url=base_url)

        service.record_call = on_call  # type: ignore[method-assign]
        service.check_rate = on_rate  # type: ignore[method-assign]
        service.command = on_command  # type: ignore[method-assign]
        service.job_view = on_view  # type: ignore[method-assign]
        service.start_job = on_start  # type: ignore[method-assign]
        service.show_job = on_show  # type: ignore[method-assign]

    def dump(self, since: float, views: bool = True) -> dict[str, Any]:
        def after(rows: list[Any]) -> list[Any]:
            # rows are appended in time order: bisect instead of scanning a long run
            return rows[bisect.bisect_left(rows, (since,)) :]

        seen = {}
        for job_id, ts in self.views.items() if views else ():
            tail = ts[bisect.bisect_left(ts, since) :]
            if tail:
                seen[job_id] = [round(t, 3) for t in tail]
        return {
            "now": time.time(),
            "calls": after(self.calls),
            "throttled": after(self.throttled),
            "views": seen,
            "commands": after(self.commands),
            "starts": after(self.starts),
            "shows": after(self.shows),
        }


def preseed(service: EmulatorService, n: int, base_url: str) -> None:
    """Rooms ``bench-NNNNN`` and one job each, started in-process (no rate limit)."""
    from bench._common import CALLBACK_KEY, room_ids

    for room in room_ids(n):
        if room not in service.rooms:
            service.add_room(room, {"room_name": room})
        service.start_job(
            room,
            {
                "output_urls": [f"rtmp://127.0.0.1:1935/live/{room}"],
                "stream_keys": [f"key-{room}"],
                "live_event_callback_config": {
                    # muted below; the URL is never dialled
                    "live_event_type_callback_url": "http://127.0.0.1:9/callbacks/metastudio",
                    "auth_type": "MSS_A_HEAD",
                    "key": CALLBACK_KEY,
                },
            },
            base_url=base_url,
        )


async def _main(args: argparse.Namespace) -> int:
    olog.configure("warning", "json", stream=sys.stderr)
    service = build_service(args)
    service.callbacks.knobs.drop_rate = 1.0  # see the module docstring
    service.script_switch_s = 1e9  # no script switches: a quiet tenant
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(service)
    recorder: Recorder | None = None

    async def dump(request: Request) -> Response:
        if recorder is None:
            return JSONResponse({"error": "not ready"}, status_code=503)
        since = float(request.query_params.get("since", "0"))
        views = request.query_params.get("views", "1") != "0"
        return JSONResponse(recorder.dump(since, views))

    async def running(request: Request) -> Response:
        per_room: dict[str, list[str]] = defaultdict(list)
        for job in service.jobs.values():
            if job.state in _RUNNING:
                per_room[job.room_id].append(job.job_id)
        return JSONResponse(
            {
                "running": sum(len(v) for v in per_room.values()),
                "rooms_with_2plus": sorted(r for r, v in per_room.items() if len(v) > 1),
                "jobs": {r: v[0] for r, v in per_room.items()},
            }
        )

    # before the admin's catch-all routes; loopback like the rest of /_emulator (one listener)
    app.router.routes.insert(0, Route("/_emulator/bench/dump", dump, methods=["GET"]))
    app.router.routes.insert(0, Route("/_emulator/bench/running", running, methods=["GET"]))
    async with serve(app, host=args.host, port=args.port, graceful_timeout_s=2.0) as served:
        preseed(service, args.jobs, served.base_url)
        deadline = time.monotonic() + 60 + args.jobs / 100
        while not all(j.rtmp_state == "CONNECTED" for j in service.jobs.values()):
            if time.monotonic() > deadline:
                print("pre-seeded jobs did not connect", file=sys.stderr)
                return 1
            await asyncio.sleep(0.05)
        service.calls.clear()
        service.starts = 0
        recorder = Recorder(service)
        ak, sk = next(iter(service.credentials.items()))
        print(
            json.dumps(
                {
                    "base_url": served.base_url,
                    "project_id": service.project_id,
                    "region": service.region,
                    "ak": ak,
                    "sk": sk,
                    "rate_limits": dict(service.rate_limits),
                }
            ),
            flush=True,
        )
        await stop.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._fleet_emulator")
    add_arguments(parser)  # the same options as `liveorch emulate`
    parser.add_argument("--jobs", type=int, default=0, help="rooms with a CONNECTED job")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
