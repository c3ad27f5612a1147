"""The ops HTTP routes over a real ASGI stack (httpx ASGITransport)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette

from orchestrator.ops.http import Readiness, redact
from orchestrator.ops.status_page import timeline
from orchestrator.rooms.model import RoomState
from orchestrator.store.base import TransitionRecord
from tests.support.ops_fakes import NOW, OUTAGE, TOKEN, OpsFixture, make_ops


def client_for(ops: OpsFixture, token: str | None = None) -> httpx.AsyncClient:
    app = Starlette(routes=ops.routes(token))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops")


@pytest.fixture
def ops() -> OpsFixture:
    return make_ops()


@pytest.fixture
async def client(ops: OpsFixture) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(ops) as c:
        yield c


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_names_each_check(ops: OpsFixture, client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False
    assert body["checks"]["store"]["ok"] is True
    assert body["checks"]["metastudio"]["ok"] is False
    assert "mqtt" not in body["checks"]

    ops.readiness.api_ok()
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["ready"] is True

    ops.clock[0] += 121  # no successful call for longer than api_reachable_s
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["metastudio"]["ok"] is False

    ops.readiness.api_ok(at=ops.clock[0] - 5)
    assert (await client.get("/readyz")).status_code == 200
    ops.readiness.api_ok(at=ops.clock[0] - 500)  # an older report never moves the mark back
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_store_failure_hides_its_message(
    ops: OpsFixture, client: httpx.AsyncClient
) -> None:
    ops.readiness.api_ok()
    ops.store.outage = OUTAGE
    r = await client.get("/readyz")
    assert r.status_code == 503
    store = r.json()["checks"]["store"]
    assert store == {"ok": False, "detail": "ping failed: StoreError"}
    assert "secret" not in r.text


async def test_readyz_mqtt_when_required(ops: OpsFixture) -> None:
    ops.readiness = Readiness(mqtt_required=True, clock=lambda: ops.clock[0])
    ops.readiness.api_ok()
    async with client_for(ops) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["mqtt"] == {"ok": False, "detail": "disconnected"}
        ops.readiness.mqtt(True)
        assert (await c.get("/readyz")).status_code == 200


async def test_rooms_json_never_shows_a_secret(client: httpx.AsyncClient) -> None:
    r = await client.get("/rooms")
    assert r.status_code == 200
    assert "STREAMKEY" not in r.text
    assert "auth_key" not in r.text
    rooms = {x["room_id"]: x for x in r.json()["rooms"]}
    assert list(rooms) == ["room-a", "room-b"]
    a = rooms["room-a"]
    assert a["state"] == "LIVE"
    assert a["job_id"] == "job-1"
    assert a["stream_key"] == "***"  # masked, as on MQTT and in the log (one policy)
    assert a["output_url"] == "rtmp://push.example.com/live/***?***"
    assert a["sla_today"] == {"scheduled_s": 10800.0, "live_s": 10500.0, "percent": 97.22}
    assert rooms["room-b"]["sla_today"] is None
    assert rooms["room-b"]["attempt"] == 2
    assert rooms["room-b"]["next_retry_at"] == (NOW + timedelta(seconds=40)).isoformat()


async def test_rooms_without_store_still_lists(ops: OpsFixture, client: httpx.AsyncClient) -> None:
    ops.store.outage = OUTAGE
    r = await client.get("/rooms")
    assert r.status_code == 200
    assert [x["sla_today"] for x in r.json()["rooms"]] == [None, None]
    d = (await client.get("/rooms/room-a")).json()
    assert d["state"] == "LIVE"
    assert d["transitions"] is None
    assert d["timeline"] is None


async def test_room_detail_with_history_and_timeline(client: httpx.AsyncClient) -> None:
    r = await client.get("/rooms/room-a")
    assert r.status_code == 200
    d = r.json()
    assert [t["to"] for t in d["transitions"]] == ["LIVE", "DEGRADED", "LIVE", "STARTING"]
    assert "nope" not in r.text  # hwSecret in a transition's detail is masked
    assert d["transitions"][1]["detail"] == {"rtmp_state": "DISCONNECTED", "hwSecret": "***"}
    kinds = [(s["state"], s["kind"], s["scheduled"]) for s in d["timeline"]["segments"]]
    assert kinds == [
        ("IDLE", "idle", False),
        ("STARTING", "starting", True),
        ("LIVE", "live", True),
        ("DEGRADED", "fault", True),
        ("LIVE", "live", True),
    ]
    assert d["timeline"]["segments"][0]["start"] == (NOW - timedelta(hours=24)).isoformat()
    assert d["timeline"]["segments"][-1]["end"] == NOW.isoformat()


async def test_unknown_room_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/rooms/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_room"


async def test_metrics_reflect_current_rooms(ops: OpsFixture, client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'liveorch_rooms{state="LIVE"} 1.0' in r.text
    assert 'liveorch_rooms{state="BACKOFF"} 1.0' in r.text
    ops.rooms.put("room-b", RoomState.LIVE)
    r = await client.get("/metrics")
    assert 'liveorch_rooms{state="LIVE"} 2.0' in r.text
    assert 'liveorch_rooms{state="BACKOFF"} 0.0' in r.text


@pytest.mark.parametrize(
    "path", ["/metrics", "/rooms", "/rooms/room-a", "/", "/ui/rooms/room-a", "/ui/static/style.css"]
)
async def test_token_guards_everything_but_probes(ops: OpsFixture, path: str) -> None:
    ops.readiness.api_ok()
    async with client_for(ops, token=TOKEN) as c:
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200
        r = await c.get(path)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in r.text
        assert (await c.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await c.get(path, headers={"Authorization": TOKEN})).status_code == 401
        ok = await c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        basic = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
        assert (await c.get(path, headers={"Authorization": f"Basic {basic}"})).status_code == 200
        bad = base64.b64encode(b"ops:nope").decode()
        assert (await c.get(path, headers={"Authorization": f"Basic {bad}"})).status_code == 401


async def test_browser_gets_a_basic_challenge(ops: OpsFixture) -> None:
    async with client_for(ops, token=TOKEN) as c:
        r = await c.get("/", headers={"Accept": "text/html,*/*"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="liveorch"'


async def test_pages_and_assets_have_security_headers(client: httpx.AsyncClient) -> None:
    for path in ("/", "/ui/rooms/room-a", "/ui/static/index.js"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "text/html" in (await client.get("/")).headers["content-type"]
    assert (await client.get("/ui/static/../http.py")).status_code == 404


def test_redact() -> None:
    value = {
        "ak": "A",
        "SK": "B",
        "callbackKey": "C",
        "password": "D",
        "nested": [{"hwSecret": "E", "ok": 1}],
        "url": "https://user:pw@example.com/x",
        "push": "rtmp://h/app/key123",
        "push2": "rtmp://h/key123",
    }
    assert redact(value) == {
        "ak": "***",
        "SK": "***",
        "callbackKey": "***",
        "password": "***",
        "nested": [{"hwSecret": "***", "ok": 1}],
        "url": "https://user:***@example.com/x",
        "push": "rtmp://h/app/***",
        "push2": "rtmp://h/***",
    }


def test_timeline_without_transitions_is_one_segment() -> None:
    start, end = NOW - timedelta(hours=24), NOW
    segs = timeline([], start=start, end=end, current="LIVE")
    assert segs == [
        {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "state": "LIVE",
            "kind": "live",
            "scheduled": True,
        }
    ]


def test_timeline_merges_and_clips() -> None:
    start, end = NOW - timedelta(hours=24), NOW
    recs = [
        TransitionRecord("r", start - timedelta(hours=1), "IDLE", "QUARANTINED", "x"),
        TransitionRecord("r", start + timedelta(hours=1), "QUARANTINED", "QUARANTINED", "x"),
        TransitionRecord("r", start + timedelta(hours=2), "QUARANTINED", "IDLE", "Reset"),
        TransitionRecord("r", end + timedelta(hours=1), "IDLE", "LIVE", "future"),
    ]
    segs = timeline(recs, start=start, end=end, current="IDLE")
    assert [(s["state"], s["kind"]) for s in segs] == [("QUARANTINED", "fault"), ("IDLE", "idle")]
    assert segs[0]["end"] == (start + timedelta(hours=2)).isoformat()
