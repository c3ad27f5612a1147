"""Ops HTTP: ``POST /rooms/{id}/reset``, room names, causes in words, "no data" before the
daemon's first record (issue 21)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import httpx
from starlette.applications import Starlette

from orchestrator.control import CommandError
from orchestrator.ops.status_page import NO_DATA, timeline
from orchestrator.store.base import TransitionRecord
from tests.support.ops_fakes import NOW, TOKEN, make_ops


class Actions:
    """Records resets; knows the rooms of the fake fixture."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def reset(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        if room_id not in ("room-a", "room-b"):
            raise CommandError("unknown_room", f"room {room_id!r} is not managed here")
        if room_id == "room-b":
            raise CommandError("owned_elsewhere", "room 'room-b' is owned by other:1")
        self.calls.append((room_id, cause))
        return {"accepted": True}


def _client(token: str | None = None, **extra: Any) -> httpx.AsyncClient:
    app = Starlette(routes=make_ops().routes(token, **extra))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops")


async def test_reset_calls_the_control_surface_behind_the_token() -> None:
    actions = Actions()
    async with _client(TOKEN, actions=actions) as c:
        assert (await c.post("/rooms/room-a/reset")).status_code == 401
        assert actions.calls == []
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = await c.post("/rooms/room-a/reset", headers=auth)
        assert r.status_code == 202
        assert r.json() == {"room_id": "room-a", "accepted": True}
        assert actions.calls == [("room-a", "ops:reset")]
        assert (await c.post("/rooms/nope/reset", headers=auth)).status_code == 404
        assert (await c.post("/rooms/room-b/reset", headers=auth)).status_code == 409
        assert (await c.get("/rooms/room-a/reset", headers=auth)).status_code == 405
    assert actions.calls == [("room-a", "ops:reset")]


async def test_reset_refuses_another_origin() -> None:
    actions = Actions()
    async with _client(actions=actions) as c:
        r = await c.post("/rooms/room-a/reset", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert actions.calls == []
        r = await c.post("/rooms/room-a/reset", headers={"Origin": "http://ops"})
        assert r.status_code == 202


async def test_reset_without_actions_is_not_offered() -> None:
    async with _client() as c:
        assert (await c.post("/rooms/room-a/reset")).status_code == 404


async def test_rooms_carry_their_configured_names() -> None:
    names = {"room-a": "Shop A"}
    async with _client(names=names.get) as c:
        rooms = {r["room_id"]: r for r in (await c.get("/rooms")).json()["rooms"]}
        assert rooms["room-a"]["name"] == "Shop A"
        assert rooms["room-b"]["name"] is None
        assert (await c.get("/rooms/room-a")).json()["name"] == "Shop A"


async def test_transitions_say_why_in_words() -> None:
    async with _client() as c:
        d = (await c.get("/rooms/room-a")).json()
    degraded = next(t for t in d["transitions"] if t["to"] == "DEGRADED")
    assert degraded["why"] == "callback"  # an old row: only what it kept
    assert all(t["why"] for t in d["transitions"])


def test_no_data_before_the_first_record() -> None:
    start, end = NOW - timedelta(hours=24), NOW
    recs = [
        TransitionRecord("r", NOW - timedelta(hours=2), "UNKNOWN", "IDLE", "JobsListed"),
        TransitionRecord("r", NOW - timedelta(hours=1), "IDLE", "STARTING", "WindowOpened"),
    ]
    first = timeline(recs, start=start, end=end, current="STARTING", earlier=False)
    assert [(s["state"], s["kind"], s["scheduled"]) for s in first] == [
        (NO_DATA, "nodata", False),
        ("IDLE", "idle", False),
        ("STARTING", "starting", True),
    ]
    assert first[0]["end"] == (NOW - timedelta(hours=2)).isoformat()
    # with older records the state before the window is known: no "no data"
    known = timeline(recs, start=start, end=end, current="STARTING", earlier=True)
    assert known[0]["state"] == "UNKNOWN"
    # nothing recorded at all: the whole day has no data
    empty = timeline([], start=start, end=end, current="IDLE", earlier=False)
    assert [s["state"] for s in empty] == [NO_DATA]


async def test_room_page_timeline_uses_no_data_for_a_new_daemon() -> None:
    ops = make_ops()
    ops.store.data.transitions = [
        TransitionRecord("room-a", NOW - timedelta(hours=3), "UNKNOWN", "IDLE", "JobsListed"),
    ]
    app = Starlette(routes=ops.routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ops") as c:
        segs = (await c.get("/rooms/room-a")).json()["timeline"]["segments"]
    assert [s["kind"] for s in segs] == ["nodata", "idle"]
