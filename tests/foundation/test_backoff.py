"""The one retry-delay formula: bounds, growth, reset, Retry-After as a floor."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.backoff import Backoff, capped, jittered


def test_capped_grows_then_stops_at_the_cap() -> None:
    got = [capped(n, base_s=0.5, cap_s=10.0) for n in range(8)]
    assert got == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert capped(10_000, base_s=0.5, cap_s=10.0) == 10.0  # no overflow on long outages


def test_capped_refuses_a_negative_attempt() -> None:
    with pytest.raises(ValueError, match="attempt"):
        capped(-1, base_s=1.0, cap_s=2.0)


@given(
    d=st.floats(min_value=0.0, max_value=1e6),
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    spread=st.floats(min_value=0.0, max_value=1.0),
)
def test_jitter_stays_within_its_band(d: float, u: float, spread: float) -> None:
    j = jittered(d, u, spread=spread)
    assert d * (1.0 - spread) - 1e-9 <= j <= d + 1e-9


@given(seed=st.integers(), n=st.integers(min_value=1, max_value=80))
def test_delays_never_below_half_nor_above_the_cap(seed: int, n: int) -> None:
    b = Backoff(cap_s=30.0, base_s=0.5, rng=random.Random(seed))
    for i in range(n):
        nominal = min(30.0, 0.5 * 2.0**i)
        d = b.next_delay()
        assert nominal / 2 <= d <= nominal


def test_reset_starts_over_and_retry_after_is_a_floor() -> None:
    b = Backoff(cap_s=8.0, base_s=1.0, rng=random.Random(1))
    for _ in range(5):
        b.next_delay()
    assert b.peek() == 8.0
    b.reset()
    assert b.peek() == 1.0
    assert b.next_delay(retry_after=42.0) == 42.0  # beyond the cap: the server knows best
    assert b.attempt == 1


def test_bad_parameters_are_refused_with_the_values() -> None:
    with pytest.raises(ValueError, match="base_s=0"):
        Backoff(cap_s=1.0, base_s=0.0)
    with pytest.raises(ValueError, match=r"cap_s=0\.1"):
        Backoff(cap_s=0.1, base_s=1.0)
