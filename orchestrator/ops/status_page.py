"""The status page: plain HTML/CSS/JS from ``ops/static`` (no build step) plus the 24 h timeline.

The pages are static shells; their script polls ``/rooms`` (list) or ``/rooms/{id}`` (room
page) every 2 s and renders with DOM APIs only (``textContent``, never ``innerHTML`` with
data), so a room name or error text can never inject markup. A strict Content-Security-Policy
(no inline script, same-origin fetches only) backs that up.

:func:`timeline` is pure: it turns the audit log into segments the room page draws as SVG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, request_response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.rooms.model import RoomState
from orchestrator.store.base import TransitionRecord

__all__ = ["NO_DATA", "STATIC_DIR", "AsgiEndpoint", "segment_kind", "status_routes", "timeline"]

STATIC_DIR = Path(__file__).parent / "static"

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

_FAULT = {
    RoomState.DEGRADED,
    RoomState.REFRESHING,
    RoomState.RESTARTING,
    RoomState.BACKOFF,
    RoomState.QUARANTINED,
}
# States in which the order is ON (the room is meant to be live): the "scheduled" row.
_ON = _FAULT | {RoomState.STARTING, RoomState.LIVE}


NO_DATA = "NO DATA"
"""The timeline's state for time before the daemon's first record of a room (it was not there
to see: not the same as UNKNOWN, which is the daemon re-checking a room)."""


def segment_kind(state: str) -> str:
    """``live`` | ``fault`` | ``starting`` | ``idle`` | ``unknown`` | ``nodata`` — the colours."""
    if state == NO_DATA:
        return "nodata"
    if state == RoomState.LIVE:
        return "live"
    if state in _FAULT:
        return "fault"
    if state in (RoomState.STARTING, RoomState.STOPPING):
        return "starting"
    if state == RoomState.IDLE:
        return "idle"
    return "unknown"


def timeline(
    transitions: Iterable[TransitionRecord],
    *,
    start: datetime,
    end: datetime,
    current: str,
    earlier: bool = True,
) -> list[dict[str, Any]]:
    """Segments ``{start, end, state, kind, scheduled}`` covering ``[start, end]``.

    The state before the first transition in range is that transition's ``from_state``; with no
    transitions the room spent the whole range in ``current``. ``earlier`` False says the store
    holds nothing older than ``transitions``: the time before the first one is ``NO DATA``
    (the daemon was not there yet). ``scheduled`` means the room was in an order-ON state
    (derived from states, since windows are not in the audit log).
    """
    recs = _backdated(sorted((r for r in transitions if r.at <= end), key=lambda r: r.at))
    before = [r for at, r in recs if at <= start]
    inside = [(at, r) for at, r in recs if at > start]
    if before:
        state = before[-1].to_state
    elif not earlier:
        state = NO_DATA
    elif inside:
        state = inside[0][1].from_state
    else:
        state = current
    cursor = start
    points: list[tuple[datetime, datetime, str]] = []
    for at, rec in inside:
        if at > cursor:
            points.append((cursor, at, state))
        cursor = max(cursor, at)
        state = rec.to_state
    if end > cursor:
        points.append((cursor, end, state))
    merged: list[tuple[datetime, datetime, str]] = []
    for seg in points:
        if merged and merged[-1][2] == seg[2]:
            merged[-1] = (merged[-1][0], seg[1], seg[2])
        else:
            merged.append(seg)
    return [
        {
            "start": a.isoformat(),
            "end": b.isoformat(),
            "state": s,
            "kind": segment_kind(s),
            "scheduled": s in _ON,
        }
        for a, b, s in merged
    ]


def _backdated(recs: list[TransitionRecord]) -> list[tuple[datetime, TransitionRecord]]:
    """Each record with the time its state began: a drop found late (a read showing the push
    dead for a while, or the playback probe) began when the stream stopped, its
    ``detail["drop_since"]``, though never before the record before it."""
    out: list[tuple[datetime, TransitionRecord]] = []
    prev: datetime | None = None
    for rec in recs:
        at = rec.at
        raw = rec.detail.get("drop_since") if rec.from_state == RoomState.LIVE else None
        if isinstance(raw, str):
            try:
                since = datetime.fromisoformat(raw)
            except ValueError:
                since = at  # a malformed record draws as it was written
            if since.tzinfo is not None and since < at:
                at = since if prev is None else max(since, prev)
        out.append((at, rec))
        prev = rec.at
    return out


class _Headers:
    """Adds the security headers to every static asset response."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, _send)


def _page(name: str) -> Callable[[Request], Any]:
    path = STATIC_DIR / name

    async def endpoint(request: Request) -> Response:
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=_HEADERS)

    return endpoint


class AsgiEndpoint:
    """Wraps an ASGI callable in an object: Starlette's Route re-wraps plain functions."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def status_routes(*, guard: Callable[[ASGIApp], ASGIApp]) -> list[BaseRoute]:
    """``/`` (all rooms), ``/ui/rooms/{room_id}`` (one room) and ``/ui/static/*`` assets."""

    def _route(path: str, name: str, page: str) -> Route:
        app = guard(request_response(_page(page)))
        return Route(path, AsgiEndpoint(app), methods=["GET", "HEAD"], name=name)

    return [
        _route("/", "status_page", "index.html"),
        _route("/ui/rooms/{room_id}", "status_room_page", "room.html"),
        Mount(
            "/ui/static",
            app=guard(_Headers(StaticFiles(directory=STATIC_DIR))),
            name="status_static",
        ),
    ]
