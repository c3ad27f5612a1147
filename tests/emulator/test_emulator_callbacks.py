"""Live-event callbacks in all auth modes, link drop → END → FAILED, callback knobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.emulator.callbacks import CallbackEvent, hw_time, mss_signature
from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.service import EmulatorService
from orchestrator.httpserver import ServedApp, serve
from tests.support.emulator import jobs_path

KEY = "k3yExample"


def test_mss_signature_worked_example() -> None:
    url = "https://cb.example.com/hooks/metastudio?tenant=42"
    t = hw_time(1704110400)
    assert t == "6592a940"
    assert mss_signature(KEY, url, t, "path") == (
        "97b0527678770c31253a8469ef106b451f07552acf28a645f8588918f40279ac"
    )
    assert mss_signature(KEY, url, t, "full") == (
        "a83b4b55b5e654205475fa0f9bc650f84d711b44ef1fc3afd320a35c4df27f5b"
    )


class Receiver:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.fail_next = 0

    async def handle(self, request: Request) -> Response:
        if self.fail_next:
            self.fail_next -= 1
            return Response(status_code=503)
        body = json.loads(await request.body())
        await self.queue.put(
            {
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "event_type": body["event_type"],
                "message": json.loads(body["message"]),
            }
        )
        return Response(status_code=200)

    async def next(self, event_type: str | None = None) -> dict[str, Any]:
        while True:
            item = await asyncio.wait_for(self.queue.get(), 5)
            if event_type is None or item["event_type"] == event_type:
                return item


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, ServedApp]]:
    rec = Receiver()
    app = Starlette(routes=[Route("/hooks/metastudio", rec.handle, methods=["POST"])])
    async with serve(app) as served:
        yield rec, served


async def _start(client: httpx.AsyncClient, cb: dict[str, Any]) -> str:
    resp = await client.post(jobs_path(), json={"live_event_callback_config": cb})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


@pytest.mark.parametrize("auth_type", ["NONE", "MSS_A", "MSS_A_HEAD"])
async def test_callback_auth_modes(
    auth_type: str,
    client: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
) -> None:
    rec, served = receiver
    url = served.base_url + "/hooks/metastudio?tenant=42"
    cb = {
        "live_event_type_callback_url": url,
        "auth_type": auth_type,
        "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
    }
    if auth_type != "NONE":
        cb["key"] = KEY
    job_id = await _start(client, cb)
    await service.advance(1.0)
    got = await rec.next()
    assert got["event_type"] == "RTMP_STREAM_STATE_CHANGE"
    assert got["message"] == {
        "room_id": "room-1",
        "job_id": job_id,
        "output_url": "rtmp://push.example.com/live",
        "stream_key": "key-room-1",
        "state": "CONNECTING",
    }
    assert got["query"]["tenant"] == "42"
    if auth_type == "MSS_A":
        t = got["query"]["hwTime"]
        assert got["query"]["hwSecret"] == mss_signature(KEY, url, t, "path")
    elif auth_type == "MSS_A_HEAD":
        t = got["headers"]["x-hw-mss-time"]
        assert got["headers"]["x-hw-mss-secret"] == mss_signature(KEY, url, t, "path")
        assert "hwSecret" not in got["query"]
    else:
        assert "hwSecret" not in got["query"]
        assert "x-hw-mss-secret" not in got["headers"]


async def test_link_drop_reconnecting_end_failed(
    client: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
) -> None:
    rec, served = receiver
    cb = {
        "live_event_type_callback_url": served.base_url + "/hooks/metastudio",
        "auth_type": "NONE",
        "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
    }
    job_id = await _start(client, cb)
    await service.advance(2.0)
    assert [(await rec.next())["message"]["state"] for _ in range(2)] == ["CONNECTING", "CONNECTED"]
    resp = await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "DISCONNECTED"})
    assert resp.status_code == 200
    assert resp.json()["job"]["rtmp_state"] == "DISCONNECTED"
    assert (await rec.next())["message"]["state"] == "DISCONNECTED"
    await service.advance(5.0)
    assert (await rec.next())["message"]["state"] == "RECONNECTING"
    await service.advance(170.0)  # held: reconnect attempts keep failing, 175 s < 3 min
    show = (await client.get(f"{jobs_path()}/{job_id}")).json()
    assert show["state"] == "PROCESSING"
    await service.advance(10.0)
    assert (await rec.next())["message"]["state"] == "END"
    show = (await client.get(f"{jobs_path()}/{job_id}")).json()
    assert show["state"] == "FAILED"
    assert show["error_info"]["error_code"]


async def test_refresh_output_url_ends_hold_and_reconnects(
    client: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
) -> None:
    rec, served = receiver
    cb = {
        "live_event_type_callback_url": served.base_url + "/hooks/metastudio",
        "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
    }
    job_id = await _start(client, cb)
    await service.advance(2.0)
    await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "RECONNECTING", "hold_s": 3600})
    await service.advance(60.0)
    resp = await client.post(
        f"{jobs_path()}/{job_id}/command",
        json={
            "command": "REFRESH_OUTPUT_URL",
            "params": {"output_urls": ["rtmp://backup.example.com/live"], "stream_keys": ["b"]},
        },
    )
    assert resp.status_code == 200
    await service.advance(1.0)
    states = []
    while not rec.queue.empty():
        states.append(rec.queue.get_nowait()["message"])
    assert [m["state"] for m in states][-2:] == ["CONNECTING", "CONNECTED"]
    assert states[-1]["output_url"] == "rtmp://backup.example.com/live"
    await service.advance(600.0)
    assert service.jobs[job_id].state == "PROCESSING"
    stats = (await admin.get("/stats")).json()
    assert [c["command"] for c in stats["commands"]] == ["REFRESH_OUTPUT_URL"]


async def test_reset_exit_config_extends_patience(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    resp = await client.post(jobs_path(), json={})
    job_id = resp.json()["job_id"]
    await service.advance(2.0)
    await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "DISCONNECTED"})
    await client.post(
        f"{jobs_path()}/{job_id}/command",
        json={"command": "RESET_EXIT_CONFIG", "params": {"max_exception_waiting_duration": 10}},
    )
    await service.advance(9 * 60)
    assert service.jobs[job_id].state == "PROCESSING"
    await service.advance(61)
    assert service.jobs[job_id].state == "FAILED"


async def test_max_live_duration_ends_job(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    resp = await client.post(
        jobs_path(), json={"play_policy": {"live_exit_config": {"max_live_duration": 1}}}
    )
    assert resp.json()["limit_duration"] == 1
    job_id = resp.json()["job_id"]
    await service.advance(1.0 + 3599)
    assert service.jobs[job_id].state == "PROCESSING"
    await service.advance(1.0)
    assert service.jobs[job_id].state == "SUCCEED"


async def test_script_switch_and_reply_finish_callbacks(
    client: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
) -> None:
    rec, served = receiver
    cb = {
        "live_event_type_callback_url": served.base_url + "/hooks/metastudio",
        "callback_event_type": ["SHOOT_SCRIPT_SWITCH", "REPLY_COMMAND_FINISH"],
    }
    job_id = await _start(client, cb)
    await service.advance(31.0)
    switch = await rec.next()
    assert switch["event_type"] == "SHOOT_SCRIPT_SWITCH"
    assert switch["message"]["shoot_script_sequence_no"] == "1"
    cmd = await client.post(
        f"{jobs_path()}/{job_id}/command",
        json={"command": "INSERT_PLAY_SCRIPT", "params": {"text_config": {"text": "hello"}}},
    )
    await service.advance(3.0)
    reply = await rec.next("REPLY_COMMAND_FINISH")
    assert reply["message"]["reply_id"] == cmd.json()["command_id"]


async def test_callback_retry_drop_duplicate_knobs(
    client: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
) -> None:
    rec, served = receiver
    service.callbacks._retry_delays = (0.0, 0.0)
    rec.fail_next = 1  # first delivery fails, the retry succeeds
    cb = {
        "live_event_type_callback_url": served.base_url + "/hooks/metastudio",
        "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
    }
    job_id = await _start(client, cb)
    await service.advance(1.0)
    assert (await rec.next())["message"]["state"] == "CONNECTING"
    resp = await admin.post("/callbacks", json={"duplicate_rate": 1.0})
    assert resp.json()["duplicate_rate"] == 1.0
    await service.advance(1.0)
    assert (await rec.next())["message"]["state"] == "CONNECTED"
    assert (await rec.next())["message"]["state"] == "CONNECTED"
    await admin.post("/callbacks", json={"duplicate_rate": 0.0, "drop_rate": 1.0})
    await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "DISCONNECTED"})
    await service.callbacks.join()
    assert rec.queue.empty()
    stats = (await admin.get("/stats")).json()["callbacks"]
    assert stats["dropped"] == 1
    assert stats["duplicated"] == 1
    assert (await admin.post("/callbacks", json={"drop_rate": 2})).status_code == 400


async def test_callback_reorder_and_delay_knobs(
    client: httpx.AsyncClient,
    admin: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
) -> None:
    rec, served = receiver
    await admin.post("/callbacks", json={"reorder": True, "delay_ms": 1})
    cb = {
        "live_event_type_callback_url": served.base_url + "/hooks/metastudio",
        "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
    }
    job_id = await _start(client, cb)
    await service.advance(2.0)  # CONNECTING and CONNECTED queued together: delivered swapped
    got = [(await rec.next())["message"]["state"] for _ in range(2)]
    assert got == ["CONNECTED", "CONNECTING"]
    await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "DISCONNECTED"})
    await service.callbacks.join()  # a lone event is flushed after the reorder window
    assert (await rec.next())["message"]["state"] == "DISCONNECTED"


class DeadEndpoint:
    """Accepts connections and never answers: the callback URL of a job whose receiver hangs."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.open = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.open += 1
        self.connected.set()
        self.changed.set()
        try:
            await reader.read()  # until the emulator gives up on this attempt
        finally:
            self.open -= 1


