"""SLA accumulator (pure) and the alert webhook against a real HTTP receiver."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime, timedelta

import httpx
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
