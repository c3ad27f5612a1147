"""Signals between instances: PostgreSQL LISTEN/NOTIFY, and an in-process stand-in.

Several instances share one PostgreSQL. A callback committed by one instance must reach the
owner of its room within milliseconds, and what the elected tenant reader observed must reach
every owner; polling tables for that would cost every instance queries every second, while
the server that already holds the rows can push a notification on commit.

Notifications are **hints**: they carry ids, never the data (which stays in the tables), and
PostgreSQL does not keep them for a listener that is away. So a subscriber must *resync* (read
what it may have missed from the tables) every time the listening connection is (re)made:
``on_resync`` handlers run after every connect, before any notification of that connection is
delivered. A connection that stops answering is found by a keep-alive query and replaced.

:func:`notify_statement` sends a notification from inside a caller's transaction: PostgreSQL
delivers it at commit and drops it on rollback, so "the row is there" and "the owner is told"
cannot disagree.

Channels are namespaced (``liveorch.<namespace>.<topic>``, the namespace being the store's
schema) so deployments or test runs sharing one server do not hear each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
import structlog
from sqlalchemy import TextClause, text

from orchestrator.backoff import Backoff

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "LocalSignals",
    "PgSignals",
    "Signals",
    "channel_name",
    "notify_statement",
]

log = structlog.get_logger(__name__)

MAX_PAYLOAD_BYTES = 7999
"""PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (default build)."""

_MAX_CHANNEL_BYTES = 63  # NAMEDATALEN - 1: longer identifiers are truncated by the server

Handler = Callable[[str], None]


def channel_name(namespace: str, topic: str) -> str:
    """The channel of ``topic`` for this deployment; ValueError if PostgreSQL would truncate it."""
    if not topic or not topic.replace("_", "").isalnum():
        raise ValueError(f"signal topic {topic!r} must be letters, digits and '_'")
    name = f"liveorch.{namespace or 'public'}.{topic}"
    if len(name.encode()) > _MAX_CHANNEL_BYTES:
        raise ValueError(
            f"signal channel {name!r} is longer than {_MAX_CHANNEL_BYTES} bytes; "
            "use a shorter store schema name"
        )
    return name


def _check_payload(payload: str) -> None:
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"signal payload of {len(payload.encode())} bytes is over {MAX_PAYLOAD_BYTES}: "
            "send ids, not data"
        )


def notify_statement(namespace: str, topic: str, payload: str) -> TextClause:
    """A ``pg_notify`` to run inside the caller's transaction (delivered only on commit)."""
    _check_payload(payload)
    return text("SELECT pg_notify(:channel, :payload)").bindparams(
        channel=channel_name(namespace, topic), payload=payload
    )


class Signals(Protocol):
    """What a subscriber or publisher of cross-instance signals needs."""

    ready: asyncio.Event

    def subscribe(self, topic: str, handler: Handler) -> None: ...
    def on_resync(self, handler: Callable[[], Awaitable[None]]) -> None: ...
    async def publish(self, topic: str, payload: str) -> None: ...
    async def run(self) -> None: ...


class _Handlers:
    def __init__(self) -> None:
        self.by_topic: dict[str, list[Handler]] = {}
        self.resync: list[Callable[[], Awaitable[None]]] = []

    def deliver(self, topic: str, payload: str) -> None:
        for handler in list(self.by_topic.get(topic, ())):
            try:
                handler(payload)
            except Exception:  # one broken subscriber must not silence the others
                log.exception("signal_handler_failed", topic=topic)

    async def resync_all(self) -> None:
        for handler in list(self.resync):
            await handler()


