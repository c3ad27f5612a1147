"""Run an ASGI app inside an already-running event loop (daemon, emulator, tests).

uvicorn's ``Server.serve()`` normally captures SIGINT/SIGTERM itself; inside our daemon the
signals belong to the application's own lifecycle, so :class:`EmbeddedServer` leaves them alone.
:func:`serve` binds (``port=0`` picks a free port), waits until the socket is listening, yields
the real bound address and shuts the server down on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
import uvicorn
from starlette.types import ASGIApp

from orchestrator.errors import ConfigError

__all__ = ["EmbeddedServer", "ServedApp", "serve"]

log = structlog.get_logger(__name__)


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that never touches process signal handlers and reports readiness."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Signals are the embedding application's business, not the HTTP server's."""
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn versions call this instead
        return None

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)  # type: ignore[arg-type]
        if self.started:
            self.ready.set()


@dataclass(frozen=True, slots=True)
class ServedApp:
    """Where an embedded app listens."""

    host: str
    port: int
    server: EmbeddedServer

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@asynccontextmanager
async def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    access_log: bool = False,
    graceful_timeout_s: float = 5.0,
) -> AsyncIterator[ServedApp]:
    """Serve ``app`` until the block exits; yields once the socket accepts connections.

    ``graceful_timeout_s`` bounds how long shutdown waits for in-flight requests (a held
    "ghost" start would otherwise keep the server alive forever).
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="auto",
        timeout_graceful_shutdown=int(graceful_timeout_s) or 1,
        log_config=None,
    )
    server = EmbeddedServer(config)

    async def _run() -> None:
        # uvicorn calls sys.exit() when it cannot bind; SystemExit must not escape a task
        # (asyncio would re-raise it out of the whole event loop).
        try:
            await server.serve()
        except SystemExit as exc:
            raise ConfigError("HTTP server could not start", where=f"{host}:{port}") from exc

    task = asyncio.create_task(_run(), name=f"http-server-{host}:{port}")
    ready = asyncio.create_task(server.ready.wait(), name="http-server-ready")
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        server.should_exit = True
        ready.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if not ready.done():
        ready.cancel()
        exc = task.exception() if not task.cancelled() else None
        if exc is not None:
            raise exc
        raise ConfigError("HTTP server stopped before it was ready", where=f"{host}:{port}")
    bound_port = port
    for srv in server.servers:
        for sock in srv.sockets:
            bound_port = int(sock.getsockname()[1])
            break
    served = ServedApp(host=host, port=bound_port, server=server)
    log.debug("http_server_started", host=host, port=bound_port)
    try:
        yield served
    finally:
        server.should_exit = True
        await task
        log.debug("http_server_stopped", host=host, port=bound_port)
