"""ManualClock wakes sleepers deterministically; policy arithmetic is exact for a given jitter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.clock import ManualClock, SystemClock
from orchestrator.rooms.policy import Policy, poll_period
from orchestrator.settings import RecoverySettings


async def test_manual_clock_wakes_in_due_order_only_when_advanced() -> None:
    clock = ManualClock()
    t0 = clock.now()
    woke: list[str] = []

    async def sleeper(name: str, after: float) -> None:
        await clock.sleep_until(t0 + timedelta(seconds=after))
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 20), ("a", 10), ("c", 30))]
    clock.advance(15)  # before the sleepers even run: "a" is already due when it looks
    await asyncio.wait_for(tasks[1], 1)
    assert woke == ["a"]
    assert clock.sleepers == 2
    assert clock.next_wakeup() == t0 + timedelta(seconds=20)
    clock.advance(100)
    await asyncio.wait_for(asyncio.gather(*tasks), 1)
    assert woke == ["a", "b", "c"]
    assert clock.now() == t0 + timedelta(seconds=115)


async def test_manual_clock_past_deadline_returns_at_once_and_rejects_going_back() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    await asyncio.wait_for(clock.sleep_until(clock.now()), 1)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))  # naive on purpose


async def test_system_clock_is_aware_utc_and_past_sleep_is_immediate() -> None:
    clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is UTC
    await asyncio.wait_for(clock.sleep_until(now - timedelta(seconds=1)), 1)


def test_policy_from_settings_and_backoffs() -> None:
    p = Policy.from_settings(RecoverySettings(grace_s=3, refresh_tries=0), outputs=0)
    assert (p.grace_s, p.refresh_tries, p.outputs) == (3, 1, 1)
    q = Policy()
    assert q.jittered(10, 0.5) == 10
    assert q.jittered(10, 0.0) == 8
    assert q.jittered(10, 0.99999) == pytest.approx(12, rel=1e-3)
    assert [q.refresh_delay(n, 0.5) for n in range(3)] == [2.0, 3.0, 4.5]
    assert q.restart_delay(1, 0.5) == 5
    assert q.restart_delay(20, 0.99) == 300  # capped
    assert q.restart_delay(1, 0.5, retry_after=60) == 60
    # attempts since the room was last LIVE: the first at once, then the backoff
    assert [q.restart_wait(n, 0.5) for n in range(1, 5)] == [0.0, 5.0, 10.0, 20.0]
    assert q.restart_wait(1, 0.5, retry_after=7) == 7
    # after temporary API errors: gentler, same cap, same Retry-After floor
    assert [q.api_retry_wait(n, 0.5) for n in range(1, 5)] == [0.0, 2.0, 3.0, 4.5]
    assert q.api_retry_wait(40, 0.99) == 300
    assert q.api_retry_wait(3, 0.5, retry_after=30) == 30
    assert q.refresh_attempts == 3


def test_poll_period_spends_the_query_budget_within_bounds() -> None:
    kw = {"longest_s": 30.0, "shortest_s": 5.0, "queries_per_s": 3.0}
    assert poll_period(0, **kw) == 5.0  # one page, at the shortest
    assert poll_period(10, **kw) == 5.0
    assert poll_period(1000, **kw) == 5.0  # 10 pages / 3 per s = 3.3 s: still the shortest
    assert poll_period(2000, **kw) == pytest.approx(20 / 3)
    assert poll_period(9000, **kw) == 30.0
    assert poll_period(10_000, **kw) == 30.0  # 100 pages would need 33 s: the longest wins
    assert poll_period(101, **kw) == 5.0  # 2 pages
    # shortest above longest: the longest (the operator's explicit bound) wins
    assert poll_period(10, longest_s=2.0, shortest_s=5.0, queries_per_s=3.0) == 2.0


@given(
    jobs=st.integers(0, 1_000_000),
    longest=st.floats(0.1, 3600),
    shortest=st.floats(0.1, 3600),
    qps=st.floats(0.01, 100),
)
def test_poll_period_never_exceeds_the_longest_nor_the_budget_above_the_shortest(
    jobs: int, longest: float, shortest: float, qps: float
) -> None:
    period = poll_period(jobs, longest_s=longest, shortest_s=shortest, queries_per_s=qps)
    assert min(shortest, longest) <= period <= longest
    pages = max(1, -(-jobs // 100))
    if period < longest:  # not capped by the operator's bound: within the query budget
        assert pages / period <= qps * (1 + 1e-9)
