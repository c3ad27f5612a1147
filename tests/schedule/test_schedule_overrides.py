"""Runtime overrides: pure functions, JSON round trip, applied through with_overrides."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orchestrator.schedule.windows import (
    EMPTY_OVERRIDES,
    RoomSchedule,
    add_window,
    pause,
    prune,
    resume,
    skip_next,
)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


S = RoomSchedule.build([{"name": "eve", "cron": "0 20 * * *", "duration": "2h"}])


def rt(ov: dict[str, object]) -> dict[str, object]:
    return json.loads(json.dumps(ov))  # type: ignore[no-any-return]


def test_pause_resume_round_trip() -> None:
    ov = rt(pause(EMPTY_OVERRIDES))
    assert S.with_overrides(ov).occurrences(utc(2026, 7, 1), utc(2026, 7, 3)) == []
    assert S.with_overrides(ov).active_at(utc(2026, 7, 1, 21)) is None
    ov = rt(resume(ov))
    assert len(S.with_overrides(ov).occurrences(utc(2026, 7, 1), utc(2026, 7, 3))) == 2


def test_add_window_round_trip_and_exempt_from_exclusions() -> None:
    s = RoomSchedule.build([], exclude=["2026-07-04"])
    ov = rt(add_window({}, utc(2026, 7, 4, 10), utc(2026, 7, 4, 12)))
    assert add_window(ov, utc(2026, 7, 4, 10), utc(2026, 7, 4, 12)) == ov  # idempotent
    (w,) = s.with_overrides(ov).occurrences(utc(2026, 7, 4), utc(2026, 7, 5))
    assert (w.start, w.end) == (utc(2026, 7, 4, 10), utc(2026, 7, 4, 12))
    with pytest.raises(ValueError, match="not after start"):
        add_window(ov, utc(2026, 7, 4, 12), utc(2026, 7, 4, 10))


def test_skip_next_round_trip() -> None:
    ov = rt(skip_next({}, S, utc(2026, 7, 1, 12)))
    assert ov["skipped"] == ["eve@20260701T200000Z"]
    s = S.with_overrides(ov)
    nxt = s.next_after(utc(2026, 7, 1, 12))
    assert nxt is not None and nxt.start == utc(2026, 7, 2, 20)
    ov2 = skip_next(ov, S, utc(2026, 7, 1, 12))  # skips the one after
    assert ov2["skipped"] == ["eve@20260701T200000Z", "eve@20260702T200000Z"]
    assert prune(ov2, utc(2026, 7, 20))["skipped"] == []


def test_bad_override_dicts_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        S.with_overrides({"pasued": True})
    with pytest.raises(ValueError, match="paused"):
        pause({"paused": "yes"})
    with pytest.raises(ValueError, match="no upcoming window"):
        skip_next({}, RoomSchedule.build([]), utc(2026, 7, 1))
