"""Hypothesis: for random cron specs and zones, occurrences are sane and agree with active_at.

Specs are drawn so that merged chains end every day: a chain of touching windows that never
ends is effectively ``always`` and its ids are only stable within ~400 days (documented).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.schedule.windows import RoomSchedule

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Shanghai", "Australia/Lord_Howe"]

cron = st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    st.sampled_from(["0", "30", "*/20", "15,45"]),
    st.sampled_from(["2", "1-3", "20", "0,12"]),
    st.sampled_from(["*", "1-5", "0", "6,0"]),
)
spec = st.fixed_dictionaries(
    {"cron": cron, "duration": st.integers(min_value=60, max_value=10 * 3600)}
)


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(spec, min_size=1, max_size=3),
    tz=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 1)),
    probe=st.lists(st.integers(min_value=0, max_value=4 * 24 * 3600), min_size=1, max_size=8),
    daily=st.sampled_from([None, "04:00"]),
)
def test_occurrences_sorted_disjoint_and_agree_with_active_at(
    specs: list[dict[str, object]],
    tz: str,
    start: datetime,
    probe: list[int],
    daily: str | None,
) -> None:
    s = RoomSchedule.build(specs, timezone=tz, min_remaining_s=0, daily_restart=daily)
    lo = start.replace(tzinfo=UTC)
    hi = lo + timedelta(days=4)
    wins = s.occurrences(lo, hi)
    for a, b in itertools.pairwise(wins):
        assert a.end is not None and a.start < a.end <= b.start
        assert (a.end == b.start) == a.rollover  # merged: only planned rollovers touch
    assert len({w.window_id for w in wins}) == len(wins)
    for off in probe:
        t = lo + timedelta(seconds=off)
        expected = next((w for w in wins if w.contains(t)), None)
        assert s.active_at(t) == expected
        assert s.current(t) == expected
