"""Runtime schedule overrides (pause, resume, added windows, skipped windows): pure functions.

The app persists the result as JSON per room; every function takes and returns that shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from orchestrator.schedule.tz import as_utc, parse_aware, stamp, window_start_of

if TYPE_CHECKING:
    from orchestrator.schedule.windows import RoomSchedule

__all__ = [
    "EMPTY_OVERRIDES",
    "add_window",
    "check_overrides",
    "pause",
    "prune",
    "resume",
    "skip_next",
]

# --- runtime overrides (persisted as JSON by the app; these functions are pure) -----------------
#
# Shape (version 1):
#   {"v": 1, "paused": false,
#    "added":   [{"start": "2026-10-01T12:00:00+00:00", "end": "...", "name": "added-…"}],
#    "skipped": ["<window_id>", ...]}

EMPTY_OVERRIDES: dict[str, Any] = {"v": 1, "paused": False, "added": [], "skipped": []}


def check_overrides(ov: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise and validate an override dict (missing keys take defaults)."""
    unknown = set(ov) - set(EMPTY_OVERRIDES)
    if unknown:
        raise ValueError(f"overrides: unknown key(s) {', '.join(sorted(unknown))}")
    if ov.get("v", 1) != 1:
        raise ValueError(f"overrides: unsupported version {ov.get('v')!r}")
    paused = ov.get("paused", False)
    added = ov.get("added", [])
    skipped = ov.get("skipped", [])
    if not isinstance(paused, bool):
        raise ValueError("overrides.paused must be true or false")
    if not isinstance(added, list) or not all(
        isinstance(a, dict) and {"start", "end"} <= set(a) for a in added
    ):
        raise ValueError("overrides.added must be a list of {start, end}")
    if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
        raise ValueError("overrides.skipped must be a list of window ids")
    return {"v": 1, "paused": paused, "added": [dict(a) for a in added], "skipped": list(skipped)}


def pause(ov: Mapping[str, Any]) -> dict[str, Any]:
    """Stop following the schedule (a running window is closed by the scheduler's reload)."""
    return {**check_overrides(ov), "paused": True}


def resume(ov: Mapping[str, Any]) -> dict[str, Any]:
    return {**check_overrides(ov), "paused": False}


def add_window(
    ov: Mapping[str, Any], start: datetime, end: datetime, *, name: str | None = None
) -> dict[str, Any]:
    """Add a one-off window (aware datetimes; exempt from exclusions)."""
    o = check_overrides(ov)
    s, e = as_utc(start), as_utc(end)
    if e <= s:
        raise ValueError(f"end {e.isoformat()} is not after start {s.isoformat()}")
    item: dict[str, Any] = {"start": s.isoformat(), "end": e.isoformat()}
    item["name"] = name or f"added-{stamp(s)}-{stamp(e)}"
    if item not in o["added"]:
        o["added"] = [*o["added"], item]
    return o


def skip_next(ov: Mapping[str, Any], schedule: RoomSchedule, now: datetime) -> dict[str, Any]:
    """Skip the next window that has not started yet (as the schedule with ``ov`` shows it).

    ValueError if there is none. A window already running is not affected (use pause/stop).
    """
    o = check_overrides(ov)
    nxt = schedule.with_overrides(o).next_after(now)
    if nxt is None:
        raise ValueError("no upcoming window to skip")
    o["skipped"] = [*o["skipped"], nxt.window_id]
    return o


def prune(ov: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Drop added windows that ended and skips whose window started more than a week ago."""
    o = check_overrides(ov)
    now = as_utc(now)
    o["added"] = [a for a in o["added"] if parse_aware(a["end"]) > now]
    keep: list[str] = []
    for wid in o["skipped"]:
        at = window_start_of(wid)
        if at is None or at > now - timedelta(days=7):
            keep.append(wid)
    o["skipped"] = keep
    return o
