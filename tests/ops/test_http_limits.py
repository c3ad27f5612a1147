"""The embedded HTTP server's guard: connection cap, header/body deadlines, keep-alive intact.

Real uvicorn on loopback, real sockets; every wait is on the socket closing (EOF) with a
timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator.httpserver import ConnectionLimits, ServedApp, serve

LIMITS = ConnectionLimits(
    max_connections=5, header_timeout_s=0.5, body_timeout_s=0.5, keepalive_s=5
)
WAIT_S = 10.0


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"len": len(body)})


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/healthz", lambda _: JSONResponse({"ok": True})),
            Route("/echo", _echo, methods=["POST"]),
        ]
    )


@contextlib.asynccontextmanager
async def _served(limits: ConnectionLimits = LIMITS) -> AsyncIterator[ServedApp]:
    async with serve(_app(), limits=limits) as served:
        yield served


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closed the connection (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(4096), WAIT_S):
            pass
    except ConnectionResetError:
        pass
    return True


async def test_slow_headers_and_silent_connections_are_closed() -> None:
    async with _served() as served:
        assert served.guard is not None
        silent_r, silent_w = await asyncio.open_connection(served.host, served.port)
        slow_r, slow_w = await asyncio.open_connection(served.host, served.port)
        slow_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # … and the rest never comes
        await slow_w.drain()
        assert await _closed_by_server(slow_r)
        assert await _closed_by_server(silent_r)
        assert served.guard.header_timeouts == 2
        for w in (silent_w, slow_w):
            w.close()


async def test_a_slow_body_is_cut_off() -> None:
    async with _served() as served:
        assert served.guard is not None
        r, w = await asyncio.open_connection(served.host, served.port)
        w.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        await w.drain()
        assert await _closed_by_server(r)
        assert served.guard.body_timeouts == 1
        w.close()


async def test_keep_alive_requests_still_work() -> None:
    async with _served() as served:
        async with httpx.AsyncClient(base_url=served.base_url) as client:
            for _ in range(3):  # one pooled connection, three requests
                r = await client.post("/echo", content=b"x" * 1000)
                assert r.json() == {"len": 1000}
        assert served.guard is not None
        assert served.guard.header_timeouts == served.guard.body_timeouts == 0


async def test_a_flood_of_idle_sockets_is_capped_and_the_server_recovers() -> None:
    async with _served() as served:
        guard = served.guard
        assert guard is not None
        conns = [await asyncio.open_connection(served.host, served.port) for _ in range(200)]
        try:
            # the server holds at most the cap at any time; the rest are closed at once, the
            # held ones at their header deadline: every one of the flood's sockets is closed
            # by the server while the client keeps them all open
            async def all_cut() -> None:
                while guard.refused + guard.header_timeouts < len(conns):
                    guard.closed.clear()
                    await guard.closed.wait()

            await asyncio.wait_for(all_cut(), WAIT_S)
            assert guard.refused >= len(conns) - 5 * 20  # most never held a slot at all
            assert guard.peak <= LIMITS.max_connections
            async with httpx.AsyncClient(base_url=served.base_url) as client:
                r = await client.get("/healthz", timeout=WAIT_S)
                assert r.status_code == 200
        finally:
            for _, w in conns:
                w.close()
