"""Token buckets with an injected clock, and IAM token caching/refresh."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import AuthError, CloudUnavailable
from orchestrator.metastudio import signer
from orchestrator.metastudio.auth import IamTokenAuth
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.metastudio.ratelimit import (
    WINDOW_MARGIN_S,
    ApiGroup,
    RateLimits,
    RateSpec,
    TokenBucket,
    default_specs,
)


class FakeTime:
    """Monotonic clock whose sleep advances time instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_bucket_allows_burst_then_waits_for_the_sliding_second() -> None:
    t = FakeTime()
    bucket = TokenBucket(RateSpec(4), clock=t.clock, sleep=t.sleep)
    waits = [await bucket.acquire() for _ in range(6)]
    assert waits[:4] == [0.0] * 4
    # the bucket alone would allow the 5th at +0.25 s: 5 calls in one second
    assert waits[4] == pytest.approx(1.0 + WINDOW_MARGIN_S)
    assert waits[5] == pytest.approx(0.0)
    assert t.now == pytest.approx(1000.0 + 1.0 + WINDOW_MARGIN_S)


async def test_one_token_bucket_spaces_calls_evenly() -> None:
    t = FakeTime()
    bucket = TokenBucket(RateSpec(20, burst=1), clock=t.clock, sleep=t.sleep)
    waits = [await bucket.acquire() for _ in range(3)]
    assert waits == [0.0, pytest.approx(0.05), pytest.approx(0.05)]


async def test_bucket_refills_with_time_but_not_past_capacity() -> None:
    t = FakeTime()
    bucket = TokenBucket(RateSpec(2, burst=2), clock=t.clock, sleep=t.sleep)
    await bucket.acquire()
    await bucket.acquire()
    t.now += 100
    assert [await bucket.acquire() for _ in range(3)] == [
        0.0,
        0.0,
        pytest.approx(1.0 + WINDOW_MARGIN_S),
    ]


async def test_concurrent_waiters_are_served_in_order_by_reservation() -> None:
    t = FakeTime()
    bucket = TokenBucket(RateSpec(1), clock=t.clock, sleep=t.sleep)
    reservations = [bucket.reserve() for _ in range(4)]
    step = 1.0 + WINDOW_MARGIN_S
    assert reservations == [0.0, pytest.approx(step), pytest.approx(2 * step),
                            pytest.approx(3 * step)]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([1.0, 3.0, 4.0, 20.0, 2.5]),
    burst=st.sampled_from([None, 1.0]),
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.3), min_size=1, max_size=120),
    jitter=st.lists(st.floats(min_value=-0.02, max_value=0.02), min_size=120, max_size=120),
)
def test_no_sliding_second_exceeds_the_rate(
    rate: float, burst: float | None, gaps: list[float], jitter: list[float]
) -> None:
    """Callers arriving at any pace, seen by the gateway up to 20 ms early or late: no
    one-second window holds more than ``floor(rate)`` calls."""
    t = FakeTime()
    bucket = TokenBucket(RateSpec(rate, burst=burst), clock=t.clock, sleep=t.sleep)
    slots = []
    for gap in gaps:
        t.now += gap
        slots.append(t.now + bucket.reserve())
    seen = sorted(s + j for s, j in zip(slots, jitter, strict=False))
    lo = 0
    for hi, at in enumerate(seen):
        while seen[lo] <= at - 1.0:
            lo += 1
        assert hi - lo + 1 <= max(1, int(rate))


async def test_cancelled_waiter_refunds_its_token() -> None:
    t = FakeTime()
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        entered.set()
        await gate.wait()

    bucket = TokenBucket(RateSpec(1), clock=t.clock, sleep=blocking_sleep)
    assert await bucket.acquire() == 0.0
    task = asyncio.create_task(bucket.acquire())
    await asyncio.wait_for(entered.wait(), timeout=2)  # the task has reserved and is waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # not 2 steps: the cancelled slot came back
    assert bucket.reserve() == pytest.approx(1.0 + WINDOW_MARGIN_S)


