"""SQLAlchemy Core implementation of the Store protocol for SQLite and PostgreSQL.

:class:`SqlStore` is one object over one engine, assembled from a module per role:

* ``sql_core``: engine, transactions, error translation, fencing, readiness (durability and
  fencing rules are described there);
* ``sql_schema``: column types, tables, migrations;
* ``sql_rooms``: room state, transitions, start intents;
* ``sql_inbox``: callback inbox, command replies, retention;
* ``sql_records``: schedule overrides, alerts, SLA;
* ``sql_leases``: leases between instances;
* ``sql_sweeps``: the tenant reader's sweeps (one tenant listing for the fleet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.store.base import Store, StoreUnavailable
from orchestrator.store.sql_core import DEFAULT_PAYLOAD_BYTES, DEFAULT_TEXT_BYTES, DEFAULT_URL
from orchestrator.store.sql_inbox import SqlInbox
from orchestrator.store.sql_leases import SqlLeases
from orchestrator.store.sql_records import SqlRecords
from orchestrator.store.sql_rooms import SqlRooms
from orchestrator.store.sql_schema import SCHEMA_VERSION, metadata, schema_version
from orchestrator.store.sql_sweeps import SqlSweeps

__all__ = [
    "DEFAULT_PAYLOAD_BYTES",
    "DEFAULT_TEXT_BYTES",
    "DEFAULT_URL",
    "SCHEMA_VERSION",
    "SqlStore",
    "StoreUnavailable",
    "metadata",
    "schema_version",
]


class SqlStore(SqlRooms, SqlInbox, SqlRecords, SqlLeases, SqlSweeps):
    """The Store protocol over SQLAlchemy 2 Core async (aiosqlite or asyncpg).

    ``schema`` (PostgreSQL only) puts every table in that schema through the connection's
    ``search_path`` and tags connections with ``application_name=liveorch:<schema>``; it exists
    so tests and side-by-side deployments can share one database.
    """


if TYPE_CHECKING:  # mypy proves the class implements every role

    def _implements(store: SqlStore) -> Store:
        return store
