"""Wall-clock arithmetic across DST changes: gaps, folds, and cron fire times (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "as_utc",
    "cron_fires",
    "is_fold_repeat",
    "parse_aware",
    "resolve_wall",
    "stamp",
    "window_start_of",
]

UTC = UTC
_US = timedelta(microseconds=1)


def _transition_after(lo: datetime, hi: datetime, tz: ZoneInfo) -> datetime:
    """The first UTC instant in (lo, hi] whose offset differs from lo's (binary search)."""
    off = lo.astimezone(tz).utcoffset()
    a, b = lo, hi
    while b - a > timedelta(seconds=1):
        mid = a + (b - a) / 2
        mid = mid.replace(microsecond=0)
        if mid <= a:
            break
        if mid.astimezone(tz).utcoffset() == off:
            a = mid
        else:
            b = mid
    return b.replace(microsecond=0)


def resolve_wall(wall: datetime, tz: ZoneInfo) -> datetime:
    """A local wall time as one UTC instant, the way we schedule it.

    * Spring-forward gap (the wall time does not exist): the first valid instant after the gap,
      i.e. the transition itself (02:30 on the Berlin gap day → 03:00 CEST).
    * Autumn fold (the wall time happens twice): the first occurrence (the earlier instant), so a
      window opens once.
    """
    naive = wall.replace(tzinfo=None)
    a = naive.replace(tzinfo=tz, fold=0)
    b = naive.replace(tzinfo=tz, fold=1)
    ua, ub = a.astimezone(UTC), b.astimezone(UTC)
    if ua == ub:
        return ua
    if ua.astimezone(tz).replace(tzinfo=None) == naive:  # exists twice: a fold
        return min(ua, ub)
    return _transition_after(min(ua, ub), max(ua, ub), tz)  # a gap


def is_fold_repeat(fire: datetime, tz: ZoneInfo) -> bool:
    """True if ``fire`` is the *second* occurrence of a repeated (fold) wall time."""
    naive = fire.replace(tzinfo=None)
    a = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    b = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if a == b or a.astimezone(tz).replace(tzinfo=None) != naive:
        return False
    return fire.astimezone(UTC) == max(a, b)


def cron_fires(trigger: CronTrigger, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """UTC instants of ``trigger`` strictly after ``after``, increasing, DST-normalised.

    APScheduler 3.11 (verified in tests) fires a gap time at wall+old offset (02:30 on the
    Berlin gap day fires at 03:30 CEST) and fires a fold time twice. We normalise: a gap fire
    moves to the end of the gap; the second fold fire is dropped.
    """
    cursor = after
    last: datetime | None = None
    while True:
        fire = trigger.get_next_fire_time(None, cursor + _US)
        if fire is None:
            return
        if is_fold_repeat(fire, tz):
            cursor = fire.astimezone(UTC)
            continue
        at = resolve_wall(fire, tz)
        cursor = max(at, cursor + _US)
        if last is not None and at <= last:
            continue
        if at <= after:
            continue
        last = at
        yield at


def as_utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware")
    return t.astimezone(UTC)


def parse_aware(v: object) -> datetime:
    t = datetime.fromisoformat(str(v))
    if t.tzinfo is None:
        raise ValueError(f"override time {v!r} must carry an offset")
    return t


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def window_start_of(window_id: str) -> datetime | None:
    """The UTC start encoded in a window id (used to prune old skips)."""
    _, _, stamp = window_id.rpartition("@")
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