async def test_limits_are_per_group_and_counted() -> None:
    t = FakeTime()
    limits = RateLimits(
        {ApiGroup.START: RateSpec(4), ApiGroup.JOB_QUERY: RateSpec(20)},
        clock=t.clock,
        sleep=t.sleep,
    )
    for _ in range(5):
        await limits.acquire(ApiGroup.START)
    for _ in range(20):
        assert await limits.acquire(ApiGroup.JOB_QUERY) == 0.0
    assert await limits.acquire(ApiGroup.STOP) == 0.0  # no spec = unlimited
    start = limits.stats[ApiGroup.START]
    assert (start.acquired, start.delayed) == (5, 1)
    assert start.waited_seconds == pytest.approx(1.0 + WINDOW_MARGIN_S)
    assert limits.stats[ApiGroup.JOB_QUERY].delayed == 0


def test_documented_defaults() -> None:
    north = default_specs("cn-north-4")
    assert north[ApiGroup.START].rate == 4
    assert north[ApiGroup.ROOM_QUERY].rate == 20
    assert north[ApiGroup.JOB_QUERY].rate == 20
    assert default_specs("cn-east-3")[ApiGroup.START].rate == 3


async def test_client_waits_on_shared_limits() -> None:
    t = FakeTime()
    limits = RateLimits({ApiGroup.JOB_QUERY: RateSpec(1)}, clock=t.clock, sleep=t.sleep)
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"job_id": "j"}))
    )
    clients = [
        MetaStudioClient(http, base_url="https://x", project_id="p", limits=limits)
        for _ in range(2)
    ]
    for c in clients:
        await c.show_job("r", "j")
    assert t.slept == [pytest.approx(1.0 + WINDOW_MARGIN_S)]


# ------------------------------------------------------------------------- IAM token

IAM = "https://iam.myhuaweicloud.com"
PASSWORD = "pa55-w0rd-SECRET"


class Iam:
    def __init__(self, expires_in: timedelta = timedelta(hours=24)) -> None:
        self.issued = 0
        self.bodies: list[dict[str, object]] = []
        self.requests: list[httpx.Request] = []
        self.expires_in = expires_in
        self.revoked: set[str] = set()
        self.now = datetime(2024, 1, 1, tzinfo=UTC)
        self.status = 201

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "iam.myhuaweicloud.com":
            self.requests.append(request)
            self.bodies.append(json.loads(request.content))
            if self.status != 201:
                return httpx.Response(
                    self.status, json={"error_code": "IAM.0001", "error_msg": "bad password"}
                )
            self.issued += 1
            expires = (self.now + self.expires_in).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            return httpx.Response(
                201,
                json={"token": {"expires_at": expires}},
                headers={"X-Subject-Token": f"tok-{self.issued}"},
            )
        token = request.headers.get("X-Auth-Token", "")
        if not token or token in self.revoked:
            return httpx.Response(401, json={"error_code": "APIGW.0301", "error_msg": "token"})
        return httpx.Response(200, json={"job_id": "j", "token_used": token})


def _client(iam: Iam, **kw: object) -> tuple[MetaStudioClient, IamTokenAuth]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(iam.handler))
    auth = IamTokenAuth.with_password(
        http=http,
        iam_url=IAM,
        user="bob",
        password=PASSWORD,
        domain="acme",
        project_name="cn-north-4",
        clock=lambda: iam.now,
        **kw,
    )
    client = MetaStudioClient(
        http, base_url="https://ms", project_id="p", auth=auth, limits=RateLimits.unlimited()
    )
    return client, auth


async def test_token_fetched_once_for_concurrent_calls_and_cached() -> None:
    iam = Iam()
    client, auth = _client(iam)
    jobs = await asyncio.gather(*(client.show_job("r", "j") for _ in range(10)))
    assert {j.model_extra["token_used"] for j in jobs if j.model_extra} == {"tok-1"}
    await client.show_job("r", "j")
    assert iam.issued == 1
    body = iam.bodies[0]
    assert body == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "bob", "password": PASSWORD, "domain": {"name": "acme"}}
                },
            },
            "scope": {"project": {"name": "cn-north-4"}},
        }
    }
    assert PASSWORD not in repr(auth)


