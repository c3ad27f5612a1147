"""`liveorch status [ROOM]` and `liveorch reset ROOM`, through a running daemon's ops API.

``status`` prints a table of rooms; with a room id, that room's recent transitions and their
causes in words too. ``reset`` takes a room out of QUARANTINED (``POST /rooms/{id}/reset``):
no MQTT broker needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

COLUMNS = ("room", "state", "order", "job", "since", "attempt", "next retry", "last error")


def _add_connection(parser: argparse.ArgumentParser) -> None:
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "room",
        nargs="?",
        default=None,
        help="a room id: also print its recent transitions and their causes",
    )
    parser.add_argument(
        "--transitions",
        type=int,
        default=10,
        metavar="N",
        help="how many of the room's transitions to print (default 10)",
    )
    _add_connection(parser)
    parser.add_argument("--json", action="store_true", help="print the raw JSON")


def add_reset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("room", help="the room id to take out of QUARANTINED")
    _add_connection(parser)


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


def render_transitions(transitions: list[dict[str, Any]], now: datetime) -> str:
    """Newest first: when, from → to, and why (in words)."""
    if not transitions:
        return "no transitions recorded in the last 24 h"
    rows = [("when", "from", "to", "why")]
    for t in transitions:
        rows.append(
            (
                _age(t.get("at"), now),
                str(t.get("from", "?")),
                str(t.get("to", "?")),
                str(t.get("why") or t.get("cause") or "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]]).rstrip()
        for row in rows
    )


def _request(args: argparse.Namespace, method: str, path: str) -> tuple[int, httpx.Response | None]:
    """(exit code, response): a response only when the call worked (exit code 0)."""
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = f"{args.url.rstrip('/')}{path}"
    try:
        if method == "POST":
            resp = httpx.post(url, headers=headers, json={}, timeout=5.0)
        else:
            resp = httpx.get(url, headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        print(
            f"liveorch: cannot reach the daemon at {args.url}: {type(exc).__name__}",
            file=sys.stderr,
        )
        return 2, None
    if resp.status_code == 401:
        print(
            "liveorch: the ops API wants a token (--token or $LIVEORCH_OPS_TOKEN)", file=sys.stderr
        )
        return 2, None
    if resp.status_code in (404, 409) and path.startswith("/rooms/"):
        try:
            message = str(resp.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {resp.status_code}"
        print(f"liveorch: {message}", file=sys.stderr)
        return 2, None
    if resp.status_code not in (200, 202):
        print(f"liveorch: {url} answered HTTP {resp.status_code}", file=sys.stderr)
        return 1, None
    return 0, resp


def run_from_args(args: argparse.Namespace) -> int:
    rc, resp = _request(args, "GET", "/rooms")
    if resp is None:
        return rc
    data = resp.json()
    rooms = data.get("rooms", data) if isinstance(data, dict) else data
    room_id = getattr(args, "room", None)
    detail: dict[str, Any] | None = None
    if room_id is not None:
        rc, one = _request(args, "GET", f"/rooms/{quote(room_id, safe='')}")
        if one is None:
            return rc
        detail = one.json()
        rooms = [r for r in rooms if r.get("room_id") == room_id]
    if args.json:
        print(json.dumps(detail if detail is not None else rooms, indent=2))
        return 0
    now = datetime.now(UTC)
    print(render_table(rooms, now))
    if detail is not None:
        print()
        print(render_transitions((detail.get("transitions") or [])[: args.transitions], now))
    return 0


def run_reset(args: argparse.Namespace) -> int:
    """``liveorch reset ROOM``: 0 when the daemon accepted it (the room then re-checks its job
    and starts again if its window is open)."""
    rc, resp = _request(args, "POST", f"/rooms/{quote(args.room, safe='')}/reset")
    if resp is None:
        return rc
    print(f"liveorch: reset of {args.room} accepted")
    return 0
