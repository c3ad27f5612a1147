"""``callback_lanes``: how much a job with a dead callback URL delays another job's callbacks.

The emulator's dispatcher delivers each job's callbacks in its own lane (issue 23: one shared
worker let a hanging URL delay a healthy job's first callback by 8.3 s). Healthy callbacks are
submitted one at a time, alone (baseline) and each behind ``DEAD_PER_ROUND`` new jobs whose URL
accepts connections and never answers; the figure is the extra submit-to-delivery latency.
"""

from __future__ import annotations

import asyncio
import random
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._common import Target, percentile, record
from orchestrator.emulator.callbacks import CallbackDispatcher, CallbackEvent
from orchestrator.httpserver import serve

DEAD_PER_ROUND = 3


async def _measure(rounds: int) -> dict[str, float]:
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def healthy(request: Request) -> Response:
        await request.body()
        arrived.put_nowait(time.perf_counter())
        return Response(status_code=200)

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    dead = await asyncio.start_server(hang, "127.0.0.1", 0)
    dead_url = f"http://127.0.0.1:{dead.sockets[0].getsockname()[1]}/hook"
    out: dict[str, float] = {}
    try:
        app = Starlette(routes=[Route("/hook", healthy, methods=["POST"])])
        async with serve(app) as served:
            for label, dead_lanes in (("alone", 0), ("behind_dead", DEAD_PER_ROUND)):
                dispatcher = CallbackDispatcher(rng=random.Random(1))
                await dispatcher.start()
                latencies = []
                for i in range(rounds + 1):
                    for j in range(dead_lanes):
                        dispatcher.submit(
                            CallbackEvent(dead_url, "NONE", "", "X", {}, f"dead-{i}-{j}")
                        )
                    t0 = time.perf_counter()
                    dispatcher.submit(
                        CallbackEvent(served.base_url + "/hook", "NONE", "", "X", {}, f"ok-{i}")
                    )
                    t1 = await asyncio.wait_for(arrived.get(), 30)
                    if i:  # the first round opens connections: not steady state
                        latencies.append((t1 - t0) * 1000.0)
                out[f"{label}_p50_ms"] = percentile(latencies, 50)
                out[f"{label}_p95_ms"] = percentile(latencies, 95)
                out[f"{label}_max_ms"] = max(latencies)
                out[f"{label}_lanes_open"] = dispatcher.lanes
                await dispatcher.stop()
    finally:
        dead.close()
    return out


def run(quick: bool) -> int:
    figures = asyncio.run(_measure(10 if quick else 100))
    effect_p95 = figures["behind_dead_p95_ms"] - figures["alone_p95_ms"]
    figures["effect_p95_ms"] = effect_p95
    target = Target("healthy job's delay from dead lanes, p95 (ms)", effect_p95, "<=", 100.0)
    record("callback_lanes", figures, [target], quick=quick)
    return 0 if target.met else 1
