"""SQLAlchemy Core implementation of the Store protocol for SQLite and PostgreSQL.

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
(``FOR SHARE`` on PostgreSQL, so a takeover waits for our commit; SQLite's ``BEGIN IMMEDIATE``
serialises everything) and raises :class:`FencedOut` before writing if the fence moved or the
lease was released. Taking a free or expired lease increments its fence; releasing keeps the row
(owner ``''``) so fences stay monotonic per room.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    case,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orchestrator.bounds import cap_json, cap_text
from orchestrator.store.base import (
    FencedOut,
    InboxItem,
    Lease,
    PruneCutoffs,
    RoomWrite,
    SlaRow,
    StartIntent,
    StoreError,
    TransitionRecord,
)
from orchestrator.store.leases import MEMBER_PREFIX

__all__ = ["DEFAULT_URL", "SCHEMA_VERSION", "SqlStore", "StoreUnavailable"]

log = structlog.get_logger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///var/liveorch.db"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BUSY_TIMEOUT_MS = 5000
# SQLite allows 32766 bound parameters per statement; inbox rows have 7 columns.
_INBOX_CHUNK = 1000
# Rows deleted per prune transaction: a big backlog is pruned in steps, so callbacks and
# room writes queue behind the prune for milliseconds, not for one long transaction.
_PRUNE_CHUNK = 5000
# Defaults of the caps on stored free text from outside (settings [limits] override them).
DEFAULT_PAYLOAD_BYTES = 8192
DEFAULT_TEXT_BYTES = 16384


# What replay needs to route a stored callback: kept first when a payload must be cut.
_PAYLOAD_FIRST = (
    "event_type",
    "message",
    "hw_time",
    "job_id",
    "room_id",
    "state",
    "output_url",
    "reply_id",
    "scene_script_name",
    "shoot_script_sequence_no",
)


def _fit_opt(value: str | None, width: int) -> str | None:
    return None if value is None else _fit(value, width)


def _fit(value: str, width: int) -> str:
    """An identifier from outside, made to fit its column (PostgreSQL refuses a longer value,
    which failed a whole group commit): cut, with a hash of the whole so distinct values
    stay distinct."""
    if len(value) <= width:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[: width - 18]}~{digest}"


class StoreUnavailable(StoreError):
    """Temporary: the database connection was lost or refused (PostgreSQL). Retry later.

    Subclasses StoreError so existing ``except StoreError`` handlers still catch it; ``temporary``
    lets a retry policy tell it apart without importing this module.
    """

    temporary = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


# --- column types -----------------------------------------------------------------------------


class UtcDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both databases.

    SQLite has no time zones: we store UTC as fixed-width text, which also sorts correctly.
    Naive datetimes are refused: guessing their zone is how a window silently shifts by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store; pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_Json = JSON().with_variant(pg_dialect.JSONB(), "postgresql")

# --- schema (the latest shape; migrations below create/alter it) -----------------------------

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime, nullable=False),
)
store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
rooms = Table(
    "rooms",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("state", _Json, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("fence", BigInteger, nullable=True),
)
transitions = Table(
    "transitions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("room_id", String(128), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("from_state", String(32), nullable=False),
    Column("to_state", String(32), nullable=False),
    Column("event", String(64), nullable=False),
    Column("cause", Text, nullable=False),
    Column("detail", _Json, nullable=False),
    Column("fence", BigInteger, nullable=True),
    Index("ix_transitions_room_at", "room_id", "at"),
    Index("ix_transitions_at", "at"),
)
jobs_seen = Table(
    "jobs_seen",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("room_id", String(128), nullable=False),
    Column("state", String(32), nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Index("ix_jobs_seen_room", "room_id"),
)
start_intents = Table(
    "start_intents",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("window_key", String(128), primary_key=True),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("job_id", String(128), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("fence", BigInteger, nullable=True),
)
inbox = Table(
    "inbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("dedupe_key", String(512), nullable=False, unique=True),
    Column("room_id", String(128), nullable=True),
    Column("job_id", String(128), nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("payload", _Json, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("event_time", UtcDateTime, nullable=True),
    Column("processed", Boolean, nullable=False, default=False),
    Column("processed_at", UtcDateTime, nullable=True),
    Index("ix_inbox_pending", "processed", "id"),
)
command_replies = Table(
    "command_replies",
    metadata,
    Column("id", String(256), primary_key=True),
    Column("reply", _Json, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)
schedule_overrides = Table(
    "schedule_overrides",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("overrides", _Json, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
alerts = Table(
    "alerts",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("message", Text, nullable=False),
    Column("raised_at", UtcDateTime, nullable=False),
    Column("cleared_at", UtcDateTime, nullable=True),
)
sla_daily = Table(
    "sla_daily",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("scheduled_s", Float, nullable=False),
    Column("live_s", Float, nullable=False),
    Column("drops", Integer, nullable=False),
    Column("recoveries", Integer, nullable=False),
    Column("recovery_s_total", Float, nullable=False),
    Column("recovery_s_max", Float, nullable=False),
)
leases = Table(
    "leases",
    metadata,
    Column("room_id", String(128), primary_key=True),
    Column("owner", String(128), nullable=False),  # '' = free (released)
    Column("fence", BigInteger, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index("ix_leases_owner", "owner"),
)


def _migration_1(conn: Connection) -> None:
    """Initial tables. Later migrations must be explicit DDL (ALTER …), not the Table objects."""
    first = [
        store_meta,
        rooms,
        transitions,
        jobs_seen,
        start_intents,
        inbox,
        command_replies,
        schedule_overrides,
        alerts,
        sla_daily,
        leases,
    ]
    metadata.create_all(conn, tables=first, checkfirst=False)


# Applied in order, each once, all pending ones in one transaction. Append only.
_MIGRATIONS: list[Callable[[Connection], None]] = [_migration_1]
SCHEMA_VERSION = len(_MIGRATIONS)


# --- the store --------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SqlStore:
    """The Store protocol over SQLAlchemy 2 Core async (aiosqlite or asyncpg).

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
        row = (
            await conn.execute(
                select(leases.c.owner, leases.c.fence)
                .where(leases.c.room_id == room_id)
                .with_for_update(read=True)
            )
        ).first()
        if row is None or row.fence != fence or not row.owner:
            current = "none" if row is None else f"{row.fence} owner={row.owner or '-'}"
            log.warning("store_fenced_out", room_id=room_id, fence=fence, current=current)
            raise FencedOut(f"room {room_id}: fence {fence} no longer holds the lease ({current})")

    # --- readiness ----------------------------------------------------------------------

    async def ping(self) -> None:
        stmt = self._insert(store_meta).values(key="ping", value=self._clock().isoformat())
        stmt = stmt.on_conflict_do_update(
            index_elements=[store_meta.c.key], set_={"value": stmt.excluded.value}
        )
        async with self._write("ping") as conn:
            await conn.execute(stmt)

    # --- rooms --------------------------------------------------------------------------

    async def load_rooms(self) -> dict[str, Mapping[str, Any]]:
        async with self._read("load_rooms") as conn:
            result = await conn.execute(select(rooms.c.room_id, rooms.c.state))
            return {row.room_id: row.state for row in result}

    async def save_room(
        self,
        room_id: str,
        state: Mapping[str, Any],
        *,
        fence: int | None = None,
        transition: TransitionRecord | None = None,
    ) -> None:
        # state and its audit row in one transaction: the one-room case of save_rooms
        [fenced] = await self.save_rooms([RoomWrite(room_id, state, fence, transition)])
        if fenced is not None:
            raise fenced

    def _room_upsert(self) -> Any:
        # Built once, executed with parameters: constructing the upsert with .values() took
        # ~half of save_room's CPU (every room saves on each poll observation).
        if self._save_room_stmt is None:
            upsert = self._insert(rooms)
            self._save_room_stmt = upsert.on_conflict_do_update(
                index_elements=[rooms.c.room_id],
                set_={
                    "state": upsert.excluded.state,
                    "updated_at": upsert.excluded.updated_at,
                    "fence": upsert.excluded.fence,
                },
            )
        return self._save_room_stmt

    async def save_rooms(self, writes: Sequence[RoomWrite]) -> list[FencedOut | None]:
        results: list[FencedOut | None] = []
        if not writes:
            return results
        now = self._clock()
        rows: dict[str, dict[str, Any]] = {}  # one row per room: the last write wins
        audit: list[dict[str, Any]] = []
        async with self._write("save_rooms") as conn:
            for w in writes:
                try:
                    await self._check_fence(conn, w.room_id, w.fence)
                except FencedOut as exc:
                    results.append(exc)
                    continue
                results.append(None)
                rows.pop(w.room_id, None)
                rows[w.room_id] = {
                    "room_id": w.room_id, "state": dict(w.state), "updated_at": now,
                    "fence": w.fence,
                }  # fmt: skip
                if w.transition is not None:
                    audit.append(self._transition_row(w.transition, w.fence))
            if rows:
                await conn.execute(self._room_upsert(), list(rows.values()))
            if audit:
                await conn.execute(transitions.insert(), audit)
        return results

    async def delete_room(self, room_id: str) -> None:
        async with self._write("delete_room") as conn:
            await conn.execute(delete(rooms).where(rooms.c.room_id == room_id))

    # --- transitions --------------------------------------------------------------------

    def _transition_row(self, rec: TransitionRecord, fence: int | None) -> dict[str, Any]:
        # the cause and detail can carry cloud error text: bounded like any outside text
        return {
            "room_id": rec.room_id, "at": rec.at, "from_state": rec.from_state[:32],
            "to_state": rec.to_state[:32], "event": rec.event[:64],
            "cause": cap_text(rec.cause, self._max_text),
            "detail": cap_json(dict(rec.detail), self._max_text), "fence": fence,
        }  # fmt: skip

    async def append_transition(self, rec: TransitionRecord, *, fence: int | None = None) -> None:
        async with self._write("append_transition") as conn:
            await self._check_fence(conn, rec.room_id, fence)
            await conn.execute(transitions.insert(), self._transition_row(rec, fence))

    async def transitions(
        self, room_id: str | None = None, *, since: datetime | None = None, limit: int = 100
    ) -> list[TransitionRecord]:
        """The latest ``limit`` transitions (at or after ``since``), returned oldest first."""
        stmt = select(transitions).order_by(transitions.c.at.desc(), transitions.c.id.desc())
        if room_id is not None:
            stmt = stmt.where(transitions.c.room_id == room_id)
        if since is not None:
            stmt = stmt.where(transitions.c.at >= since)
        async with self._read("transitions") as conn:
            result = await conn.execute(stmt.limit(limit))
            rows = list(result)
        return [
            TransitionRecord(
                room_id=r.room_id,
                at=r.at,
                from_state=r.from_state,
                to_state=r.to_state,
                event=r.event,
                cause=r.cause,
                detail=r.detail,
            )
            for r in reversed(rows)
        ]

    # --- jobs seen ----------------------------------------------------------------------

    async def record_job(self, room_id: str, job_id: str, state: str, at: datetime) -> None:
        """Upsert; an observation older than the stored one does not overwrite it (reordering)."""
        stmt = self._insert(jobs_seen).values(
            job_id=job_id, room_id=room_id, state=state, first_seen=at, last_seen=at
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[jobs_seen.c.job_id],
            set_={
                "room_id": stmt.excluded.room_id,
                "state": stmt.excluded.state,
                "last_seen": stmt.excluded.last_seen,
            },
            where=jobs_seen.c.last_seen <= stmt.excluded.last_seen,
        )
        async with self._write("record_job") as conn:
            await conn.execute(stmt)

    async def jobs(self, room_id: str) -> list[tuple[str, str, datetime, datetime]]:
        """(job_id, state, first_seen, last_seen) for a room, newest first. Not in the protocol."""
        stmt = (
            select(jobs_seen)
            .where(jobs_seen.c.room_id == room_id)
            .order_by(jobs_seen.c.last_seen.desc())
        )
        async with self._read("jobs") as conn:
            return [
                (r.job_id, r.state, r.first_seen, r.last_seen) for r in await conn.execute(stmt)
            ]

    # --- start intents ------------------------------------------------------------------

    async def put_start_intent(self, intent: StartIntent, *, fence: int | None = None) -> bool:
        stmt = (
            self._insert(start_intents)
            .values(
                room_id=intent.room_id,
                window_key=intent.window_key,
                attempt=intent.attempt,
                created_at=intent.created_at,
                updated_at=intent.created_at,
                job_id=intent.job_id,
                outcome=intent.outcome,
                fence=fence,
            )
            .on_conflict_do_nothing()
            .returning(start_intents.c.attempt)
        )
        async with self._write("put_start_intent") as conn:
            await self._check_fence(conn, intent.room_id, fence)
            return (await conn.execute(stmt)).first() is not None

    async def resolve_start_intent(
        self, room_id: str, window_key: str, attempt: int, *, outcome: str, job_id: str | None
    ) -> None:
        """Set the outcome; ``job_id=None`` keeps a job id already recorded."""
        values: dict[str, Any] = {"outcome": outcome, "updated_at": self._clock()}
        if job_id is not None:
            values["job_id"] = job_id
        stmt = (
            update(start_intents)
            .where(
                start_intents.c.room_id == room_id,
                start_intents.c.window_key == window_key,
                start_intents.c.attempt == attempt,
            )
            .values(**values)
        )
        async with self._write("resolve_start_intent") as conn:
            if (await conn.execute(stmt)).rowcount != 1:
                raise StoreError(
                    f"no start intent for room {room_id} window {window_key} attempt {attempt}"
                )

    async def start_intents(self, room_id: str, *, pending_only: bool = False) -> list[StartIntent]:
        stmt = (
            select(start_intents)
            .where(start_intents.c.room_id == room_id)
            .order_by(
                start_intents.c.created_at, start_intents.c.window_key, start_intents.c.attempt
            )
        )
        if pending_only:
            stmt = stmt.where(start_intents.c.outcome == "pending")
        async with self._read("start_intents") as conn:
            result = await conn.execute(stmt)
            return [
                StartIntent(
                    room_id=r.room_id,
                    window_key=r.window_key,
                    attempt=r.attempt,
                    created_at=r.created_at,
                    job_id=r.job_id,
                    outcome=r.outcome,
                )
                for r in result
            ]

    # --- inbox --------------------------------------------------------------------------

    async def inbox_append(self, items: Sequence[InboxItem]) -> list[bool]:
        """One transaction for the whole batch (group commit): the caller batches, we commit once.

        Duplicates (already stored, or repeated within the batch) are skipped by
        ``ON CONFLICT DO NOTHING``; the returned flags say which items were new.
        """
        if not items:
            return []
        # Everything here came from a caller: identifiers are made to fit their columns and the
        # payload is capped (2,000 x 30 KB callbacks once made a 248 MB SQLite file).
        rows = [
            {
                "dedupe_key": _fit(it.dedupe_key, 512),
                "room_id": _fit_opt(it.room_id, 128),
                "job_id": _fit_opt(it.job_id, 128),
                "event_type": _fit(it.event_type, 64),
                "payload": cap_json(dict(it.payload), self._max_payload, first=_PAYLOAD_FIRST),
                "received_at": it.received_at,
                "event_time": it.event_time,
                "processed": False,
            }
            for it in items
        ]
        stmt = self._insert(inbox).on_conflict_do_nothing().returning(inbox.c.dedupe_key)
        inserted: set[str] = set()
        async with self._write("inbox_append") as conn:
            for start in range(0, len(rows), _INBOX_CHUNK):
                result = await conn.execute(stmt, rows[start : start + _INBOX_CHUNK])
                inserted.update(result.scalars())
        flags: list[bool] = []
        for row in rows:
            new = row["dedupe_key"] in inserted
            inserted.discard(row["dedupe_key"])  # a repeat within the batch is a duplicate
            flags.append(new)
        return flags

    async def inbox_pending(self, limit: int = 1000) -> list[InboxItem]:
        stmt = select(inbox).where(inbox.c.processed.is_(False)).order_by(inbox.c.id).limit(limit)
        async with self._read("inbox_pending") as conn:
            result = await conn.execute(stmt)
            return [
                InboxItem(
                    dedupe_key=r.dedupe_key,
                    room_id=r.room_id,
                    job_id=r.job_id,
                    event_type=r.event_type,
                    payload=r.payload,
                    received_at=r.received_at,
                    event_time=r.event_time,
                    id=r.id,
                )
                for r in result
            ]

    async def inbox_done(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = self._clock()
        async with self._write("inbox_done") as conn:
            for start in range(0, len(ids), _INBOX_CHUNK):
                chunk = list(ids[start : start + _INBOX_CHUNK])
                await conn.execute(
                    update(inbox)
                    .where(inbox.c.id.in_(chunk), inbox.c.processed.is_(False))
                    .values(processed=True, processed_at=now)
                )

    async def inbox_done_keys(self, keys: Sequence[str]) -> None:
        """Like :meth:`inbox_done`, by the unique dedupe key: the live intake marks what it
        just handed to a room without reading pending rows back to learn their ids."""
        if not keys:
            return
        now = self._clock()
        async with self._write("inbox_done_keys") as conn:
            for start in range(0, len(keys), _INBOX_CHUNK):
                chunk = [_fit(k, 512) for k in keys[start : start + _INBOX_CHUNK]]
                await conn.execute(
                    update(inbox)
                    .where(inbox.c.dedupe_key.in_(chunk), inbox.c.processed.is_(False))
                    .values(processed=True, processed_at=now)
                )

    async def prune(self, before: datetime) -> int:
        """Delete processed inbox rows, command replies and transitions older than ``before``.

        The one-cutoff form of :meth:`prune_older`, kept for callers and tests that have one
        horizon. Returns rows deleted."""
        counts = await self.prune_older(
            PruneCutoffs(inbox=before, replies=before, transitions=before), processed_only=True
        )
        return sum(counts.values())

    async def prune_older(
        self, cutoffs: PruneCutoffs, *, processed_only: bool = False
    ) -> dict[str, int]:
        c = cutoffs
        counts: dict[str, int] = {}
        if c.inbox is not None:
            cond = inbox.c.received_at < c.inbox
            if processed_only:
                cond = cond & inbox.c.processed.is_(True)
            counts["inbox"] = await self._prune_by_id("inbox", inbox, inbox.c.id, cond)
        if c.transitions is not None:
            counts["transitions"] = await self._prune_by_id(
                "transitions", transitions, transitions.c.id, transitions.c.at < c.transitions
            )
        plain: list[tuple[str, Table, Any]] = []
        if c.replies is not None:
            plain.append(("replies", command_replies, command_replies.c.at < c.replies))
        if c.jobs is not None:
            plain.append(("jobs", jobs_seen, jobs_seen.c.last_seen < c.jobs))
        if c.start_intents is not None:
            resolved = start_intents.c.outcome != "pending"
            old = start_intents.c.updated_at < c.start_intents
            plain.append(("start_intents", start_intents, resolved & old))
        if c.alerts is not None:
            cleared = alerts.c.cleared_at.is_not(None) & (alerts.c.cleared_at < c.alerts)
            plain.append(("alerts", alerts, cleared))
        if c.sla is not None:
            plain.append(("sla", sla_daily, sla_daily.c.day < c.sla))
        for name, table, cond in plain:
            async with self._write(f"prune_{name}") as conn:
                counts[name] = (await conn.execute(delete(table).where(cond))).rowcount
        return counts

    async def _prune_by_id(self, name: str, table: Table, id_col: Any, cond: Any) -> int:
        """Delete in chunks of ``_PRUNE_CHUNK`` rows, one transaction each (see there why)."""
        total = 0
        while True:
            chunk = select(id_col).where(cond).order_by(id_col).limit(_PRUNE_CHUNK)
            async with self._write(f"prune_{name}") as conn:
                ids = list((await conn.execute(chunk)).scalars())
                if ids:
                    await conn.execute(delete(table).where(id_col.in_(ids)))
            total += len(ids)
            if len(ids) < _PRUNE_CHUNK:
                return total

    # --- command replies ----------------------------------------------------------------

    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None:
        async with self._read("get_reply") as conn:
            stmt = select(command_replies.c.reply).where(
                command_replies.c.id == _fit(command_id, 256)
            )
            reply: Mapping[str, Any] | None = (await conn.execute(stmt)).scalar()
            return reply

    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool:
        stmt = (
            self._insert(command_replies)
            .values(id=_fit(command_id, 256), reply=cap_json(dict(reply), self._max_text), at=at)
            .on_conflict_do_nothing()
            .returning(command_replies.c.id)
        )
        async with self._write("put_reply") as conn:
            return (await conn.execute(stmt)).first() is not None

    # --- schedule overrides -------------------------------------------------------------

    async def get_overrides(self, room_id: str) -> Mapping[str, Any]:
        stmt = select(schedule_overrides.c.overrides).where(schedule_overrides.c.room_id == room_id)
        async with self._read("get_overrides") as conn:
            value: Mapping[str, Any] | None = (await conn.execute(stmt)).scalar()
            return value if value is not None else {}

    async def all_overrides(self) -> dict[str, Mapping[str, Any]]:
        async with self._read("all_overrides") as conn:
            rows = await conn.execute(
                select(schedule_overrides.c.room_id, schedule_overrides.c.overrides)
            )
            return {r.room_id: r.overrides for r in rows if r.overrides is not None}

    async def put_overrides(self, room_id: str, overrides: Mapping[str, Any]) -> None:
        stmt = self._insert(schedule_overrides).values(
            room_id=room_id, overrides=dict(overrides), updated_at=self._clock()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[schedule_overrides.c.room_id],
            set_={"overrides": stmt.excluded.overrides, "updated_at": stmt.excluded.updated_at},
        )
        async with self._write("put_overrides") as conn:
            await conn.execute(stmt)

    # --- alerts -------------------------------------------------------------------------

    async def set_alert(self, room_id: str, kind: str, message: str, at: datetime) -> None:
        """Raise (or re-raise) an alert; an alert already active keeps its original time."""
        stmt = self._insert(alerts).values(
            room_id=room_id,
            kind=kind,
            message=cap_text(message, self._max_text),
            raised_at=at,
            cleared_at=None,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[alerts.c.room_id, alerts.c.kind],
            set_={
                "message": stmt.excluded.message,
                "raised_at": case(
                    (alerts.c.cleared_at.is_(None), alerts.c.raised_at),
                    else_=stmt.excluded.raised_at,
                ),
                "cleared_at": None,
            },
        )
        async with self._write("set_alert") as conn:
            await conn.execute(stmt)

    async def clear_alert(self, room_id: str, kind: str, at: datetime) -> None:
        stmt = (
            update(alerts)
            .where(
                alerts.c.room_id == room_id, alerts.c.kind == kind, alerts.c.cleared_at.is_(None)
            )
            .values(cleared_at=at)
        )
        async with self._write("clear_alert") as conn:
            await conn.execute(stmt)

    async def active_alerts(self) -> list[tuple[str, str, str, datetime]]:
        """(room_id, kind, message, raised_at) of every uncleared alert."""
        stmt = (
            select(alerts.c.room_id, alerts.c.kind, alerts.c.message, alerts.c.raised_at)
            .where(alerts.c.cleared_at.is_(None))
            .order_by(alerts.c.room_id, alerts.c.kind)
        )
        async with self._read("active_alerts") as conn:
            return [(r.room_id, r.kind, r.message, r.raised_at) for r in await conn.execute(stmt)]

    # --- SLA ----------------------------------------------------------------------------

    async def add_sla(
        self,
        room_id: str,
        day: date,
        *,
        scheduled_s: float = 0.0,
        live_s: float = 0.0,
        drops: int = 0,
        recovery_s: float | None = None,
    ) -> None:
        """Accumulate; ``recovery_s`` counts one recovery of that duration."""
        rec = 0.0 if recovery_s is None else float(recovery_s)
        row = SlaRow(room_id, day, scheduled_s, live_s, drops,
                     0 if recovery_s is None else 1, rec, rec)  # fmt: skip
        await self.add_sla_rows([row])

    async def add_sla_rows(self, rows: Sequence[SlaRow]) -> None:
        if not rows:
            return
        keys = {(r.room_id, r.day) for r in rows}
        if len(keys) != len(rows):
            # one multi-row upsert may not touch a row twice (PostgreSQL refuses)
            raise ValueError("add_sla_rows: at most one row per room and day")
        async with self._write("add_sla_rows") as conn:
            await conn.execute(self._sla_upsert(), [_sla_params(r) for r in rows])

    def _sla_upsert(self) -> Any:
        if self._sla_stmt is None:
            stmt = self._insert(sla_daily)
            ex = stmt.excluded
            c = sla_daily.c
            self._sla_stmt = stmt.on_conflict_do_update(
                index_elements=[c.room_id, c.day],
                set_={
                    "scheduled_s": c.scheduled_s + ex.scheduled_s,
                    "live_s": c.live_s + ex.live_s,
                    "drops": c.drops + ex.drops,
                    "recoveries": c.recoveries + ex.recoveries,
                    "recovery_s_total": c.recovery_s_total + ex.recovery_s_total,
                    "recovery_s_max": case(
                        (ex.recovery_s_max > c.recovery_s_max, ex.recovery_s_max),
                        else_=c.recovery_s_max,
                    ),
                },
            )
        return self._sla_stmt

    async def sla(self, since: date, room_id: str | None = None) -> list[SlaRow]:
        stmt = select(sla_daily).where(sla_daily.c.day >= since)
        if room_id is not None:
            stmt = stmt.where(sla_daily.c.room_id == room_id)
        stmt = stmt.order_by(sla_daily.c.day, sla_daily.c.room_id)
        async with self._read("sla") as conn:
            return [
                SlaRow(
                    room_id=r.room_id,
                    day=r.day,
                    scheduled_s=r.scheduled_s,
                    live_s=r.live_s,
                    drops=r.drops,
                    recoveries=r.recoveries,
                    recovery_s_total=r.recovery_s_total,
                    recovery_s_max=r.recovery_s_max,
                )
                for r in await conn.execute(stmt)
            ]

    # --- leases -------------------------------------------------------------------------

    async def acquire_leases(
        self,
        owner: str,
        room_ids: Sequence[str],
        *,
        ttl_s: float,
        now: datetime,
        max_rooms: int | None = None,
    ) -> list[Lease]:
        """Renew ours, then take free/expired ones (fence + 1) up to ``max_rooms``; one transaction.

        Returns the leases ``owner`` holds among ``room_ids`` afterwards, sorted by room id.
        ``max_rooms`` counts every unexpired room lease of ``owner`` (membership keys excluded).
        Expiry is judged by the caller's ``now``: keep ``ttl_s`` well above clock skew.
        On PostgreSQL takeover candidates are locked ``FOR UPDATE SKIP LOCKED`` (in room order),
        so two instances acquiring at once take disjoint rooms instead of waiting on each other.
        """
        if not owner:
            raise StoreError("lease owner must be a non-empty string")
        wanted = sorted(set(room_ids))
        if not wanted:
            return []
        expires = now + timedelta(seconds=ttl_s)
        async with self._write("acquire_leases") as conn:
            for start in range(0, len(wanted), _INBOX_CHUNK):
                chunk = wanted[start : start + _INBOX_CHUNK]
                await conn.execute(
                    self._insert(leases).on_conflict_do_nothing(),
                    [{"room_id": r, "owner": "", "fence": 0, "expires_at": _EPOCH} for r in chunk],
                )
            # renew ours (an expired lease nobody took is still ours: its fence did not move)
            await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.room_id.in_(wanted))
                .values(expires_at=expires)
            )
            capacity: int | None = None
            if max_rooms is not None:
                held = (
                    await conn.execute(
                        select(func.count())
                        .select_from(leases)
                        .where(
                            leases.c.owner == owner,
                            leases.c.expires_at > now,
                            ~leases.c.room_id.startswith(MEMBER_PREFIX, autoescape=True),
                        )
                    )
                ).scalar_one()
                capacity = max(0, max_rooms - held)
            free = or_(leases.c.owner == "", leases.c.expires_at <= now)
            candidates = (
                select(leases.c.room_id)
                .where(leases.c.room_id.in_(wanted), leases.c.owner != owner, free)
                .order_by(leases.c.room_id)
                .with_for_update(skip_locked=True)
            )
            members = [r for r in wanted if r.startswith(MEMBER_PREFIX)]
            take = list(members)  # membership keys never count against max_rooms
            for room in (await conn.execute(candidates)).scalars():
                if room in members:
                    continue
                if capacity is not None and len(take) - len(members) >= capacity:
                    break
                take.append(room)
            taken = 0
            if take:
                taken = (
                    await conn.execute(
                        update(leases)
                        .where(leases.c.room_id.in_(take), leases.c.owner != owner, free)
                        .values(owner=owner, fence=leases.c.fence + 1, expires_at=expires)
                    )
                ).rowcount
            result = await conn.execute(
                select(leases)
                .where(leases.c.owner == owner, leases.c.room_id.in_(wanted))
                .order_by(leases.c.room_id)
            )
            held_now = [_lease(r) for r in result]
        if taken:
            log.info("leases_taken", owner=owner, taken=taken, held=len(held_now))
        return held_now

    async def release_leases(self, owner: str, room_ids: Sequence[str]) -> None:
        """Give rooms up now (the row and its fence stay, so the next holder's fence is higher)."""
        wanted = sorted(set(room_ids))
        if not wanted:
            return
        async with self._write("release_leases") as conn:
            await conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.room_id.in_(wanted))
                .values(owner="", expires_at=_EPOCH)
            )
        log.info("leases_released", owner=owner, rooms=len(wanted))

    async def leases(self) -> list[Lease]:
        """Every lease currently assigned to an owner (expired ones included), by room id."""
        stmt = select(leases).where(leases.c.owner != "").order_by(leases.c.room_id)
        async with self._read("leases") as conn:
            return [_lease(r) for r in await conn.execute(stmt)]


def _sla_params(r: SlaRow) -> dict[str, Any]:
    return {
        "room_id": r.room_id, "day": r.day, "scheduled_s": r.scheduled_s, "live_s": r.live_s,
        "drops": r.drops, "recoveries": r.recoveries, "recovery_s_total": r.recovery_s_total,
        "recovery_s_max": r.recovery_s_max,
    }  # fmt: skip


def _lease(row: Any) -> Lease:
    return Lease(room_id=row.room_id, owner=row.owner, fence=row.fence, expires_at=row.expires_at)


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
