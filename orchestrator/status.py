"""`liveorch status`: a table of rooms from a running daemon's ops API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import httpx

COLUMNS = ("room", "state", "order", "job", "since", "attempt", "next retry", "last error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LIVEORCH_URL", "http://127.0.0.1:8680"),
        help="ops base URL (default $LIVEORCH_URL or http://127.0.0.1:8680)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LIVEORCH_OPS_TOKEN"),
        help="bearer token (default $LIVEORCH_OPS_TOKEN)",
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON")


def _age(iso: str | None, now: datetime) -> str:
    if not iso:
        return "-"
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    secs = int((now - t).total_seconds())
    if secs < 0:
        return f"in {-secs}s"
    if secs < 120:
        return f"{secs}s ago"
    if secs < 7200:
        return f"{secs // 60}m ago"
    return f"{secs // 3600}h ago"


def render_table(rooms: list[dict[str, Any]], now: datetime) -> str:
    rows = [COLUMNS]
    for r in rooms:
        job = r.get("job_id") or "-"
        rows.append(
            (
                str(r.get("room_id", "?")),
                str(r.get("state", "?")) + (" !" if r.get("alert") else ""),
                str(r.get("order", "-")),
                job[:12],
                _age(r.get("since"), now),
                str(r.get("attempt", 0)),
                _age(r.get("next_retry_at"), now),
                (r.get("last_error") or "-")[:40],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def run_from_args(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        resp = httpx.get(f"{args.url.rstrip('/')}/rooms", headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        print(
            f"liveorch: cannot reach the daemon at {args.url}: {type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    if resp.status_code == 401:
        print(
            "liveorch: the ops API wants a token (--token or $LIVEORCH_OPS_TOKEN)", file=sys.stderr
        )
        return 2
    if resp.status_code != 200:
        print(f"liveorch: {args.url}/rooms answered HTTP {resp.status_code}", file=sys.stderr)
        return 1
    data = resp.json()
    rooms = data.get("rooms", data) if isinstance(data, dict) else data
    if args.json:
        print(json.dumps(rooms, indent=2))
    else:
        print(render_table(rooms, datetime.now(UTC)))
    return 0
