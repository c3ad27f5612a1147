"""Window specs and the pure schedule calculus (no clock reads: ``now`` is always a parameter).

A room's config lists window specs of three kinds::

    {cron = "0 20 * * *", duration = "15h30m"}          # recurring, fixed elapsed length
    {cron = "0 20 * * 1-5", end_cron = "30 11 * * *"}    # recurring, ends at the next end_cron
    {start = "2026-10-01T20:00", end = "2026-10-02T02:00"}  # one-off (naive = room time zone)
    {always = true}                                      # 24/7 (split for rollovers)

Each may carry ``timezone`` (IANA) and a ``name`` (used in window ids; defaults to a hash of
the spec so ids are stable across restarts as long as the spec is unchanged).

Cron is standard 5-field crontab. Day-of-week numbers follow crontab (0 or 7 = Sunday), not
APScheduler 3.x's historical 0 = Monday: we translate numbers to names before handing the
expression to :meth:`CronTrigger.from_crontab`, because an operator copying ``* * * * 0`` from
any crontab reference means Sunday.

The parts live in their own modules and are re-exported here: spec parsing
(:mod:`~orchestrator.schedule.spec`), DST arithmetic (:mod:`~orchestrator.schedule.tz`) and
runtime overrides (:mod:`~orchestrator.schedule.overrides`); this module holds the windows
themselves (:class:`Window`, :class:`RoomSchedule`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from orchestrator.schedule.overrides import (
    EMPTY_OVERRIDES,
    add_window,
    check_overrides,
    pause,
    prune,
    resume,
    skip_next,
)
from orchestrator.schedule.spec import (
    DateRange,
    WindowSpec,
    excluded,
    load_zone,
    make_cron_trigger,
    parse_date_ranges,
    parse_duration,
    parse_hhmm,
    parse_windows,
)
from orchestrator.schedule.tz import (
    as_utc,
    cron_fires,
    parse_aware,
    resolve_wall,
    stamp,
)

__all__ = [
    "EMPTY_OVERRIDES",
    "DateRange",
    "RoomSchedule",
    "Window",
    "WindowSpec",
    "add_window",
    "check_overrides",
    "cron_fires",
    "load_zone",
    "make_cron_trigger",
    "parse_date_ranges",
    "parse_duration",
    "parse_hhmm",
    "parse_windows",
    "pause",
    "prune",
    "resolve_wall",
    "resume",
    "skip_next",
]

_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Window:
    """One concrete occurrence. ``start``/``end`` are UTC; ``end`` None means open-ended.

    ``window_id`` is deterministic (spec key + UTC start) so job ids and idempotency records
    survive restarts. ``rollover`` means the next window starts exactly at ``end``: a planned
    rollover (daily restart or the 168 h limit), not the end of airtime.
    """

    window_id: str
    start: datetime
    end: datetime | None
    rollover: bool = False

    def contains(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@functools.lru_cache(maxsize=8192)
def spec_key(spec: WindowSpec) -> str:
    """Stable short key of a spec: its name, else a hash of its canonical JSON."""
    if spec.name:
        return spec.name
    canon = json.dumps(spec.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return "w" + hashlib.sha256(canon.encode()).hexdigest()[:8]


_ALWAYS_ANCHOR = datetime(2000, 1, 3)  # a Monday, local midnight: where 'always' begins
_END_CRON_LOOKBACK = timedelta(days=32)
_MIN_SEGMENT = timedelta(hours=1)
_HORIZONS = (timedelta(days=2), timedelta(days=16), timedelta(days=64), timedelta(days=400))


@dataclass(frozen=True, slots=True)
class _Raw:
    key: str
    start: datetime
    end: datetime | None
    order: int


@dataclass(frozen=True)
class RoomSchedule:
    """A room's windows plus the rules that turn them into concrete :class:`Window` s.

    Pure: every method takes the time it reasons about. Semantics (documented decisions):

    * ``duration`` is **elapsed** time: a 2 h window opening at 02:30 CEST on the autumn
      fold day ends at 03:30 CET (wall clock shows 1 h, the stream runs 2 h).
    * A start in a spring-forward gap opens at the first valid instant after the gap.
    * A fold start opens once, at the first occurrence.
    * ``exclusions`` (dates, ranges, named holiday lists) drop recurring occurrences whose
      local start date (room zone) is excluded, and cut excluded local days out of ``always``.
      Explicit one-off windows (config ``start``/``end`` or an added override) are not excluded:
      they name their date on purpose.
    * ``overlap="merge"``: overlapping or touching windows become one. ``"skip"``: a window
      that starts before the previous one ended is dropped (back-to-back windows are kept).
    * Long windows are split into segments at ``daily_restart`` (local, not within 1 h of a
      window edge) and at least every ``rollover_before_h`` (rounded down to whole days when
      >= 24 h, counted from the window start, so rollovers keep the start's time of day).
    """

    specs: tuple[WindowSpec, ...] = ()
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    exclusions: tuple[DateRange, ...] = ()
    daily_restart: time | None = None
    overlap: Literal["merge", "skip"] = "merge"
    min_remaining: timedelta = timedelta(seconds=120)
    rollover_before_h: float = 160.0
    paused: bool = False
    skipped: frozenset[str] = frozenset()
    added: tuple[WindowSpec, ...] = ()

    @classmethod
    def build(
        cls,
        windows: Iterable[WindowSpec | Mapping[str, Any]],
        *,
        timezone: str = "UTC",
        exclude: Iterable[str] = (),
        holidays: Iterable[str] = (),
        holiday_lists: Mapping[str, tuple[DateRange, ...]] | None = None,
        daily_restart: str | None = None,
        overlap: str = "merge",
        min_remaining_s: float = 120.0,
        rollover_before_h: float = 160.0,
    ) -> RoomSchedule:
        """Validate config-shaped inputs; ValueError names the offending value."""
        specs = parse_windows(list(windows))
        ranges = list(parse_date_ranges(exclude))
        lists = holiday_lists or {}
        for name in holidays:
            if name not in lists:
                known = ", ".join(sorted(lists)) or "none loaded"
                raise ValueError(f"holidays: unknown list {name!r} (known: {known})")
            ranges.extend(lists[name])
        if overlap not in ("merge", "skip"):
            raise ValueError(f"overlap {overlap!r} must be 'merge' or 'skip'")
        if rollover_before_h <= 0 or rollover_before_h >= 168:
            raise ValueError("rollover_before_h must be > 0 and < 168 (the service's job limit)")
        return cls(
            specs=tuple(specs),
            tz=load_zone(timezone),
            exclusions=tuple(sorted(ranges)),
            daily_restart=parse_hhmm(daily_restart) if daily_restart else None,
            overlap=overlap,  # type: ignore[arg-type]
            min_remaining=timedelta(seconds=min_remaining_s),
            rollover_before_h=rollover_before_h,
        )

    # -- overrides --

    def with_overrides(self, ov: Mapping[str, Any]) -> RoomSchedule:
        """This schedule with runtime overrides applied (see :func:`pause`, :func:`add_window`)."""
        o = check_overrides(ov)
        added = tuple(
            WindowSpec(start=parse_aware(a["start"]), end=parse_aware(a["end"]), name=a.get("name"))
            for a in o["added"]
        )
        return replace(self, paused=o["paused"], skipped=frozenset(o["skipped"]), added=added)

    # -- queries --

    def is_excluded(self, d: date) -> bool:
        return excluded(d, self.exclusions)

    def occurrences(self, from_: datetime, to: datetime) -> list[Window]:
        """Windows that overlap ``[from_, to)``, sorted by start, after every rule above."""
        from_, to = as_utc(from_), as_utc(to)
        if self.paused or to <= from_:
            return []
        # Widen the generation range (doubling) while a merged chain reaches either edge: an
        # earlier or later occurrence may merge into it, and a window's start, end and id must
        # not depend on the query range. Chains longer than ~400 days are cut (documented).
        back = max((self._lookback(sp) for sp in self.specs + self.added), default=timedelta(0))
        gen_lo, reach = from_ - back, to
        for _ in range(12):
            merged = self._combine(self._raw(gen_lo, reach))
            if not merged:
                break
            first_s, last_e = merged[0][1], merged[-1][2]
            grow_lo = back > timedelta(0) and first_s - back < gen_lo
            grow_hi = last_e is None or last_e >= reach
            if last_e is None and not grow_lo:
                break
            if not (grow_lo or grow_hi) or reach - gen_lo > timedelta(days=400):
                break
            span = reach - gen_lo
            if grow_lo:
                gen_lo = min(first_s - back, gen_lo - span)
            if grow_hi and last_e is not None:
                reach = max(last_e + _US, reach + span)
        out: list[Window] = []
        for key, s, e in merged:
            if s < to:
                out.extend(self._segments(key, s, e, from_, to))
        return [w for w in out if w.window_id not in self.skipped]

    def active_at(self, now: datetime) -> Window | None:
        """The window the room should be live in at ``now`` (catch-up rule applied).

        Inside a window → that window, unless less than ``min_remaining`` of continuous airtime
        is left (a planned rollover does not count as an end).
        """
        now = as_utc(now)
        ahead = self.min_remaining + timedelta(days=1)
        wins = self.occurrences(now, now + ahead)
        cur = next((w for w in wins if w.contains(now)), None)
        if cur is None:
            return None
        end = cur.end
        for w in wins:
            if end is not None and w.start == end and w.start > cur.start:
                end = w.end
        if end is not None and end - now < self.min_remaining:
            return None
        return cur

    def current(self, now: datetime) -> Window | None:
        """The window containing ``now`` (no catch-up rule): what a running stream belongs to."""
        now = as_utc(now)
        return next((w for w in self.occurrences(now, now + _US) if w.contains(now)), None)

    def next_after(self, now: datetime) -> Window | None:
        """The first window starting strictly after ``now`` (None if none within ~400 days)."""
        now = as_utc(now)
        for h in _HORIZONS:
            for w in self.occurrences(now, now + h):
                if w.start > now:
                    return w
        return None

    # -- internals --

    @staticmethod
    def _lookback(spec: WindowSpec) -> timedelta:
        if spec.cron is None:
            return timedelta(0)
        return spec.duration if spec.duration is not None else _END_CRON_LOOKBACK

    def _spec_tz(self, spec: WindowSpec) -> ZoneInfo:
        return load_zone(spec.timezone) if spec.timezone else self.tz

    def _raw(self, lo: datetime, hi: datetime) -> list[_Raw]:
        out: list[_Raw] = []
        for order, spec in enumerate(self.specs + self.added):
            key, tz = spec_key(spec), self._spec_tz(spec)
            if spec.always:
                out.extend(self._always(key, tz, order))
            elif spec.start is not None and spec.end is not None:
                s = _aware(spec.start, tz)
                e = _aware(spec.end, tz)
                if e > s:
                    out.append(_Raw(key, s, e, order))
            elif spec.cron is not None:
                out.extend(self._cron(spec, key, tz, order, lo, hi))
        return out

    def _always(self, key: str, tz: ZoneInfo, order: int) -> list[_Raw]:
        start = resolve_wall(_ALWAYS_ANCHOR, tz)
        out: list[_Raw] = []
        for a, b in self.exclusions:
            cut_s = resolve_wall(datetime.combine(a, time()), tz)
            cut_e = resolve_wall(datetime.combine(b + timedelta(days=1), time()), tz)
            if cut_e <= start:
                continue
            if cut_s > start:
                out.append(_Raw(key, start, cut_s, order))
            start = max(start, cut_e)
        out.append(_Raw(key, start, None, order))
        return out

    def _cron(
        self, spec: WindowSpec, key: str, tz: ZoneInfo, order: int, lo: datetime, hi: datetime
    ) -> list[_Raw]:
        assert spec.cron is not None
        trig = make_cron_trigger(spec.cron, tz)
        end_trig = make_cron_trigger(spec.end_cron, tz) if spec.end_cron else None
        out: list[_Raw] = []
        for s in cron_fires(trig, tz, lo - _US):
            if s >= hi:
                break
            if excluded(s.astimezone(self.tz).date(), self.exclusions):
                continue
            if spec.duration is not None:
                e: datetime | None = s + spec.duration
            else:
                assert end_trig is not None
                e = next(iter(cron_fires(end_trig, tz, s)), None)
            if e is None:
                continue
            out.append(_Raw(key, s, e, order))
        return out

    def _combine(self, raws: list[_Raw]) -> list[tuple[str, datetime, datetime | None]]:
        far = datetime.max.replace(tzinfo=UTC)
        raws.sort(key=lambda r: (r.start, r.order, r.end or far))
        out: list[tuple[str, datetime, datetime | None]] = []
        for r in raws:
            if out:
                key, s, e = out[-1]
                if self.overlap == "merge" and (e is None or r.start <= e):
                    new_e = None if e is None or r.end is None else max(e, r.end)
                    out[-1] = (key, s, new_e)
                    continue
                if self.overlap == "skip" and (e is None or r.start < e):
                    continue
            out.append((r.key, r.start, r.end))
        return out

    def _step(self) -> timedelta:
        h = self.rollover_before_h
        return timedelta(days=int(h // 24)) if h >= 24 else timedelta(hours=h)

    def _restart_points(self, lo: datetime, hi: datetime) -> list[datetime]:
        if self.daily_restart is None:
            return []
        d = lo.astimezone(self.tz).date() - timedelta(days=1)
        last = hi.astimezone(self.tz).date() + timedelta(days=1)
        pts: list[datetime] = []
        while d <= last:
            pts.append(resolve_wall(datetime.combine(d, self.daily_restart), self.tz))
            d += timedelta(days=1)
        return pts

    def _segments(
        self, key: str, s: datetime, e: datetime | None, lo: datetime, hi: datetime
    ) -> list[Window]:
        """Split [s, e) at rollover points; only segments overlapping [lo, hi) are built.

        The segment containing ``lo`` starts at the latest edge <= lo: ``s``, the latest step
        cut (computed directly) or a daily restart (never more than ~25 h back).
        """
        if (e is not None and e <= lo) or s >= hi:
            return []
        step = self._step()
        cuts: set[datetime] = set()
        t = s + max(0, (lo - s) // step) * step
        # daily restarts already keep segments <= 25 h; step cuts would only add restarts
        daily_enough = self.daily_restart is not None and self.rollover_before_h >= 26
        while not daily_enough and (e is None or t < e):  # up to the first cut >= hi
            cuts.add(t)
            if t >= hi:
                break
            t += step
        for p in self._restart_points(max(s, lo - timedelta(days=3)), hi + timedelta(days=2)):
            if p - s >= _MIN_SEGMENT and (e is None or e - p >= _MIN_SEGMENT):
                cuts.add(p)
        edges = [s, *sorted(c for c in cuts if s < c and (e is None or c < e))]
        out: list[Window] = []
        for i, a in enumerate(edges):
            b = edges[i + 1] if i + 1 < len(edges) else e
            if (b is not None and b <= lo) or a >= hi:
                continue
            out.append(Window(f"{key}@{stamp(a)}", a, b, rollover=i + 1 < len(edges)))
        return out


def _aware(t: datetime, tz: ZoneInfo) -> datetime:
    return resolve_wall(t, tz) if t.tzinfo is None else t.astimezone(UTC)
