"""Hostile callbacks at the intake (issue 20), over real HTTP into a real SQLite inbox.

The signature covers the path and the time, never the body: these are signed callbacks with
bodies an attacker chose. Refusals change nothing; acceptance never harms the genuine ones.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.callbacks.verify import CallbackAuthError, mss_signature, verify_callback
from orchestrator.settings import CallbackSettings
from tests.support.callbacks import T0, Harness, rtmp_body

T = int(T0.timestamp())


# --- time sanity -----------------------------------------------------------------------------


async def test_a_time_ahead_beyond_the_skew_is_refused_and_changes_nothing(
    make_harness: Any,
) -> None:
    h: Harness = await make_harness()
    r = await h.send("CONNECTED", hw_time=T + 31)  # within tolerance_s (300), beyond 30 s
    assert (r.status_code, r.json()) == (401, {"status": "error", "reason": "unauthorized"})
    assert h.metrics.results.items == [("-", "rejected_401")]
    await h.intake.drain()
    assert await h.store.inbox_pending() == [] and h.sink.posted.items == []
    r = await h.send("CONNECTED", hw_time=T + 30)  # clock skew within the limit: accepted
    assert r.status_code == 200


async def test_the_skew_is_a_setting(make_harness: Any) -> None:
    h: Harness = await make_harness(max_future_skew_s=0)
    assert (await h.send("CONNECTED", hw_time=T + 1)).status_code == 401
    assert (await h.send("CONNECTED", hw_time=T)).status_code == 200
    with pytest.raises(ValidationError, match="max_future_skew_s"):
        CallbackSettings(max_future_skew_s=-1)


async def test_a_forged_time_ahead_never_silences_later_genuine_callbacks(
    make_harness: Any,
) -> None:
    """A forged CONNECTED claiming a time 25 s ahead (within the skew) is ordered at its
    receipt: the genuine DISCONNECTED signed a second later still reaches the room."""
    h: Harness = await make_harness()
    assert (await h.send("CONNECTED", hw_time=T + 25)).status_code == 200
    h.now[0] = T0 + timedelta(seconds=1)
    assert (await h.send("DISCONNECTED", hw_time=T + 1)).status_code == 200
    await h.metrics.results.wait_for(2)
    assert [s for _, s, _ in h.rtmp_posts()] == ["CONNECTED", "DISCONNECTED"]
    assert ("RTMP_STREAM_STATE_CHANGE", "stale") not in h.metrics.results.items
    # and the room never hears of a time ahead of the receipt
    assert all(at <= T0 + timedelta(seconds=1) for _, _, at in h.rtmp_posts())


def test_verify_refuses_a_time_ahead_of_the_skew() -> None:
    sig = mss_signature("k", "/cb", format(T + 60, "x"))
    headers = {"x-hw-mss-secret": sig, "x-hw-mss-time": format(T + 60, "x")}
    kw: dict[str, Any] = {
        "auth_type": "MSS_A_HEAD", "path": "/cb", "raw_query": "", "headers": headers,
        "keys": ["k"], "uri_mode": "path", "full_url": None, "now": T0,
    }  # fmt: skip
    verify_callback(**kw)  # without a skew limit only tolerance_s applies
    with pytest.raises(CallbackAuthError) as err:
        verify_callback(**kw, max_future_s=30)
    assert err.value.reason == "time_in_future"


# --- encoding -------------------------------------------------------------------------------


def _poison(kind: str) -> bytes:
    """A callback whose double-encoded message holds a lone surrogate or NUL as a JSON escape:
    valid JSON, but text no UTF-8 store (or PostgreSQL, for NUL) can hold."""
    escape = {"surrogate": "\\ud800", "nul": "\\u0000"}[kind]
    message = (
        '{"room_id": "room-1", "job_id": "job-1", "output_url": "rtmp://x/y", '
        f'"state": "CONNECTED", "note": "{escape}"}}'
    )
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": message}).encode()


@pytest.mark.parametrize("kind", ["surrogate", "nul"])
async def test_a_poisoned_callback_is_refused_alone_and_its_batch_is_stored(
    make_harness: Any, kind: str
) -> None:
    """28 genuine callbacks and one poisoned one arrive together (one group commit): the
    poisoned one gets 400, every genuine one 200 and its inbox row."""
    h: Harness = await make_harness()
    query, headers = h.sign()

    async def genuine(i: int) -> int:
        body = rtmp_body("CONNECTED" if i % 2 else "DISCONNECTED", job=f"job-g{i}", room="room-1")
        return (await h.post_raw(body, query=query, headers=headers)).status_code

    async def poisoned() -> int:
        return (await h.post_raw(_poison(kind), query=query, headers=headers)).status_code

    statuses = await asyncio.gather(poisoned(), *(genuine(i) for i in range(28)))
    assert statuses[0] == 400
    assert statuses[1:] == [202] * 28  # stored (their jobs are unknown to the harness rooms)
    await h.intake.drain()
    keys = [k for k in await _inbox_keys(h) if k.startswith("v1|job-g")]
    assert len(keys) == 28
    assert ("-", "rejected_400") in h.metrics.results.items


async def _inbox_keys(h: Harness) -> list[str]:
    from sqlalchemy import text

    engine = h.store._engine  # reading the table the test wrote
    assert engine is not None
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT dedupe_key FROM inbox"))
        return [str(r[0]) for r in rows]
