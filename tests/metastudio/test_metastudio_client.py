"""MetaStudioClient over httpx.MockTransport: error mapping, retries, paging, start semantics."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from orchestrator.errors import (
    AuthError,
    CloudUnavailable,
    Conflict,
    InvalidRequest,
    NotFound,
    PermanentError,
    StartOutcomeUnknown,
    Throttled,
)
from orchestrator.metastudio import signer
from orchestrator.metastudio.auth import AkSkAuth
from orchestrator.metastudio.client import MetaStudioClient, parse_retry_after
from orchestrator.metastudio.models import JobState, LiveExitConfig, StartSmartLiveReq, build
from orchestrator.metastudio.ratelimit import RateLimits

BASE = "https://metastudio.cn-north-4.myhuaweicloud.com"
PROJECT = "0123456789abcdef0123456789abcdef"
STREAM_KEY = "sk-live-SECRET-9f8e"
Handler = Callable[[httpx.Request], httpx.Response]


class Harness:
    def __init__(self, handler: Handler, **kw: Any) -> None:
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.calls: list[tuple[str, str]] = []

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.http = httpx.AsyncClient(transport=httpx.MockTransport(record))
        kw.setdefault("limits", RateLimits.unlimited())
        self.client = MetaStudioClient(
            self.http,
            base_url=BASE,
            project_id=PROJECT,
            sleep=sleep,
            jitter=lambda: 1.0,
            on_call=lambda op, outcome, _s: self.calls.append((op, outcome)),
            **kw,
        )


def ok(body: dict[str, Any] | None = None, status: int = 200, **headers: str) -> httpx.Response:
    hdrs = {"X-Request-Id": "req-1", **headers}
    return (
        httpx.Response(status, json=body, headers=hdrs)
        if body is not None
        else httpx.Response(status, headers=hdrs)
    )


def err(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"X-Request-Id": "req-err", **headers})


def start_req() -> StartSmartLiveReq:
    return build(
        StartSmartLiveReq,
        {
            "video_config": {"bitrate": 4000, "width": 1080, "height": 1920},
            "output_urls": ["rtmp://push.example.com/live"],
            "stream_keys": [STREAM_KEY],
        },
    )


# ------------------------------------------------------------------------- start


async def test_start_job_sends_body_and_returns_202_result() -> None:
    h = Harness(lambda r: ok({"job_id": "job-1", "limit_duration": 0, "brand_new": 1}, 202),
                app_user_id="shop-7")  # fmt: skip
    resp = await h.client.start_job("room-1", start_req())
    assert resp.job_id == "job-1"
    assert resp.request_id == "req-1"
    assert resp.model_extra == {"brand_new": 1}
    (request,) = h.requests
    assert request.method == "POST"
    assert request.url.path == f"/v1/{PROJECT}/smart-live-rooms/room-1/smart-live-jobs"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-App-UserId"] == "shop-7"
    body = json.loads(request.content)
    assert body["stream_keys"] == [STREAM_KEY]
    assert body["video_config"] == {"bitrate": 4000, "width": 1080, "height": 1920}
    assert h.calls == [("start_smart_live", "202")]


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteTimeout]
)
async def test_start_job_lost_answer_is_outcome_unknown_and_not_retried(exc: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    h = Harness(handler)
    with pytest.raises(StartOutcomeUnknown) as info:
        await h.client.start_job("room-1", start_req())
    assert isinstance(info.value.__cause__, exc)
    assert len(h.requests) == 1
    assert h.sleeps == []


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout])
async def test_start_job_not_sent_is_cloud_unavailable(exc: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("refused", request=request)

    h = Harness(handler)
    with pytest.raises(CloudUnavailable) as info:
        await h.client.start_job("room-1", start_req())
    assert not isinstance(info.value, StartOutcomeUnknown)
    assert len(h.requests) == 1


async def test_start_job_202_without_job_id_is_outcome_unknown() -> None:
    h = Harness(lambda r: ok({"something": "else"}, 202))
    with pytest.raises(StartOutcomeUnknown) as info:
        await h.client.start_job("room-1", start_req())
    assert info.value.request_id == "req-1"


async def test_start_job_5xx_is_not_retried() -> None:
    h = Harness(lambda r: err(503, {"error_code": "MSS.00000002", "error_msg": "busy"}))
    with pytest.raises(CloudUnavailable):
        await h.client.start_job("room-1", start_req())
    assert len(h.requests) == 1


async def test_invalid_start_request_never_reaches_network() -> None:
    h = Harness(lambda r: ok({"job_id": "x"}, 202))
    bad = StartSmartLiveReq.model_construct(output_urls=["a", "b"], stream_keys=None)
    with pytest.raises(InvalidRequest) as info:
        await h.client.start_job("room-1", bad)
    assert "output_url" in str(info.value)
    assert h.requests == []


# ------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (401, {"error_code": "APIGW.0301", "error_msg": "Incorrect IAM"}, AuthError, "APIGW.0301"),
        (401, {"error_code": "APIGW.0303", "error_msg": "app auth"}, AuthError, "APIGW.0303"),
        (403, {"error_code": "MSS.00000004", "error_msg": "denied"}, AuthError, "MSS.00000004"),
        (429, {"error_code": "APIGW.0308", "error_msg": "throttled"}, Throttled, "APIGW.0308"),
        (400, {"error_code": "MSS.00000003", "error_msg": "bad"}, InvalidRequest, "MSS.00000003"),
        (404, {"error_code": "MSS.00000001", "error_msg": "gone"}, NotFound, "MSS.00000001"),
        (404, {"error_code": "APIGW.0101", "error_msg": "no api"}, NotFound, "APIGW.0101"),
        (409, {"error_code": "MSS.00000001", "error_msg": "busy"}, Conflict, "MSS.00000001"),
        (
            500,
            {"error_code": "MSS.00000002", "error_msg": "oops"},
            CloudUnavailable,
            "MSS.00000002",
        ),
        # the StartSmartLive page: 500 MSS.00000004 "Internal Error", 401 MSS.00000001
        (
            500,
            {"error_code": "MSS.00000004", "error_msg": "Internal Error"},
            CloudUnavailable,
            "MSS.00000004",
        ),
        (
            401,
            {"error_code": "MSS.00000001", "error_msg": "Unauthorized"},
            AuthError,
            "MSS.00000001",
        ),
        (504, {"error_code": "APIGW.0201", "error_msg": "timeout"}, CloudUnavailable, "APIGW.0201"),
        (502, None, CloudUnavailable, None),
        (405, {"error_code": "X.1", "error_msg": "nope"}, PermanentError, "X.1"),
        # alternative body shapes the SDK accepts (§11.1)
        (401, {"errorCode": "APIGW.0301", "errorMsg": "m"}, AuthError, "APIGW.0301"),
        (429, {"code": "APIGW.0308", "message": "m"}, Throttled, "APIGW.0308"),
        (400, {"error": {"code": "MSS.00000003", "message": "m"}}, InvalidRequest, "MSS.00000003"),
    ],
)
async def test_errors_are_mapped_with_code_and_request_id(
    status: int, body: Any, cls: type, code: str | None
) -> None:
    h = Harness(lambda r: err(status, body), read_retries=0)
    with pytest.raises(cls) as info:
        await h.client.stop_job("room-1", "job-1")
    assert type(info.value) is cls
    assert info.value.error_code == code
    assert info.value.status == status
    assert info.value.request_id == "req-err"
    assert info.value.operation == "stop_smart_live"


async def test_request_id_from_body_when_header_missing() -> None:
    body = {"error_code": "APIGW.0301", "error_msg": "x", "request_id": "body-rid"}
    h = Harness(lambda r: httpx.Response(401, json=body))
    with pytest.raises(AuthError) as info:
        await h.client.stop_job("room-1", "job-1")
    assert info.value.request_id == "body-rid"


async def test_throttled_write_carries_retry_after_and_is_not_retried() -> None:
    h = Harness(
        lambda r: err(429, {"error_code": "APIGW.0308", "error_msg": "t"}, **{"Retry-After": "7"})
    )
    with pytest.raises(Throttled) as info:
        await h.client.reset_exit_config("room-1", "job-1", LiveExitConfig(max_live_duration=1))
    assert info.value.retry_after == 7.0
    assert len(h.requests) == 1


def test_parse_retry_after_forms() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:10 GMT", now=now) == 10.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


# ------------------------------------------------------------------------- read retries


async def test_read_retries_honour_retry_after_then_succeed() -> None:
    answers = iter(
        [
            err(429, {"error_code": "APIGW.0308", "error_msg": "t"}, **{"Retry-After": "2"}),
            ok({"job_id": "job-1", "state": "PROCESSING"}),
        ]
    )
    h = Harness(lambda r: next(answers))
    job = await h.client.show_job("room-1", "job-1")
    assert job.state is JobState.PROCESSING
    assert h.sleeps == [2.0]
    assert h.calls == [("show_smart_live", "APIGW.0308"), ("show_smart_live", "200")]


async def test_read_retries_are_capped_and_backoff_grows() -> None:
    h = Harness(
        lambda r: err(503, {"error_code": "MSS.00000002", "error_msg": "x"}), read_retries=2
    )
    with pytest.raises(CloudUnavailable):
        await h.client.show_job("room-1", "job-1")
    assert len(h.requests) == 3
    assert h.sleeps == [0.5, 1.0]


async def test_network_error_on_read_is_retried_then_chained() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    h = Harness(handler, read_retries=1)
    with pytest.raises(CloudUnavailable) as info:
        await h.client.show_job("room-1", "job-1")
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert len(h.requests) == 2


async def test_permanent_read_errors_are_not_retried() -> None:
    h = Harness(lambda r: err(404, {"error_code": "MSS.00000001", "error_msg": "no"}))
    with pytest.raises(NotFound):
        await h.client.show_job("room-1", "job-1")
    assert len(h.requests) == 1


async def test_huge_retry_after_is_raised_not_slept() -> None:
    h = Harness(lambda r: err(429, {"error_code": "APIGW.0308"}, **{"Retry-After": "600"}))
    with pytest.raises(Throttled) as info:
        await h.client.show_job("room-1", "job-1")
    assert info.value.retry_after == 600.0
    assert h.sleeps == []


# ------------------------------------------------------------------------- paging


def _jobs_handler(total: int) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        limit = int(request.url.params["limit"])
        jobs = [
            {"job_id": f"job-{i}", "state": "SUCCEED"}
            for i in range(offset, min(total, offset + limit))
        ]
        return ok({"count": total, "smart_live_jobs": jobs})

    return handler


async def test_iter_room_jobs_pages_to_exhaustion() -> None:
    h = Harness(_jobs_handler(250))
    jobs = [
        j.job_id async for j in h.client.iter_room_jobs("room-1", states=["PROCESSING", "WAITING"])
    ]
    assert jobs == [f"job-{i}" for i in range(250)]
    assert [r.url.params["offset"] for r in h.requests] == ["0", "100", "200"]
    assert h.requests[0].url.query == b"limit=100&offset=0&state=PROCESSING%2CWAITING"


async def test_iter_tenant_jobs_stops_on_empty_page_even_if_count_lies() -> None:
    h = Harness(lambda r: ok({"count": 99, "smart_live_jobs": []}))
    assert [j async for j in h.client.iter_tenant_jobs(room_name="my room")] == []
    assert h.requests[0].url.query == b"limit=100&offset=0&room_name=my%20room"


async def test_tenant_job_briefs_page_through_and_refuse_a_bad_answer() -> None:
    h = Harness(_jobs_handler(150))
    briefs = [j async for j in h.client.iter_tenant_job_briefs(states=["PROCESSING"])]
    assert [(b.job_id, b.state) for b in briefs[:2]] == [("job-0", "SUCCEED"), ("job-1", "SUCCEED")]
    assert len(briefs) == 150 and h.requests[1].url.params["offset"] == "100"
    bad = Harness(lambda r: ok({"count": 1, "smart_live_jobs": [{"state": "PROCESSING"}]}))
    with pytest.raises(CloudUnavailable, match="unexpected answer"):  # no job_id
        [j async for j in bad.client.iter_tenant_job_briefs()]


async def test_list_page_has_count_and_validates_limits() -> None:
    h = Harness(_jobs_handler(3))
    page = await h.client.list_room_jobs_page("room-1", limit=2, sort_dir="desc")
    assert page.count == 3 and len(page.smart_live_jobs) == 2
    with pytest.raises(InvalidRequest, match="limit"):
        await h.client.list_room_jobs_page("room-1", limit=101)
    with pytest.raises(InvalidRequest, match="sort_dir"):
        await h.client.list_tenant_jobs_page(sort_dir="up")
    assert len(h.requests) == 1


# ------------------------------------------------------------------------- commands & rooms


async def test_refresh_output_url_body_and_no_secret_in_logs() -> None:
    h = Harness(
        lambda r: ok({"command_id": "c1", "command": "REFRESH_OUTPUT_URL", "result": "SUCCESS"})
    )
    with capture_logs() as logs:
        res = await h.client.refresh_output_url(
            "room-1", "job-1", output_url="rtmp://push.example.com/live", stream_key=STREAM_KEY
        )
    assert res.command_id == "c1" and res.request_id == "req-1"
    assert json.loads(h.requests[0].content) == {
        "command": "REFRESH_OUTPUT_URL",
        "params": {"output_urls": ["rtmp://push.example.com/live"], "stream_keys": [STREAM_KEY]},
    }
    assert h.requests[0].url.path.endswith("/smart-live-jobs/job-1/command")
    assert [e["event"] for e in logs] == ["metastudio_call"]
    assert logs[0]["operation"] == "execute_smart_live_command"
    assert STREAM_KEY not in repr(logs)


async def test_insert_play_script_and_reset_exit_config_bodies() -> None:
    h = Harness(lambda r: ok({"command_id": "c"}))
    await h.client.insert_play_script("r", "j", "hello 你好")
    await h.client.reset_exit_config("r", "j", LiveExitConfig(max_exception_waiting_duration=60))
    bodies = [json.loads(r.content) for r in h.requests]
    assert bodies[0] == {
        "command": "INSERT_PLAY_SCRIPT",
        "params": {"text_config": {"text": "hello 你好"}, "play_type": "PLAY_NOW"},
    }
    assert b"\\u4f60" in h.requests[0].content  # non-ASCII escaped like the SDK
    assert bodies[1] == {
        "command": "RESET_EXIT_CONFIG",
        "params": {"max_exception_waiting_duration": 60},
    }


@pytest.mark.parametrize(
    ("command", "params", "fragment"),
    [
        ("MAKE_COFFEE", None, "command"),
        ("REFRESH_OUTPUT_URL", {"output_urls": ["a"], "stream_keys": []}, "stream_key"),
        ("RESET_EXIT_CONFIG", {"max_exception_waiting_duration": 61}, "less than or equal to 60"),
        ("INSERT_PLAY_SCRIPT", {"text_config": {"text": ""}}, "text"),
        ("INSERT_PLAY_AUDIO", {"audio_url": "x", "play_type": "LATER"}, "play_type"),
        ("RESET_EXIT_CONFIG", {"bogus": 1}, "bogus"),
    ],
)
async def test_invalid_commands_rejected_before_network(
    command: str, params: Any, fragment: str
) -> None:
    h = Harness(lambda r: ok({}))
    with pytest.raises(InvalidRequest) as info:
        await h.client.execute_command("r", "j", command, params)
    assert fragment in str(info.value)
    assert h.requests == []


async def test_free_form_command_params_pass_through() -> None:
    h = Harness(lambda r: ok({"command_id": "c", "result": {"scene_scripts": []}}))
    res = await h.client.execute_command("r", "j", "GET_CURRENT_PLAYING_SCRIPTS")
    assert res.result == {"scene_scripts": []}
    assert json.loads(h.requests[0].content) == {"command": "GET_CURRENT_PLAYING_SCRIPTS"}


async def test_rooms_operations() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return ok({"room_id": "new-room"})
        if request.url.path.endswith("/smart-live-rooms"):
            return ok({"count": 1, "smart_live_rooms": [{"room_id": "r1", "room_name": "A"}]})
        return ok({"room_id": "r1", "stream_keys": [STREAM_KEY], "novel": True})

    h = Harness(handler)
    assert await h.client.create_room({"room_name": "A"}) == "new-room"
    rooms = await h.client.list_rooms(room_name="A", live_state=["PROCESSING", "NULL"])
    assert rooms.count == 1 and rooms.smart_live_rooms[0].room_id == "r1"
    room = await h.client.show_room("r1")
    assert STREAM_KEY not in repr(room)
    assert room.model_extra == {"novel": True}
    with pytest.raises(InvalidRequest, match="room_name"):
        await h.client.create_room({"room_name": ""})
    assert len(h.requests) == 3


async def test_path_segments_are_escaped_and_empty_ids_refused() -> None:
    h = Harness(lambda r: ok({"job_id": "a/b"}))
    await h.client.show_job("room 1", "a/b")
    assert h.requests[0].url.raw_path.endswith(b"/smart-live-rooms/room%201/smart-live-jobs/a%2Fb")
    with pytest.raises(InvalidRequest):
        await h.client.show_job("", "x")


def test_endpoint_for_region_and_repr() -> None:
    assert MetaStudioClient.endpoint_for_region("cn-north-4") == BASE
    with pytest.raises(ValueError):
        MetaStudioClient.endpoint_for_region("evil.com/")
    with pytest.raises(ValueError):
        MetaStudioClient(httpx.AsyncClient(), base_url=BASE, project_id=PROJECT, app_user_id="用户")


async def test_hook_failure_does_not_break_the_call() -> None:
    def bad_hook(op: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("metrics down")

    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: ok({"job_id": "j"})))
    client = MetaStudioClient(http, base_url=BASE, project_id=PROJECT, on_call=bad_hook,
                              limits=RateLimits.unlimited())  # fmt: skip
    with capture_logs() as logs:
        assert (await client.show_job("r", "j")).job_id == "j"
    assert "metastudio_on_call_hook_failed" in [e["event"] for e in logs]


# ------------------------------------------------------------------------- AK/SK over the wire


async def test_aksk_auth_signs_exact_bytes_and_verifies() -> None:
    ak, sk = "AKEXAMPLE", "SKEXAMPLEsecret"
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path, _, raw_query = request.url.raw_path.decode().partition("?")
        seen.append(
            signer.verify(
                authorization=request.headers["Authorization"],
                method=request.method,
                path=path,
                raw_query=raw_query,
                headers=dict(request.headers),
                body=request.content,
                secret_for={ak: sk}.get,
                now=now,
            )
        )
        assert request.headers["X-Project-Id"] == PROJECT
        assert request.headers["X-Security-Token"] == "tmp-token"
        signed = signer.parse_authorization(request.headers["Authorization"])[1]
        assert "host" in signed and "x-sdk-date" in signed and "accept-encoding" not in signed
        if request.method == "GET":
            return ok({"count": 0, "smart_live_jobs": []})
        return ok({"command_id": "c"})

    auth = AkSkAuth(ak, sk, PROJECT, security_token="tmp-token", clock=lambda: now)
    assert sk not in repr(auth)
    h = Harness(handler, auth=auth, app_user_id="u1")
    await h.client.list_tenant_jobs_page(room_name="我的 room", states=["PROCESSING"])
    await h.client.refresh_output_url("room/1", "job 1", output_url="rtmp://x/y", stream_key="k")
    assert seen == [ak, ak]
