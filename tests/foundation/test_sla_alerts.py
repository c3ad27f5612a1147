"""SLA accumulator (pure) and the alert webhook against a real HTTP receiver."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta, timezone

import httpx
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orchestrator.alerts import Alert, WebhookSender
from orchestrator.sla import SlaAccumulator

T0 = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)


def test_sla_counts_scheduled_live_drops_and_recovery_across_midnight() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="STARTING", order_on=True, at=T0)
    acc.observe("r", state="LIVE", order_on=True, at=T0 + timedelta(minutes=1))
    acc.observe("r", state="DEGRADED", order_on=True, at=T0 + timedelta(minutes=50))
    acc.observe("r", state="LIVE", order_on=True, at=T0 + timedelta(minutes=50, seconds=12))
    acc.tick(T0 + timedelta(hours=2))
    d = acc.drain()
    day1, day2 = d[("r", date(2026, 11, 24))], d[("r", date(2026, 11, 25))]
    assert day1.scheduled_s == 3600
    assert day1.live_s == 3600 - 60 - 12
    assert day1.drops == 1 and day1.recoveries == [12.0]
    assert day2.scheduled_s == 3600 and day2.live_s == 3600
    assert acc.drain() == {}, "drain hands deltas over once"


def test_sla_off_time_is_not_scheduled() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="IDLE", order_on=False, at=T0)
    acc.tick(T0 + timedelta(minutes=30))
    assert all(v.scheduled_s == 0 for v in acc.drain().values())


async def test_webhook_retries_until_delivered() -> None:
    got: list[dict[str, str]] = []
    arrived = asyncio.Event()
    calls = 0

    async def hook(request: Request) -> JSONResponse:
        nonlocal calls
        calls += 1
        if calls < 3:
            return JSONResponse({"error": "busy"}, status_code=503)
        got.append(await request.json())
        arrived.set()
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        sender = WebhookSender("http://t/hook", http=http, base_delay_s=0.0, rng=random.Random(1))
        task = asyncio.create_task(sender.run(), name="webhook")
        sender.submit(Alert("r1", "quarantined", "SET", "ladder exhausted", T0))
        await asyncio.wait_for(arrived.wait(), 5)
        task.cancel()
    assert calls == 3
    assert got == [
        {
            "type": "alert",
            "room_id": "r1",
            "kind": "quarantined",
            "status": "SET",
            "message": "ladder exhausted",
            "at": T0.isoformat(),
        }
    ]
    assert sender.sent == 1 and sender.failed == 0


def test_sla_quarantine_is_a_drop_and_recovery_counts_until_live_again() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="LIVE", order_on=True, at=T0)
    acc.observe("r", state="QUARANTINED", order_on=True, at=T0 + timedelta(seconds=30))
    acc.observe("r", state="UNKNOWN", order_on=True, at=T0 + timedelta(seconds=90))  # reset
    acc.observe("r", state="STARTING", order_on=True, at=T0 + timedelta(seconds=91))
    acc.observe("r", state="LIVE", order_on=True, at=T0 + timedelta(seconds=100))
    d = acc.drain()[("r", T0.date())]
    assert (d.scheduled_s, d.live_s, d.drops, d.recoveries) == (100, 30, 1, [70.0])


def test_sla_stopping_is_not_a_drop_and_off_forgets_an_open_drop() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="LIVE", order_on=True, at=T0)
    acc.observe("r", state="STOPPING", order_on=False, at=T0 + timedelta(seconds=10))
    acc.observe("r", state="IDLE", order_on=False, at=T0 + timedelta(seconds=20))
    acc.observe("r", state="STARTING", order_on=True, at=T0 + timedelta(seconds=30))
    acc.observe("r", state="LIVE", order_on=True, at=T0 + timedelta(seconds=40))
    acc.observe("r", state="DEGRADED", order_on=True, at=T0 + timedelta(seconds=50))
    assert acc.down_since("r") == T0 + timedelta(seconds=50)
    acc.observe("r", state="STOPPING", order_on=False, at=T0 + timedelta(seconds=55))
    assert acc.down_since("r") is None
    acc.observe("r", state="LIVE", order_on=True, at=T0 + timedelta(seconds=60))
    d = acc.drain()[("r", T0.date())]
    assert (d.scheduled_s, d.live_s, d.drops, d.recoveries) == (35, 20, 1, [])


def test_sla_days_are_utc_days_whatever_the_zone_of_the_times() -> None:
    shanghai = timezone(timedelta(hours=8))
    acc = SlaAccumulator()
    start = datetime(2026, 11, 25, 7, 59, tzinfo=shanghai)  # 2026-11-24 23:59 UTC
    acc.observe("r", state="LIVE", order_on=True, at=start)
    acc.tick(start + timedelta(minutes=2))
    d = acc.drain()
    assert d[("r", date(2026, 11, 24))].live_s == 60
    assert d[("r", date(2026, 11, 25))].live_s == 60


def test_sla_restore_gives_undelivered_deltas_back_to_the_next_drain() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="LIVE", order_on=True, at=T0)
    acc.observe("r", state="DEGRADED", order_on=True, at=T0 + timedelta(seconds=10))
    acc.observe("r", state="LIVE", order_on=True, at=T0 + timedelta(seconds=13))
    failed = acc.drain()  # the store was down: hand it back
    acc.restore(failed)
    acc.tick(T0 + timedelta(seconds=20))
    d = acc.drain()[("r", T0.date())]
    assert (d.scheduled_s, d.live_s, d.drops, d.recoveries) == (20, 17, 1, [3.0])


_STATES = ["IDLE", "STARTING", "LIVE", "DEGRADED", "REFRESHING", "BACKOFF", "QUARANTINED"]


@given(
    st.lists(
        st.tuples(st.sampled_from(_STATES), st.booleans(), st.integers(0, 40_000)),
        min_size=1,
        max_size=40,
    )
)
def test_sla_live_never_exceeds_scheduled_and_seconds_add_up(
    steps: list[tuple[str, bool, int]],
) -> None:
    acc = SlaAccumulator()
    now = T0
    on_s = live_s = 0.0
    prev: tuple[str, bool] | None = None
    for state, order_on, gap in steps:
        if prev is not None:
            on_s += gap if prev[1] else 0
            live_s += gap if prev[1] and prev[0] == "LIVE" else 0
        now += timedelta(seconds=gap)
        acc.observe("r", state=state, order_on=order_on, at=now)
        prev = (state, order_on)
    deltas = acc.drain().values()
    for d in deltas:
        assert d.live_s <= d.scheduled_s
        assert all(r >= 0 for r in d.recoveries)
    assert sum(d.scheduled_s for d in deltas) == on_s
    assert sum(d.live_s for d in deltas) == live_s
    assert sum(d.drops for d in deltas) >= sum(len(d.recoveries) for d in deltas)


class _Hook:
    """A webhook receiver answering a scripted list of statuses (then 200)."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.headers = headers or {}
        self.calls = 0

    async def __call__(self, request: Request) -> JSONResponse:
        self.calls += 1
        status = self.statuses.pop(0) if self.statuses else 200
        return JSONResponse({}, status_code=status, headers=self.headers)


