"""The SQL schema shared by the ``sql_*`` role modules: column types, tables, migrations.

Migrations are append-only (``_MIGRATIONS``); the ``Table`` objects describe the latest shape.
``jobs_seen`` stays although nothing writes it any more: old databases have it, retention still
prunes it, and dropping a table is a migration of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

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
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.engine import Connection

__all__ = ["SCHEMA_VERSION", "metadata", "schema_version"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# SQLite allows 32766 bound parameters per statement; inbox rows have 7 columns.
_INBOX_CHUNK = 1000


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

tenant_sweeps = Table(
    "tenant_sweeps",
    metadata,
    Column(
        "sweep_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
        autoincrement=True,
    ),
    Column("reader", String(128), nullable=False),
    Column("fence", BigInteger, nullable=False),
    Column("taken_at", UtcDateTime, nullable=False),
    Column("jobs_seen", Integer, nullable=False),
    Column("jobs", _Json, nullable=False),  # {room_id: [job observation, ...]}
)  # fmt: skip

SWEEPS_KEPT = 3
"""Sweeps kept (the newest is what owners read; older ones only help a slow reader of it)."""


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


def _migration_2(conn: Connection) -> None:
    """The tenant reader's sweeps (several instances, one tenant listing: issue #25)."""
    metadata.create_all(conn, tables=[tenant_sweeps], checkfirst=False)


# Applied in order, each once, all pending ones in one transaction. Append only.
_MIGRATIONS: list[Callable[[Connection], None]] = [_migration_1, _migration_2]
SCHEMA_VERSION = len(_MIGRATIONS)
