"""REST behaviour of the emulator over a real socket: auth, validation, limits, admin API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService, Fault
from orchestrator.httpserver import ServedApp, serve
from tests.support.emulator import AK, PROJECT, RTMP, SK, SdkSigner, jobs_path, make_service

VIDEO = {"bitrate": 4000, "width": 1080, "height": 1920}


async def _start(client: httpx.AsyncClient, room: str = "room-1", **body: object) -> str:
    resp = await client.post(jobs_path(room), json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


async def test_start_answers_202_with_documented_body(client: httpx.AsyncClient) -> None:
    resp = await client.post(jobs_path(), json={"video_config": VIDEO})
    assert resp.status_code == 202
    body = resp.json()
    assert set(body) >= {
        "job_id",
        "rtc_room_info",
        "live_event_report_url",
        "live_warning_info",
        "limit_duration",
    }
    assert resp.headers["x-request-id"]
    assert body["rtc_room_info"]["users"][0]["user_type"] == "PLAYER"


async def test_job_lifecycle_with_manual_clock(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = await _start(client)
    show = f"{jobs_path()}/{job_id}"
    assert (await client.get(show)).json()["state"] == "WAITING"
    await service.advance(1.0)
    body = (await client.get(show)).json()
    assert body["state"] == "PROCESSING"
    assert body["start_time"].endswith("Z")
    assert service.jobs[job_id].rtmp_state == "CONNECTING"
    await service.advance(1.0)
    assert service.jobs[job_id].rtmp_state == "CONNECTED"
    resp = await client.post(f"{show}/stop")
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["x-request-id"]
    assert (await client.get(show)).json()["state"] == "SUCCEED"
    assert service.jobs[job_id].rtmp_state == "END"


async def test_validation_errors_are_400_mss_00000003(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    cases = [
        {"video_config": {"bitrate": 999, "width": 1080, "height": 1920}},
        {"video_config": {"bitrate": 4000, "width": 1280, "height": 720}},
        {"video_config": {"width": 1080, "height": 1920}},
        {"output_urls": ["http://not-rtmp"]},
        {"output_urls": [RTMP, RTMP]},
        {"play_policy": {"live_exit_config": {"max_live_duration": 169}}},
        {"play_policy": {"live_exit_config": {"max_exception_waiting_duration": 61}}},
        {"live_event_callback_config": {"auth_type": "BOGUS"}},
        {"live_event_callback_config": {"auth_type": "MSS_A", "key": "x" * 33}},
        {"job_run_config": {"single_job_in_room": "yes"}},
    ]
    for body in cases:
        await service.advance(1.0)  # stay under the 4 starts/s throttle
        resp = await client.post(jobs_path(), json=body)
        assert resp.status_code == 400, body
        assert resp.json()["error_code"] == "MSS.00000003"
        assert resp.json()["error_msg"].startswith("Invalid parameter")
    resp = await client.post(jobs_path(), content=b"{not json")
    assert resp.status_code == 400


async def test_commands_all_ten_and_unknown(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = await _start(client)
    await service.advance(2.0)
    url = f"{jobs_path()}/{job_id}/command"
    ok = [
        {"command": "INSERT_PLAY_SCRIPT", "params": {"text_config": {"text": "hi"}}},
        {"command": "INSERT_PLAY_AUDIO", "params": {"audio_url": "https://a/b.mp3"}},
        {"command": "REWRITE_PLAY_SCRIPT", "params": {"scene_scripts": []}},
        {"command": "REWRITE_INTERACTION_RULES", "params": {"interaction_rules": []}},
        {"command": "GET_CURRENT_PLAYING_SCRIPTS"},
        {"command": "SHOW_LAYER", "params": {}},
        {"command": "REFRESH_OUTPUT_URL", "params": {"output_urls": [RTMP], "stream_keys": ["k"]}},
        {"command": "GET_LIVE_JOB_CONFIG_INFO"},
        {"command": "CLEAN_UP_INSERT_COMMAND", "params": {}},
        {"command": "RESET_EXIT_CONFIG", "params": {"max_exception_waiting_duration": 60}},
    ]
    for body in ok:
        await service.advance(1.0)  # stay under the 4 commands/s throttle
        resp = await client.post(url, json=body)
        assert resp.status_code == 200, (body, resp.text)
        data = resp.json()
        assert data["command"] == body["command"]
        assert data["command_id"]
    await service.advance(1.0)
    playing = await client.post(url, json={"command": "GET_CURRENT_PLAYING_SCRIPTS"})
    assert "scene_scripts" in json.loads(playing.json()["result"])
    assert service.jobs[job_id].exit_config["max_exception_waiting_duration"] == 60
    for bad in (
        {"command": "DANCE"},
        {},
        {"command": "INSERT_PLAY_SCRIPT", "params": {"text_config": {"text": ""}}},
        {"command": "REFRESH_OUTPUT_URL", "params": {"output_urls": []}},
        {"command": "RESET_EXIT_CONFIG", "params": {"max_live_duration": 500}},
    ):
        await service.advance(1.0)
        resp = await client.post(url, json=bad)
        assert resp.status_code == 400, bad
        assert resp.json()["error_code"] == "MSS.00000003"


async def test_bad_signature_and_skew_are_401(served: ServedApp) -> None:
    cases = [
        SdkSigner(AK, "wrong-secret"),
        SdkSigner("UNKNOWNAK", SK),
        SdkSigner(date=datetime.now(UTC) - timedelta(minutes=16)),
        SdkSigner(date=datetime.now(UTC) + timedelta(minutes=16)),
    ]
    for auth in cases:
        async with httpx.AsyncClient(base_url=served.base_url, auth=auth) as c:
            resp = await c.get(f"/v1/{PROJECT}/smart-live-jobs")
        assert resp.status_code == 401
        assert resp.json()["error_code"] == "APIGW.0301"
        assert resp.headers["x-request-id"]
    async with httpx.AsyncClient(base_url=served.base_url) as c:
        resp = await c.get(f"/v1/{PROJECT}/smart-live-jobs")
        assert resp.status_code == 401
    # within 15 minutes is fine
    ok = SdkSigner(date=datetime.now(UTC) - timedelta(minutes=14))
    async with httpx.AsyncClient(base_url=served.base_url, auth=ok) as c:
        assert (await c.get(f"/v1/{PROJECT}/smart-live-jobs")).status_code == 200


async def test_tampered_body_fails_signature(served: ServedApp) -> None:
    class Tamper(SdkSigner):
        def auth_flow(self, request: httpx.Request):  # type: ignore[no-untyped-def]
            for signed in super().auth_flow(request):
                signed.stream = httpx.ByteStream(b'{"video_config": null}')
                signed.headers["Content-Length"] = str(len(b'{"video_config": null}'))
                yield signed

    async with httpx.AsyncClient(base_url=served.base_url, auth=Tamper()) as c:
        resp = await c.post(jobs_path(), json={})
    assert resp.status_code == 401


async def test_token_auth(served: ServedApp, service: EmulatorService) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as c:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": AK, "password": SK, "domain": {"name": "acct"}}},
                },
                "scope": {"project": {"name": "cn-north-4"}},
            }
        }
        resp = await c.post("/v3/auth/tokens", json=body)
        assert resp.status_code == 201
        token = resp.headers["x-subject-token"]
        data = resp.json()["token"]
        assert data["project"]["id"] == PROJECT
        assert "catalog" in data
        nocat = await c.post("/v3/auth/tokens?nocatalog=true", json=body)
        assert "catalog" not in nocat.json()["token"]
        listed = await c.get(f"/v1/{PROJECT}/smart-live-jobs", headers={"X-Auth-Token": token})
        assert listed.status_code == 200
        assert listed.json() == {"count": 0, "smart_live_jobs": []}
        bad = await c.get(f"/v1/{PROJECT}/smart-live-jobs", headers={"X-Auth-Token": "MIIbogus"})
        assert bad.status_code == 401
        assert "token must be updated" in bad.json()["error_msg"]
        body["auth"]["identity"]["password"]["user"]["password"] = "nope"  # type: ignore[index]
        assert (await c.post("/v3/auth/tokens", json=body)).status_code == 401
        await service.advance(86400)
        expired = await c.get(f"/v1/{PROJECT}/smart-live-jobs", headers={"X-Auth-Token": token})
        assert expired.status_code == 401


async def test_rate_limit_start_4_per_second(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    codes = []
    for room in ("room-1", "room-2"):
        for _ in range(3):
            resp = await client.post(
                jobs_path(room), json={"job_run_config": {"single_job_in_room": False}}
            )
            codes.append(resp.status_code)
    assert codes.count(202) == 4
    assert codes[4:] == [429, 429]
    resp = await client.post(jobs_path(), json={})
    assert resp.json()["error_code"] == "APIGW.0308"
    await service.advance(1.0)
    again = await client.post(jobs_path(), json={"job_run_config": {"single_job_in_room": False}})
    assert again.status_code == 202


async def test_single_job_in_room(client: httpx.AsyncClient, service: EmulatorService) -> None:
    first = await _start(client)
    resp = await client.post(jobs_path(), json={})
    assert resp.status_code == 409
    assert resp.json()["error_code"] == "MSS.00000003"
    other_room = await client.post(jobs_path("room-2"), json={})
    assert other_room.status_code == 202
    await client.post(f"{jobs_path()}/{first}/stop")
    await service.advance(1.0)
    assert (await client.post(jobs_path(), json={})).status_code == 202


async def test_list_filters_sort_and_paging(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    ids = []
    for _ in range(3):
        ids.append(await _start(client, job_run_config={"single_job_in_room": False}))
        await service.advance(10.0)
    await client.post(f"{jobs_path()}/{ids[0]}/stop")
    since = datetime.fromtimestamp(service.jobs[ids[1]].create_time, UTC)
    resp = await client.get(jobs_path(), params={"state": "PROCESSING,WAITING"})
    assert {j["job_id"] for j in resp.json()["smart_live_jobs"]} == set(ids[1:])
    resp = await client.get(jobs_path(), params={"sort_dir": "desc", "limit": 1, "offset": 1})
    assert resp.json()["count"] == 3
    assert [j["job_id"] for j in resp.json()["smart_live_jobs"]] == [ids[1]]
    resp = await client.get(
        jobs_path(), params={"create_since": since.strftime("%Y-%m-%dT%H:%M:%SZ")}
    )
    assert resp.json()["count"] == 2
    tenant = await client.get(f"/v1/{PROJECT}/smart-live-jobs", params={"room_name": "ROOM-1"})
    assert tenant.json()["count"] == 3
    none = await client.get(f"/v1/{PROJECT}/smart-live-jobs", params={"room_name": "zzz"})
    assert none.json()["count"] == 0
    for bad in (
        {"limit": 0},
        {"limit": 101},
        {"state": "RUNNING"},
        {"sort_dir": "up"},
        {"create_since": "yesterday"},
    ):
        assert (await client.get(jobs_path(), params=bad)).status_code == 400, bad


async def test_rooms_create_show_list_and_unknown(client: httpx.AsyncClient) -> None:
    created = await client.post(f"/v1/{PROJECT}/smart-live-rooms", json={"room_name": "New one"})
    assert created.status_code == 200
    room_id = created.json()["room_id"]
    shown = await client.get(f"/v1/{PROJECT}/smart-live-rooms/{room_id}")
    assert shown.json()["room_name"] == "New one"
    listed = await client.get(f"/v1/{PROJECT}/smart-live-rooms", params={"room_name": "new"})
    assert listed.json()["count"] == 1
    assert (await client.post(f"/v1/{PROJECT}/smart-live-rooms", json={})).status_code == 400
    missing = await client.get(f"/v1/{PROJECT}/smart-live-rooms/none")
    assert missing.status_code == 404
    unknown = await client.get(f"/v1/{PROJECT}/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json()["error_code"] == "APIGW.0101"
    assert unknown.headers["x-request-id"]
    # a start without any output URL (room has none) is refused
    no_out = await client.post(f"/v1/{PROJECT}/smart-live-rooms/{room_id}/smart-live-jobs", json={})
    assert no_out.status_code == 400


async def test_live_event_report_url_works_without_iam_auth(
    client: httpx.AsyncClient, service: EmulatorService
) -> None:
    resp = await client.post(jobs_path(), json={})
    url = resp.json()["live_event_report_url"]
    event = {"total": 1, "events": [{"timestamp": 1, "type": 1, "content": "{}"}]}
    async with httpx.AsyncClient() as plain:
        ok = await plain.post(url, json=event)
        assert ok.status_code == 200
        assert ok.json()["live_event_report_url"] == url
        forged = await plain.post(url.replace("auth_key=", "auth_key=0"), json=event)
        assert forged.status_code == 401
        # the page's 401 body (seed line 1806): the service checks this key, not the gateway
        assert forged.json() == {"error_code": "MSS.00000001", "error_msg": "Unauthorized"}


async def test_in_process_asgi_transport_with_explicit_service_context() -> None:
    service = make_service()
    app = create_app(service)
    async with service:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://emu", auth=SdkSigner()
        ) as c:
            resp = await c.post(jobs_path(), json={})
            assert resp.status_code == 202


async def test_admin_refuses_non_loopback_clients() -> None:
    service = make_service()
    app = create_app(service)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://emu") as c:
        resp = await c.get("/_emulator/jobs")
    assert resp.status_code == 403


async def test_server_binds_free_port_and_stops() -> None:
    service = make_service()
    async with serve(create_app(service)) as first, serve(create_app(make_service())) as second:
        assert first.port != second.port
        async with httpx.AsyncClient() as c:
            assert (await c.get(first.base_url + "/_emulator/jobs")).status_code == 200
    async with httpx.AsyncClient() as c:
        try:
            await c.get(first.base_url + "/_emulator/jobs")
            reachable = True
        except httpx.ConnectError:
            reachable = False
    assert not reachable


async def test_errors_use_the_documented_500_body() -> None:
    service = make_service()

    def broken(room_id: str, job_id: str) -> dict[str, object]:
        raise RuntimeError("a bug in the emulator")

    service.show_job = broken  # type: ignore[method-assign]
    transport = httpx.ASGITransport(app=create_app(service), raise_app_exceptions=False)
    async with (
        service,
        httpx.AsyncClient(transport=transport, base_url="http://emu", auth=SdkSigner()) as c,
    ):
        resp = await c.get(jobs_path() + "/job-1")
        # an injected fault without a code gets the same body (seed line 1815)
        service.add_fault(Fault(operation="list", status=500))
        injected = await c.get(jobs_path())
    assert resp.status_code == 500
    assert resp.json() == {"error_code": "MSS.00000004", "error_msg": "Internal Error"}
    assert "a bug" not in resp.text
    assert injected.status_code == 500
    assert injected.json() == {"error_code": "MSS.00000004", "error_msg": "Internal Error"}