async def _send(hook: _Hook, *, retries: int = 3) -> tuple[WebhookSender, list[float]]:
    delays: list[float] = []

    async def sleep(s: float) -> None:
        delays.append(s)

    async def endpoint(request: Request) -> JSONResponse:
        return await hook(request)

    app = Starlette(routes=[Route("/hook", endpoint, methods=["POST"])])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        sender = WebhookSender(
            "http://t/hook", http=http, retries=retries, rng=random.Random(3), sleep=sleep
        )
        task = asyncio.create_task(sender.run(), name="webhook")
        sender.submit(Alert("r1", "unrecovered", "SET", "down", T0))
        await asyncio.wait_for(sender.drain(), 5)
        task.cancel()
    return sender, delays


async def test_webhook_does_not_retry_a_refusal() -> None:
    hook = _Hook([400])
    sender, delays = await _send(hook)
    assert (hook.calls, sender.sent, sender.failed, delays) == (1, 0, 1, [])


async def test_webhook_honours_retry_after_and_gives_up_after_its_retries() -> None:
    hook = _Hook([429, 503, 503, 503], headers={"Retry-After": "7"})
    sender, delays = await _send(hook, retries=2)
    assert (hook.calls, sender.sent, sender.failed) == (3, 0, 1)
    assert len(delays) == 2 and all(d >= 7 for d in delays)


def test_webhook_queue_drops_the_oldest_when_full() -> None:
    sender = WebhookSender("http://t/hook", http=httpx.AsyncClient(), queue_size=2)
    for i in range(3):
        sender.submit(Alert(f"r{i}", "quarantined", "SET", "", T0))
    assert sender.dropped == 1


async def test_webhook_worker_survives_an_unexpected_failure() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("receiver bug")
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sender = WebhookSender("http://t/hook", http=http)
        task = asyncio.create_task(sender.run(), name="webhook")
        sender.submit(Alert("r1", "quarantined", "SET", "", T0))
        sender.submit(Alert("r1", "quarantined", "CLEARED", "", T0))
        await asyncio.wait_for(sender.drain(), 5)
        assert not task.done(), "one bad delivery must not end the sender"
        task.cancel()
    assert (sender.sent, sender.failed) == (1, 1)
