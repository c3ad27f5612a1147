"""``liveorch emulate`` plus a journal of every API call and every 429, for the fleet tests.

Run as a script with the ``liveorch emulate`` options. The tenant's limits are facts of the
gateway, so the fleet tests measure them here, where they happen: ``GET
/_emulator/journal?since=T`` answers every call ``[t, operation]`` and every throttled call
``[t, operation]`` after wall time ``T`` (this machine's clock, which the test shares).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import signal
import sys
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator import logging as olog
from orchestrator.emulator.app import create_app
from orchestrator.emulator.cli import add_arguments, build_service
from orchestrator.emulator.service import ApiError
from orchestrator.httpserver import serve


async def _main(args: argparse.Namespace) -> int:
    olog.configure("warning", "json", stream=sys.stderr)
    service = build_service(args)
    calls: list[tuple[float, str]] = []
    throttled: list[tuple[float, str]] = []
    record_call, check_rate = service.record_call, service.check_rate

    def on_call(operation: str) -> None:
        calls.append((time.time(), operation))
        record_call(operation)

    def on_rate(group: str) -> None:
        try:
            check_rate(group)
        except ApiError as exc:
            if exc.status == 429:
                throttled.append((time.time(), group))
            raise

    service.record_call = on_call  # type: ignore[method-assign]
    service.check_rate = on_rate  # type: ignore[method-assign]

    async def journal(request: Request) -> Response:
        since = float(request.query_params.get("since", "0"))
        return JSONResponse(
            {
                "now": time.time(),
                "calls": calls[bisect.bisect_left(calls, (since,)) :],
                "throttled": throttled[bisect.bisect_left(throttled, (since,)) :],
                "rate_limits": dict(service.rate_limits),
            }
        )

    app = create_app(service)
    app.router.routes.insert(0, Route("/_emulator/journal", journal, methods=["GET"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(app, host=args.host, port=args.port) as served:
        ak, sk = next(iter(service.credentials.items()))
        info = {"base_url": served.base_url, "project_id": service.project_id, "ak": ak, "sk": sk}
        print(json.dumps(info), flush=True)
        await stop.wait()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="_journal_emulator.py")
    add_arguments(parser)
    sys.exit(asyncio.run(_main(parser.parse_args())))
