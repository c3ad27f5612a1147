"""The engine under :class:`~orchestrator.store.sql.SqlStore`: connections, transactions, errors.

The role modules (``sql_rooms``, ``sql_inbox``, ``sql_records``, ``sql_leases``) build on
:class:`SqlCore`; ``sql.SqlStore`` puts them together over this one engine.

One code path for both databases; the few dialect differences are chosen once in ``__init__``
(the ``INSERT … ON CONFLICT`` construct) or are no-ops on the other side (``FOR UPDATE`` renders
nothing on SQLite, where ``BEGIN IMMEDIATE`` already serialises writers).

Durability: SQLite runs in WAL mode with ``synchronous=NORMAL``. A commit is durable against a
*process* kill (the WAL frames are written to the OS before ``COMMIT`` returns), which is what
"nothing acknowledged is lost" asks for: the callback receiver answers 200 only after
``inbox_append`` returns. On *power loss* WAL+NORMAL may lose the last few commits but never
corrupts the file; MetaStudio retries unacknowledged callbacks and the poll loop re-reads jobs, so
we trade that window for group-commit throughput (FULL would fsync every commit).

Fencing: a room-scoped write with ``fence=`` reads the room's lease row in the same transaction
(``FOR KEY SHARE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises everything) and raises
:class:`FencedOut` before writing if the fence moved or the lease was released. Taking a free or
expired lease increments its fence; releasing keeps the row (owner ``''``) so fences stay
monotonic per room. Why ``KEY SHARE`` is enough: a takeover locks its rows ``FOR UPDATE`` before
it bumps the fence, and ``FOR UPDATE`` conflicts with ``KEY SHARE``, so a takeover skips (or
waits for) a room whose fenced write is in flight, and a fenced write that starts after the
takeover locked the row waits for it and then reads the new fence. Renewal and release only take
``FOR NO KEY UPDATE`` (they change no key column), which does not conflict with ``KEY SHARE``: the
lease tick never waits for the room writer and the two cannot deadlock (#25; with ``FOR SHARE``
the renewal and a batch of fenced writes locked the same rows in different orders). Fenced
batches also lock in room order, and every multi-row lease update locks its rows in room order
first, so lock order is one order everywhere.

Deadlock and serialization failures (SQLSTATE ``40P01``/``40001``) are temporary: they become
:class:`StoreUnavailable`, and the lease and room-batch writes retry them a few times inside the
store (:meth:`SqlCore._retry_conflicts`) so one such failure never costs a lease tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import event, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orchestrator.store.base import (
    DEFAULT_PAYLOAD_BYTES,
    DEFAULT_TEXT_BYTES,
    FencedOut,
    StoreError,
    StoreUnavailable,
)
from orchestrator.store.sql_schema import (
    _INBOX_CHUNK,
    _MIGRATIONS,
    SCHEMA_VERSION,
    leases,
    schema_version,
    store_meta,
)

__all__ = ["DEFAULT_PAYLOAD_BYTES", "DEFAULT_TEXT_BYTES", "DEFAULT_URL", "SqlCore"]

log = structlog.get_logger("orchestrator.store.sql")

DEFAULT_URL = "sqlite+aiosqlite:///var/liveorch.db"
_BUSY_TIMEOUT_MS = 5000
# deadlock_detected, serialization_failure: the server rolled the transaction back; rerunning it
# is safe and usually succeeds at once.
_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
_CONFLICT_ATTEMPTS = 4
_FENCE_CHUNK = _INBOX_CHUNK  # rooms per fence-check statement (bind-parameter limits)


_T = TypeVar("_T")


class _TransactionConflict(StoreUnavailable):
    """PostgreSQL aborted the transaction (deadlock or serialization failure); rerun it."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SqlCore:
    """SQLAlchemy 2 Core async (aiosqlite or asyncpg): the engine and its transactions.

    ``schema`` (PostgreSQL only) puts every table in that schema through the connection's
    ``search_path`` and tags connections with ``application_name=liveorch:<schema>``; it exists
    so tests and side-by-side deployments can share one database.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        clock: Callable[[], datetime] | None = None,
        echo: bool = False,
        schema: str | None = None,
        max_payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
        max_text_bytes: int = DEFAULT_TEXT_BYTES,
    ) -> None:
        """``max_payload_bytes`` caps a stored callback payload, ``max_text_bytes`` other
        stored free text (transition cause/detail, alert message, command reply)."""
        self._url = make_url(url)
        self._max_payload = max_payload_bytes
        self._max_text = max_text_bytes
        self._clock = clock or _utcnow
        self._echo = echo
        self._schema = schema
        self._backend = self._url.get_backend_name()
        if self._backend not in ("sqlite", "postgresql"):
            raise StoreError(f"unsupported store backend {self._backend!r} (sqlite or postgresql)")
        self._is_sqlite = self._backend == "sqlite"
        self._insert = sqlite_dialect.insert if self._is_sqlite else pg_dialect.insert
        self._engine: AsyncEngine | None = None
        self._read_engine: AsyncEngine | None = None
        # SQLite has one writer at a time anyway; queueing writers here is FIFO-fair and spares
        # them the busy handler's sleep-and-retry. busy_timeout still covers other processes.
        self._write_lock: asyncio.Lock | None = None
        self._save_room_stmt: Any = None
        self._sla_stmt: Any = None
        database = self._url.database or ""
        self._one_connection = self._is_sqlite and (
            database in ("", ":memory:") or "mode=memory" in database
        )

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The engine (for pool metrics); raises StoreError before ``open()``."""
        if self._engine is None:
            raise StoreError("store is not open")
        return self._engine

    async def open(self) -> None:
        if self._engine is not None:
            return
        connect_args: dict[str, Any] = {}
        if self._is_sqlite:
            try:
                await asyncio.to_thread(self._prepare_sqlite_file)
            except (OSError, sqlite3.Error) as e:
                raise StoreError(
                    f"cannot create the SQLite store {self._url.database}: "
                    f"{getattr(e, 'strerror', None) or e}"
                ) from e
            connect_args["timeout"] = _BUSY_TIMEOUT_MS / 1000
        else:
            settings = {
                "application_name": f"liveorch:{self._schema}" if self._schema else "liveorch"
            }
            if self._schema:
                settings["search_path"] = self._schema
            connect_args["server_settings"] = settings
        engine = create_async_engine(
            self._url,
            echo=self._echo,
            pool_pre_ping=True,
            hide_parameters=True,  # parameters can hold stream URLs; keep them out of errors
            connect_args=connect_args,
        )
        if self._is_sqlite:
            _install_sqlite_hooks(engine)
            self._write_lock = asyncio.Lock()
        self._engine = engine
        self._read_engine = engine.execution_options(liveorch_begin="DEFERRED")
        try:
            await self._migrate()
        except BaseException:
            await engine.dispose()
            self._engine = self._read_engine = None
            raise
        log.info("store_opened", backend=self._backend, schema_version=SCHEMA_VERSION)

    async def close(self) -> None:
        if self._engine is None:
            return
        engine, self._engine, self._read_engine = self._engine, None, None
        await engine.dispose()
        log.info("store_closed", backend=self._backend)

    def _prepare_sqlite_file(self) -> None:
        database = self._url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        path = Path(database)
        missing: list[Path] = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)  # callbacks and room state are not for other local users
        # Switch to WAL once, here: the mode is stored in the file, so the per-connection pragma
        # below is then a no-op. Changing it needs an exclusive lock, which fails at once (no
        # busy wait) when another connection is inside a transaction, e.g. a second instance
        # migrating; retry that briefly.
        for attempt in range(50):
            try:
                with contextlib.closing(
                    sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000)
                ) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)

    async def _migrate(self) -> None:
        async with self._write("open") as conn:
            if not self._is_sqlite:
                # Two instances starting at once: the second waits here, then sees the version.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                    {"k": f"liveorch.migrate:{self._schema or ''}"},
                )
                if self._schema:
                    quoted = conn.dialect.identifier_preparer.quote_identifier(self._schema)
                    await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
            await conn.run_sync(lambda c: schema_version.create(c, checkfirst=True))
            current = (await conn.execute(select(func.max(schema_version.c.version)))).scalar()
            current = current or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"store schema is version {current}, newer than this build "
                    f"({SCHEMA_VERSION}); upgrade liveorch"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await conn.run_sync(_MIGRATIONS[version - 1])
                await conn.execute(
                    schema_version.insert().values(version=version, applied_at=self._clock())
                )
                log.info("store_migrated", version=version)

    # --- transaction helpers ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _errors(self, op: str) -> AsyncIterator[None]:
        try:
            yield
        except StoreError:
            raise
        except sa_exc.StatementError as e:
            raise self._translate(op, e.orig if e.orig is not None else e) from e
        except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as e:
            raise self._translate(op, e) from e

    def _translate(self, op: str, orig: BaseException) -> StoreError:
        # Driver text only (never the SQL or its parameters), shortened.
        detail = f"{type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}"[:300]
        if not self._is_sqlite and _sqlstate(orig) in _CONFLICT_SQLSTATES:
            return _TransactionConflict(
                f"store {op} failed: transaction conflict ({detail}); temporary, retry"
            )
        if not self._is_sqlite and _is_connection_loss(orig):
            return StoreUnavailable(
                f"store {op} failed: PostgreSQL unreachable ({detail}); temporary, retry later"
            )
        return StoreError(f"store {op} failed: {detail}")

    @contextlib.asynccontextmanager
    async def _write(self, op: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        engine = self.engine
        async with self._errors(op):
            if self._write_lock is not None:
                async with self._write_lock, engine.begin() as conn:
                    yield conn
            else:
                async with engine.begin() as conn:
                    yield conn

    async def _retry_conflicts(self, op: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``attempt`` (one whole write transaction) again after a deadlock/serialization
        failure, a few times; the last failure propagates as :class:`StoreUnavailable`."""
        for n in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                return await attempt()
            except _TransactionConflict as exc:
                if n == _CONFLICT_ATTEMPTS:
                    raise
                log.warning("store_conflict_retry", op=op, attempt=n, error=str(exc))
                await asyncio.sleep(0.01 * n)  # back off so the other transaction can finish
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _read(self, op: str) -> AsyncIterator[AsyncConnection]:
        engine = self._read_engine
        if engine is None:
            raise StoreError("store is not open")
        if self._one_connection and self._write_lock is not None:
            # An in-memory database lives on one shared connection: readers must queue too.
            async with self._errors(op), self._write_lock, engine.connect() as conn:
                yield conn
        else:
            async with self._errors(op), engine.connect() as conn:
                yield conn

    async def _check_fence(self, conn: AsyncConnection, room_id: str, fence: int | None) -> None:
        if fence is None:
            return
        fenced = (await self._check_fences(conn, {room_id: fence})).get(room_id)
        if fenced is not None:
            raise fenced

    async def _check_fences(
        self, conn: AsyncConnection, fences: dict[str, int]
    ) -> dict[str, FencedOut]:
        """Lock the rooms' lease rows ``FOR KEY SHARE`` in room order (one statement) and return
        the rooms whose fence no longer holds (see the module docstring for why this suffices)."""
        if not fences:
            return {}
        wanted = sorted(fences)
        found: dict[str, Any] = {}
        for start in range(0, len(wanted), _FENCE_CHUNK):
            chunk = wanted[start : start + _FENCE_CHUNK]
            result = await conn.execute(
                select(leases.c.room_id, leases.c.owner, leases.c.fence)
                .where(leases.c.room_id.in_(chunk))
                .order_by(leases.c.room_id)
                .with_for_update(read=True, key_share=True)
            )
            found.update((row.room_id, row) for row in result)
        out: dict[str, FencedOut] = {}
        for room_id in wanted:
            fence = fences[room_id]
            row = found.get(room_id)
            if row is None or row.fence != fence or not row.owner:
                current = "none" if row is None else f"{row.fence} owner={row.owner or '-'}"
                log.warning("store_fenced_out", room_id=room_id, fence=fence, current=current)
                out[room_id] = FencedOut(
                    f"room {room_id}: fence {fence} no longer holds the lease ({current})"
                )
        return out

    # --- readiness ----------------------------------------------------------------------

    async def ping(self) -> None:
        stmt = self._insert(store_meta).values(key="ping", value=self._clock().isoformat())
        stmt = stmt.on_conflict_do_update(
            index_elements=[store_meta.c.key], set_={"value": stmt.excluded.value}
        )
        async with self._write("ping") as conn:
            await conn.execute(stmt)


def _sqlstate(orig: BaseException) -> str | None:
    """The SQLSTATE of a driver error (the asyncpg adapter keeps it on the error or its cause)."""
    seen: BaseException | None = orig
    for _ in range(4):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            return code
        inner = getattr(seen, "orig", None)
        seen = inner if isinstance(inner, BaseException) else seen.__cause__
    return None


def _is_connection_loss(orig: BaseException) -> bool:
    if isinstance(orig, OSError | TimeoutError | ConnectionError):
        return True
    if isinstance(orig, sa_exc.DBAPIError):
        if orig.connection_invalidated:
            return True
        orig = orig.orig if orig.orig is not None else orig
    if isinstance(
        orig, sa_exc.InterfaceError | sa_exc.OperationalError | sa_exc.DisconnectionError
    ):
        return True
    name = type(orig).__name__
    # asyncpg-backed adapter classes (InterfaceError, OperationalError, connection-class errors)
    return name in {
        "InterfaceError",
        "OperationalError",
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "ConnectionFailureError",
        "TooManyConnectionsError",
        "AdminShutdownError",
    }


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    """Per-connection pragmas, and our own BEGIN so writers take the lock up front.

    ``BEGIN IMMEDIATE`` for writes: a deferred transaction that reads and then writes can fail
    with SQLITE_BUSY when another writer committed in between; taking the write lock first makes
    the busy timeout apply instead. Reads use plain (deferred) ``BEGIN``.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # WAL+NORMAL: a process kill loses nothing committed; power loss may lose the last
        # commits but never corrupts (see module docstring for why that is acceptable).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("liveorch_begin", "IMMEDIATE")
        conn.exec_driver_sql("BEGIN" if mode == "DEFERRED" else "BEGIN IMMEDIATE")