@pytest.fixture
async def dead() -> AsyncIterator[tuple[DeadEndpoint, str]]:
    endpoint = DeadEndpoint()
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield endpoint, f"http://127.0.0.1:{port}/hooks/dead"
    finally:
        for writer in endpoint.writers:
            writer.close()
        server.close()


async def test_a_dead_callback_url_delays_only_its_own_job(
    client: httpx.AsyncClient,
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
    dead: tuple[DeadEndpoint, str],
) -> None:
    rec, served = receiver
    endpoint, dead_url = dead
    events = {"callback_event_type": ["RTMP_STREAM_STATE_CHANGE"]}
    resp = await client.post(
        jobs_path("room-1"),
        json={"live_event_callback_config": {"live_event_type_callback_url": dead_url, **events}},
    )
    assert resp.status_code == 202
    healthy = await client.post(
        jobs_path("room-2"),
        json={
            "live_event_callback_config": {
                "live_event_type_callback_url": served.base_url + "/hooks/metastudio",
                **events,
            }
        },
    )
    healthy_id = healthy.json()["job_id"]
    assert isinstance(service.clock, ManualClock)
    service.clock.advance(2.0)  # both jobs connect; the dead job's callbacks are queued first
    await asyncio.wait_for(endpoint.connected.wait(), 5)
    first = await rec.next()
    second = await rec.next()
    assert [first["message"]["job_id"], second["message"]["job_id"]] == [healthy_id] * 2
    assert [first["message"]["state"], second["message"]["state"]] == ["CONNECTING", "CONNECTED"]
    # delivered while the dead lane is still on its first attempt: no head-of-line blocking
    assert endpoint.open == 1
    assert service.callbacks.stats.failed == 0


