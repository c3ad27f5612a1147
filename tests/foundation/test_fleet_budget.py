"""The tenant budget split between instances: never more than the tenant's limit in sum."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.fleet.budget import ALONE, tenant_shares
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits, RateSpec


@given(
    data=st.data(),
    total=st.integers(min_value=0, max_value=20_000),
    k=st.integers(min_value=2, max_value=12),
    reader_share=st.floats(min_value=0.0, max_value=0.9),
)
def test_shares_of_all_instances_never_exceed_one(
    data: st.DataObject, total: int, k: int, reader_share: float
) -> None:
    # leases are exclusive: a partition of (some of) the rooms, one reader at most
    owned: list[int] = []
    left = total
    for _ in range(k):
        n = data.draw(st.integers(min_value=0, max_value=left))
        owned.append(n)
        left -= n
    reader = data.draw(st.integers(min_value=-1, max_value=k - 1))
    per_instance = [
        tenant_shares(
            owned=n,
            total=total,
            live_instances=k,
            reader=(i == reader),
            reader_query_share=reader_share,
        )
        for i, n in enumerate(owned)
    ]
    for group in ApiGroup:
        assert sum(s[group] for s in per_instance) <= 1.0 + 1e-9


def test_alone_keeps_everything_and_bad_input_is_refused() -> None:
    assert tenant_shares(owned=3, total=10, live_instances=1, reader=False) == ALONE
    half = tenant_shares(owned=5, total=10, live_instances=2, reader=True, reader_query_share=0.2)
    assert half[ApiGroup.START] == 0.5
    assert half[ApiGroup.JOB_QUERY] == pytest.approx(0.8 * 0.5 + 0.2)
    with pytest.raises(ValueError, match="owned rooms"):
        tenant_shares(owned=11, total=10, live_instances=2, reader=False)
    with pytest.raises(ValueError, match="reader_query_share"):
        tenant_shares(owned=1, total=10, live_instances=2, reader=False, reader_query_share=1.0)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += s
        await asyncio.sleep(0)


async def test_two_instances_sharing_a_group_stay_within_the_tenant_limit() -> None:
    """Calls of both instances, merged, never put more than 4 starts in any second."""
    t = FakeTime()
    spec = {ApiGroup.START: RateSpec(4)}
    a = RateLimits(spec, clock=t.clock, sleep=t.sleep)
    b = RateLimits(spec, clock=t.clock, sleep=t.sleep)
    a.apply_shares({ApiGroup.START: 0.5})
    b.apply_shares({ApiGroup.START: 0.5})
    stamps: list[float] = []

    async def caller(limits: RateLimits, n: int) -> None:
        for _ in range(n):
            await limits.acquire(ApiGroup.START)
            stamps.append(t.now)

    await asyncio.gather(caller(a, 20), caller(b, 20))
    stamps.sort()
    for i, s in enumerate(stamps):
        in_window = [x for x in stamps[i:] if x < s + 1.0]
        assert len(in_window) <= 4, (s, in_window)


async def test_a_zero_share_pauses_until_a_share_is_given_back() -> None:
    limits = RateLimits({ApiGroup.START: RateSpec(4)})
    limits.apply_shares({ApiGroup.START: 0.0})
    assert limits.rate(ApiGroup.START) == 0.0
    waiter = asyncio.create_task(limits.acquire(ApiGroup.START))
    await asyncio.sleep(0)
    assert not waiter.done()
    limits.apply_shares({ApiGroup.START: 0.25})
    await asyncio.wait_for(waiter, 5)
    assert limits.rate(ApiGroup.START) == 1.0
    with pytest.raises(ValueError, match="within"):
        limits.apply_shares({ApiGroup.START: 1.5})


async def test_a_rebalance_keeps_the_bucket_instead_of_a_fresh_burst() -> None:
    t = FakeTime()
    limits = RateLimits({ApiGroup.JOB_QUERY: RateSpec(20)}, clock=t.clock, sleep=t.sleep)
    for _ in range(20):  # the burst is spent
        await limits.acquire(ApiGroup.JOB_QUERY)
    spent_at = t.now
    limits.apply_shares({ApiGroup.JOB_QUERY: 0.5})
    await limits.acquire(ApiGroup.JOB_QUERY)
    assert t.now > spent_at  # no new burst handed out by the rebalance


async def test_a_growing_share_is_earned_from_now_not_spent_at_once() -> None:
    """Rooms moved here from an instance that may just have used their part of the limit:
    the first call after the rise waits one interval at the new rate."""
    t = FakeTime()
    limits = RateLimits({ApiGroup.START: RateSpec(4, burst=1)}, clock=t.clock, sleep=t.sleep)
    limits.apply_shares({ApiGroup.START: 0.0})
    t.now += 10.0  # a long pause: a bucket left alone would be full
    limits.apply_shares({ApiGroup.START: 0.5})
    await limits.acquire(ApiGroup.START)
    assert t.now == pytest.approx(10.5)  # 1 / (4 * 0.5)
    limits.apply_shares({ApiGroup.START: 0.25})  # shrinking keeps what is saved (none here)
    limits.apply_shares({ApiGroup.START: 0.25})  # unchanged: not a rise, nothing drained
    t.now += 4.0
    await limits.acquire(ApiGroup.START)
    assert t.now == pytest.approx(14.5)  # the saved token of the quiet 4 s, at once
