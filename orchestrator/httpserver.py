"""Run an ASGI app inside an already-running event loop (daemon, emulator, tests).

uvicorn's ``Server.serve()`` normally captures SIGINT/SIGTERM itself; inside our daemon the
signals belong to the application's own lifecycle, so :class:`EmbeddedServer` leaves them alone.
:func:`serve` binds (``port=0`` picks a free port), waits until the socket is listening, yields
the real bound address and shuts the server down on exit.

With :class:`ConnectionLimits` the server holds only what it can afford: at most
``max_connections`` open connections (one more is closed at once, freeing its descriptor),
never more than half the process's open-files limit (cloud calls and the store need the
rest), and no connection may sit on the request line and headers longer than
``header_timeout_s`` (a connection that sends nothing included), on a body longer than
``body_timeout_s``, or idle between requests longer than ``keepalive_s``. uvicorn itself has
only the last: 20,000 idle sockets once took every descriptor the daemon had.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from orchestrator.errors import ConfigError

__all__ = ["ConnectionLimits", "EmbeddedServer", "GuardStats", "ServedApp", "serve"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client may hold of the server (see the module docstring)."""

    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 5.0


@dataclass(slots=True)
class GuardStats:
    """Counts of what the guard cut (observability for tests and the bench)."""

    refused: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    peak: int = 0
    """The most connections held at once."""
    max_connections: int = 0
    """The cap in effect (the configured one, or half the open-files limit if lower)."""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever the guard closes a connection (tests wait on it)."""


def effective_max_connections(configured: int) -> int:
    """``configured``, but never more than half the soft open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return configured
    return max(1, min(configured, soft // 2))


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a connection cap and header/body deadlines.

    One timer per connection: armed for the headers when the connection opens or a request
    begins, re-armed for the body when the headers are in, disarmed when the request is
    complete (the app's own time is not limited here; after the response uvicorn's keep-alive
    timer takes over)."""

    limits: ClassVar[ConnectionLimits]
    stats: ClassVar[GuardStats]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = self.stats.max_connections
        if len(self.connections) >= cap:
            self._refused = True
            self.stats.refused += 1
            # a warning per refused connection would flood the log: the repeat limiter
            # (orchestrator.logging) keeps a burst and a count of these
            log.warning("http_connection_refused", reason="max_connections", limit=cap)
            transport.abort()  # the descriptor is freed now, not after a handshake
            self.stats.closed.set()
            return
        super().connection_made(transport)
        self.stats.peak = max(self.stats.peak, len(self.connections))
        self._arm("header", self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm("header", self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if phase == "header":
            self.stats.header_timeouts += 1
        else:
            self.stats.body_timeouts += 1
        log.debug("http_connection_timeout", phase=phase, client=self.client)
        self.transport.close()
        self.stats.closed.set()


def _guarded_protocol(limits: ConnectionLimits, stats: GuardStats) -> type[_GuardedProtocol]:
    # one class per server: uvicorn builds protocols from a class and its own config only
    attrs = {"limits": limits, "stats": stats}
    return type("GuardedHttpProtocol", (_GuardedProtocol,), attrs)


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
    guard: GuardStats | None = None

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
    limits: ConnectionLimits | None = None,
) -> AsyncIterator[ServedApp]:
    """Serve ``app`` until the block exits; yields once the socket accepts connections.

    ``graceful_timeout_s`` bounds how long shutdown waits for in-flight requests (a held
    "ghost" start would otherwise keep the server alive forever). ``limits`` caps
    connections and their time (the daemon always passes them; see the module docstring).
    """
    extra: dict[str, Any] = {}
    guard: GuardStats | None = None
    if limits is not None:
        guard = GuardStats(max_connections=effective_max_connections(limits.max_connections))
        if guard.max_connections < limits.max_connections:
            log.warning(
                "http_max_connections_lowered",
                configured=limits.max_connections,
                effective=guard.max_connections,
                reason="half the open-files limit (ulimit -n) is kept for cloud calls",
            )
        extra["http"] = _guarded_protocol(limits, guard)
        extra["timeout_keep_alive"] = max(1, math.ceil(limits.keepalive_s))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="auto",
        timeout_graceful_shutdown=int(graceful_timeout_s) or 1,
        log_config=None,
        **extra,
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
    served = ServedApp(host=host, port=bound_port, server=server, guard=guard)
    log.debug("http_server_started", host=host, port=bound_port)
    try:
        yield served
    finally:
        server.should_exit = True
        await task
        log.debug("http_server_stopped", host=host, port=bound_port)