async def test_callback_lanes_are_bounded(
    served: ServedApp, service: EmulatorService, dead: tuple[DeadEndpoint, str]
) -> None:
    _, dead_url = dead
    service.callbacks.max_lanes = 2
    service.callbacks.max_queue = 3
    for job in ("job-a", "job-b", "job-c"):
        for i in range(5):
            service.callbacks.submit(
                CallbackEvent(dead_url, "NONE", "", "RTMP_STREAM_STATE_CHANGE", {"i": i}, job)
            )
    assert service.callbacks.lanes == 2
    # job-c found no free lane; job-a and job-b queue at most 3 events each
    assert service.callbacks.stats.dropped == 5 + 2 * 2


async def test_idle_lanes_are_discarded(
    service: EmulatorService, receiver: tuple[Receiver, ServedApp]
) -> None:
    _, served = receiver
    async with service:
        for n in range(50):
            service.callbacks.submit(
                CallbackEvent(
                    served.base_url + "/hooks/metastudio",
                    "NONE",
                    "",
                    "RTMP_STREAM_STATE_CHANGE",
                    {"n": n},
                    f"job-{n}",
                )
            )
        assert service.callbacks.lanes == 50
        await service.callbacks.join()
        assert service.callbacks.stats.delivered == 50
        assert service.callbacks.lanes == 0  # many jobs leave no lanes behind


async def test_many_hanging_urls_do_not_starve_a_healthy_job_of_connections(
    service: EmulatorService,
    receiver: tuple[Receiver, ServedApp],
    dead: tuple[DeadEndpoint, str],
) -> None:
    rec, served = receiver
    endpoint, dead_url = dead
    hanging = 120  # more than httpx's default pool of 100 connections
    async with service:
        for n in range(hanging):
            service.callbacks.submit(
                CallbackEvent(dead_url, "NONE", "", "RTMP_STREAM_STATE_CHANGE", {}, f"dead-{n}")
            )

        async def all_hanging() -> None:
            while endpoint.open < hanging:
                endpoint.changed.clear()
                await endpoint.changed.wait()

        await asyncio.wait_for(all_hanging(), 10)
        service.callbacks.submit(
            CallbackEvent(
                served.base_url + "/hooks/metastudio",
                "NONE",
                "",
                "RTMP_STREAM_STATE_CHANGE",
                {"state": "CONNECTED"},
                "healthy",
            )
        )
        assert (await rec.next())["message"] == {"state": "CONNECTED"}
        assert endpoint.open == hanging  # every dead lane still on its first attempt
