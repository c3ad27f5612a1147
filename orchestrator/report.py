"""`liveorch report --since 7d [--room R] [--format table|csv|json]`: SLA per room and day."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from orchestrator.settings import Settings
from orchestrator.store.base import SlaRow

_SINCE = re.compile(r"^(\d+)([dhw])$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", default="7d", help="7d, 24h, 2w or a date YYYY-MM-DD (default 7d)"
    )
    parser.add_argument("--room", default=None, metavar="ID", help="only this room id")
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json"),
        default="table",
        help="output format (default table)",
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="SQLAlchemy store URL (default: [store] url of the config), e.g. the demo's "
        "sqlite+aiosqlite:///DIR/demo.db",
    )


def parse_since(value: str, today: date) -> date:
    m = _SINCE.match(value)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        days = {"d": n, "h": -(-n // 24), "w": 7 * n}[unit]
        return today - timedelta(days=max(days - 1, 0))
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since {value!r}: use 7d, 24h, 2w or YYYY-MM-DD") from None


def rows_to_dicts(rows: list[SlaRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        pct = 100.0 * r.live_s / r.scheduled_s if r.scheduled_s else None
        out.append(
            {
                "room_id": r.room_id,
                "day": r.day.isoformat(),
                "scheduled_s": round(r.scheduled_s, 1),
                "live_s": round(r.live_s, 1),
                "sla_pct": None if pct is None else round(pct, 2),  # as on the status page
                "drops": r.drops,
                "recoveries": r.recoveries,
                "mean_recovery_s": round(r.recovery_s_total / r.recoveries, 1)
                if r.recoveries
                else None,
                "max_recovery_s": round(r.recovery_s_max, 1) if r.recoveries else None,
            }
        )
    return out


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    cols = [
        "room_id",
        "day",
        "scheduled_s",
        "live_s",
        "sla_pct",
        "drops",
        "recoveries",
        "mean_recovery_s",
        "max_recovery_s",
    ]
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    table = [cols] + [["-" if r[c] is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite store file that does not exist (opening it would create it)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    db = parsed.database
    if not parsed.drivername.startswith("sqlite") or not db or db == ":memory:":
        return None
    return None if Path(db).exists() else db


async def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    """Print the report; 2 when the store does not exist (a typo must not create an empty one)."""
    from orchestrator.store.sql import SqlStore

    try:
        since = parse_since(args.since, datetime.now(UTC).date())
    except ValueError as exc:  # a usage error: exit 2 like every other command
        print(f"liveorch: {exc}", file=sys.stderr)
        return 2
    url = getattr(args, "store", None) or settings.store.url
    missing = missing_sqlite_file(url)
    if missing is not None:
        print(f"liveorch: no store at {missing} (see --store or [store] url)", file=sys.stderr)
        return 2
    store = SqlStore(url)
    await store.open()
    try:
        rows = await store.sla(since, args.room)
    finally:
        await store.close()
    print(render(rows_to_dicts(rows), args.format))
    return 0