async def test_token_refreshed_before_expiry() -> None:
    iam = Iam()
    client, _ = _client(iam)
    await client.show_job("r", "j")
    iam.now += timedelta(hours=22, minutes=59)
    await client.show_job("r", "j")
    assert iam.issued == 1
    iam.now += timedelta(minutes=2)  # within the 1 h refresh margin
    job = await client.show_job("r", "j")
    assert iam.issued == 2
    assert job.model_extra == {"token_used": "tok-2"}


async def test_token_refreshed_once_on_401() -> None:
    iam = Iam()
    client, _ = _client(iam)
    await client.show_job("r", "j")
    iam.revoked.add("tok-1")
    job = await client.show_job("r", "j")
    assert job.model_extra == {"token_used": "tok-2"}
    iam.revoked.add("tok-2")
    iam.revoked.add("tok-3")  # the refreshed token is rejected too: give up with AuthError
    with pytest.raises(AuthError):
        await client.show_job("r", "j")
    assert iam.issued == 3


async def test_concurrent_401s_trigger_a_single_refresh() -> None:
    iam = Iam()
    client, _ = _client(iam)
    await client.show_job("r", "j")
    iam.revoked.add("tok-1")
    await asyncio.gather(*(client.show_job("r", "j") for _ in range(8)))
    assert iam.issued == 2


async def test_iam_failure_maps_to_auth_error_without_password() -> None:
    iam = Iam()
    iam.status = 401
    client, _ = _client(iam)
    with pytest.raises(AuthError) as info:
        await client.show_job("r", "j")
    assert PASSWORD not in str(info.value)
    iam.status = 503
    with pytest.raises(CloudUnavailable):
        await client.show_job("r", "j")


async def test_aksk_derived_token_request_is_signed() -> None:
    iam = Iam()
    http = httpx.AsyncClient(transport=httpx.MockTransport(iam.handler))
    auth = IamTokenAuth.with_aksk(
        http=http, iam_url=IAM, ak="AK1", sk="SK1secret", project_id="p1", clock=lambda: iam.now
    )
    assert await auth.token() == "tok-1"
    request = iam.requests[0]
    path, _, query = request.url.raw_path.decode().partition("?")
    assert (
        signer.verify(
            authorization=request.headers["Authorization"],
            method="POST",
            path=path,
            raw_query=query,
            headers=dict(request.headers),
            body=request.content,
            secret_for={"AK1": "SK1secret"}.get,
            now=iam.now,
        )
        == "AK1"
    )
    assert b"SK1secret" not in request.content
    assert iam.bodies[0]["auth"] == {
        "identity": {"methods": ["hw_ak_sk"]},
        "scope": {"project": {"id": "p1"}},
    }


class LaggyTime:
    """A clock advanced by hand; sleepers wake when it passes their deadline (a busy loop
    wakes everyone late at once, like a blocked event loop)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, fut))
        await fut

    async def jump(self, to: float) -> None:
        self.now = to
        for due, fut in list(self.sleepers):
            if due <= to and not fut.done():
                fut.set_result(None)
                self.sleepers.remove((due, fut))
        for _ in range(5):
            await asyncio.sleep(0)


async def test_calls_released_late_together_still_keep_the_window() -> None:
    t = LaggyTime()
    bucket = TokenBucket(RateSpec(1), clock=t.clock, sleep=t.sleep)
    let_go: list[float] = []

    async def call() -> None:
        await bucket.acquire()
        let_go.append(t.now)

    first = asyncio.create_task(call())
    await t.jump(1000.0)
    late = [asyncio.create_task(call()) for _ in range(2)]  # planned at +1.05 s and +2.10 s
    await t.jump(1000.0)
    await t.jump(1003.0)  # the loop was blocked: both plans are due at once
    await t.jump(1004.1)
    await asyncio.wait_for(asyncio.gather(first, *late), timeout=5)
    assert let_go[0] == 1000.0 and let_go[1] == 1003.0
    assert let_go[2] >= let_go[1] + 1.0  # not together with the other late one