class LocalSignals:
    """One instance alone (SQLite, or tests): signals go to this process's subscribers."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self._h = _Handlers()

    def subscribe(self, topic: str, handler: Handler) -> None:
        channel_name("local", topic)  # same rules as PostgreSQL, so a bad topic fails early
        self._h.by_topic.setdefault(topic, []).append(handler)

    def on_resync(self, handler: Callable[[], Awaitable[None]]) -> None:
        self._h.resync.append(handler)

    async def publish(self, topic: str, payload: str) -> None:
        _check_payload(payload)
        # after the caller's turn, like a notification arriving from the server
        asyncio.get_running_loop().call_soon(self._h.deliver, topic, payload)

    async def run(self) -> None:
        await self._h.resync_all()
        self.ready.set()
        await asyncio.Event().wait()  # nothing to maintain; runs until cancelled


Connect = Callable[[str], Awaitable[Any]]
"""Makes a connection; the argument is its purpose (``listen`` or ``publish``)."""


class PgSignals:
    """LISTEN on one dedicated asyncpg connection, remade with backoff when it breaks.

    ``dsn`` is a plain ``postgresql://`` URL (no SQLAlchemy driver suffix). Publishing uses a
    second connection, made on first use, so a publisher never waits behind the listener.
    """

    def __init__(
        self,
        dsn: str,
        namespace: str,
        *,
        keepalive_s: float = 5.0,
        keepalive_timeout_s: float = 3.0,
        backoff: Backoff | None = None,
        connect: Connect | None = None,
    ) -> None:
        self._dsn = dsn
        self._ns = namespace
        self._keepalive_s = keepalive_s
        self._keepalive_timeout_s = keepalive_timeout_s
        self._backoff = backoff or Backoff(cap_s=10.0, base_s=0.2)
        self._connect: Connect = connect or self._default_connect
        self._h = _Handlers()
        self._pub: Any = None
        self._pub_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self.connects = 0
        """How many times the listening connection was made (tests and metrics)."""

    async def _default_connect(self, purpose: str) -> Any:
        # named, so an operator (or a test) can tell the listening connection in pg_stat_activity
        name = f"liveorch:{self._ns}:{purpose}"[:63]
        return await asyncpg.connect(self._dsn, server_settings={"application_name": name})

    def subscribe(self, topic: str, handler: Handler) -> None:
        channel_name(self._ns, topic)
        if self.ready.is_set():
            raise RuntimeError("subscribe before run(): a late LISTEN would miss notifications")
        self._h.by_topic.setdefault(topic, []).append(handler)

    def on_resync(self, handler: Callable[[], Awaitable[None]]) -> None:
        self._h.resync.append(handler)

    async def publish(self, topic: str, payload: str) -> None:
        _check_payload(payload)
        channel = channel_name(self._ns, topic)
        async with self._pub_lock:
            for attempt in (1, 2):  # a publisher connection broken since last use: remake once
                if self._pub is None or self._pub.is_closed():
                    self._pub = await self._connect("publish")
                try:
                    await self._pub.execute("SELECT pg_notify($1, $2)", channel, payload)
                    return
                except (asyncpg.PostgresConnectionError, ConnectionError, OSError):
                    self._pub = None
                    if attempt == 2:
                        raise

    async def aclose(self) -> None:
        if self._pub is not None:
            with contextlib.suppress(Exception):
                await self._pub.close()
            self._pub = None

    async def run(self) -> None:
        """Listen until cancelled; every (re)connect resyncs before delivering anything."""
        try:
            while True:
                try:
                    await self._listen_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.ready.clear()
                    delay = self._backoff.next_delay()
                    log.warning(
                        "signals_connection_lost",
                        error=f"{type(exc).__name__}: {exc}"[:300],
                        retry_in_s=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
        finally:
            self.ready.clear()
            await self.aclose()

    async def _listen_once(self) -> None:
        conn = await self._connect("listen")
        lost = asyncio.Event()
        held: list[tuple[str, str]] = []
        resynced = False

        def on_notify(_c: object, _pid: int, channel: str, payload: str) -> None:
            topic = channel.rsplit(".", 1)[-1]
            if resynced:
                self._h.deliver(topic, payload)
            else:  # arrived during the resync: deliver after it, in order
                held.append((topic, payload))

        try:
            conn.add_termination_listener(lambda _c: lost.set())
            for topic in self._h.by_topic:
                await conn.add_listener(channel_name(self._ns, topic), on_notify)
            self.connects += 1
            await self._h.resync_all()
            resynced = True
            for topic, payload in held:
                self._h.deliver(topic, payload)
            held.clear()
            self._backoff.reset()
            self.ready.set()
            log.info("signals_listening", topics=sorted(self._h.by_topic), connects=self.connects)
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._keepalive_s)
                if lost.is_set():
                    break
                # a silent network loss closes nothing: ask, with a deadline
                await asyncio.wait_for(conn.fetchval("SELECT 1"), self._keepalive_timeout_s)
            raise ConnectionError("the listening connection was closed")
        finally:
            self.ready.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
