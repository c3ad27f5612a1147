"""MetaStudioClient against our emulator over real HTTP (AK/SK signing verified server-side)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from orchestrator.emulator.app import create_app
from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.service import EmulatorService, Fault
from orchestrator.errors import (
    AuthError,
    CloudUnavailable,
    Conflict,
    InvalidRequest,
    NotFound,
    StartOutcomeUnknown,
    Throttled,
)
from orchestrator.httpserver import serve
from orchestrator.metastudio.auth import AkSkAuth, IamTokenAuth
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.metastudio.models import (
    JobState,
    LiveExitConfig,
    StartSmartLiveReq,
    build,
)
from orchestrator.metastudio.ratelimit import RateLimits

AK = "CLIENTTESTAK0000000"
SK = "CLIENTTESTSKclienttestsk00000000000000"
PROJECT = "fedcba9876543210fedcba9876543210"
RTMP = "rtmp://push.example.com/live"


@dataclass
class Env:
    service: EmulatorService
    base_url: str
    http: httpx.AsyncClient
    client: MetaStudioClient
    sleeps: list[float]

    def make_client(self, auth: httpx.Auth, **kw: object) -> MetaStudioClient:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return MetaStudioClient(
            self.http,
            base_url=self.base_url,
            project_id=PROJECT,
            auth=auth,
            limits=RateLimits.unlimited(),
            sleep=sleep,
            jitter=lambda: 0.0,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    service = EmulatorService(PROJECT, {AK: SK}, seed=3, clock=ManualClock())
    service.add_room(
        "room-1", {"room_name": "Shop one", "output_urls": [RTMP], "stream_keys": ["k1"]}
    )
    async with serve(create_app(service)) as served, httpx.AsyncClient() as http:
        e = Env(service, served.base_url, http, None, [])  # type: ignore[arg-type]
        e.client = e.make_client(AkSkAuth(AK, SK, PROJECT), app_user_id="liveorch-test")
        yield e


def _start_req(key: str = "stream-key-1") -> StartSmartLiveReq:
    return build(
        StartSmartLiveReq,
        {
            "video_config": {"bitrate": 4000, "width": 1080, "height": 1920},
            "output_urls": [RTMP],
            "stream_keys": [key],
        },
    )


async def test_job_lifecycle_every_job_operation(env: Env) -> None:
    c = env.client
    started = await c.start_job("room-1", _start_req())
    assert started.job_id and started.request_id

    await env.service.advance(5)
    job = await c.show_job("room-1", started.job_id)
    assert job.state is JobState.PROCESSING
    assert job.request_id

    page = await c.list_room_jobs_page("room-1", states=["WAITING", "PROCESSING"])
    assert page.count == 1 and page.smart_live_jobs[0].job_id == started.job_id
    tenant = [j.job_id async for j in c.iter_tenant_jobs(room_name="Shop")]
    assert tenant == [started.job_id]
    briefs = [(b.job_id, b.room_id, b.state) async for b in c.iter_tenant_job_briefs()]
    assert briefs == [(started.job_id, "room-1", "PROCESSING")]

    refreshed = await c.refresh_output_url(
        "room-1", started.job_id, output_url=RTMP, stream_key="stream-key-2"
    )
    assert refreshed.command == "REFRESH_OUTPUT_URL" and refreshed.request_id
    reset = await c.reset_exit_config(
        "room-1", started.job_id, LiveExitConfig(max_exception_waiting_duration=60)
    )
    assert reset.command_id
    spoken = await c.insert_play_script("room-1", started.job_id, "欢迎 welcome")
    assert spoken.command_id
    query = await c.execute_command("room-1", started.job_id, "GET_CURRENT_PLAYING_SCRIPTS")
    assert query.command == "GET_CURRENT_PLAYING_SCRIPTS"

    with pytest.raises(Conflict):  # single_job_in_room defaults to true
        await c.start_job("room-1", _start_req())

    await c.stop_job("room-1", started.job_id)
    await env.service.advance(1)
    stopped = await c.show_job("room-1", started.job_id)
    assert stopped.state is not JobState.PROCESSING
    running = [j async for j in c.iter_room_jobs("room-1", states=["WAITING", "PROCESSING"])]
    assert running == []


async def test_paging_over_many_jobs(env: Env) -> None:
    for _ in range(7):
        job = await env.client.start_job("room-1", _start_req())
        await env.client.stop_job("room-1", job.job_id)
        await env.service.advance(1)  # the emulator enforces the 4 starts/s tenant limit
    jobs = [j.job_id async for j in env.client.iter_room_jobs("room-1", page_size=3)]
    assert len(jobs) == 7 and len(set(jobs)) == 7


async def test_rooms_operations(env: Env) -> None:
    c = env.client
    room_id = await c.create_room({"room_name": "Second shop", "room_type": "NORMAL"})
    rooms = await c.list_rooms(limit=100)
    assert {r.room_id for r in rooms.smart_live_rooms} >= {"room-1", room_id}
    room = await c.show_room(room_id)
    assert room.room_name == "Second shop"
    shown = await c.show_room("room-1")
    assert "k1" not in repr(shown)


async def test_error_mapping_against_emulator(env: Env) -> None:
    c = env.client
    with pytest.raises(NotFound) as info:
        await c.show_job("room-1", "no-such-job")
    assert info.value.request_id
    env.service.add_fault(Fault(operation="command", status=429, error_code="APIGW.0308"))
    started = await c.start_job("room-1", _start_req())
    with pytest.raises(Throttled):
        await c.reset_exit_config("room-1", started.job_id, LiveExitConfig(max_live_duration=2))
    env.service.add_fault(Fault(operation="show", status=503, error_code="MSS.00000002"))
    job = await c.show_job("room-1", started.job_id)  # one automatic read retry
    assert job.job_id == started.job_id
    assert env.sleeps == [0.25]
    env.service.add_fault(Fault(operation="stop", status=500, error_code="MSS.00000002"))
    with pytest.raises(CloudUnavailable):
        await c.stop_job("room-1", started.job_id)


async def test_emulator_side_validation_maps_to_invalid_request(env: Env) -> None:
    # scene script trees are passed through unchecked by us; the service rejects this one
    with pytest.raises(InvalidRequest) as info:
        await env.client.create_room({"room_name": "x", "scene_scripts": [{"script_name": "s"}]})
    assert info.value.status == 400
    assert info.value.error_code == "MSS.00000003"


async def test_wrong_secret_is_auth_error(env: Env) -> None:
    client = env.make_client(AkSkAuth(AK, SK + "x", PROJECT))
    with pytest.raises(AuthError) as info:
        await client.show_room("room-1")
    assert info.value.error_code == "APIGW.0301"
    assert SK not in str(info.value)


async def test_ghost_start_raises_outcome_unknown_and_job_is_listed(env: Env) -> None:
    env.service.add_fault(Fault(operation="start", ghost=True))
    client = env.make_client(
        AkSkAuth(AK, SK, PROJECT), timeout=httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)
    )
    with pytest.raises(StartOutcomeUnknown):
        await client.start_job("room-1", _start_req())
    listed = [
        j async for j in env.client.iter_room_jobs("room-1", states=["WAITING", "PROCESSING"])
    ]
    assert len(listed) == 1


async def test_iam_password_token_against_emulator(env: Env) -> None:
    auth = IamTokenAuth.with_password(
        http=env.http,
        iam_url=env.base_url,
        user=AK,
        password=SK,
        domain="emulator",
        project_id=PROJECT,
        # the emulator's tokens expire on its simulated clock, so read expiry on that clock
        clock=lambda: datetime.fromtimestamp(env.service.now(), UTC),
    )
    client = env.make_client(auth)
    assert (await client.show_room("room-1")).room_id == "room-1"
    await client.list_rooms()
    assert auth.refreshes == 1
