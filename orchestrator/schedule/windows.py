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
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "EMPTY_OVERRIDES",
    "RoomSchedule",
    "Window",
    "WindowSpec",
    "add_window",
    "cron_fires",
    "load_zone",
    "make_cron_trigger",
    "parse_date_ranges",
    "parse_duration",
    "parse_windows",
    "pause",
    "prune",
    "resolve_wall",
    "resume",
    "skip_next",
]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_TD = TypeAdapter(timedelta)
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_NUM = {n: i for i, n in enumerate(_DOW_NAMES)}


def parse_duration(value: object) -> timedelta:
    """Parse ``"15h30m"``, ``"1d2h"``, ISO 8601 ``"PT2H"``, or a number of seconds.

    Raises ValueError (never returns a zero or negative duration).
    """
    if isinstance(value, timedelta):
        td = value
    elif isinstance(value, bool):
        raise ValueError(f"duration {value!r} is not a duration")
    elif isinstance(value, int | float):
        td = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        m = _DURATION.match(text)
        if text and m and any(m.groups()):
            d, h, mi, s = (int(g) if g else 0 for g in m.groups())
            td = timedelta(days=d, hours=h, minutes=mi, seconds=s)
        elif text.startswith(("p", "-p")):
            try:
                td = _TD.validate_python(value.strip().upper())
            except ValidationError:
                raise ValueError(f"duration {value!r} is not valid ISO 8601") from None
        else:
            raise ValueError(
                f"duration {value!r} not understood: use e.g. '15h30m', '90m', 'PT2H' or seconds"
            )
    else:
        raise ValueError(f"duration {value!r} is not a duration")
    if td <= timedelta(0):
        raise ValueError(f"duration {value!r} must be > 0")
    return td


def load_zone(name: str) -> ZoneInfo:
    """An IANA zone, or ValueError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like 'Asia/Shanghai')"
        ) from None


def _dow_token(tok: str) -> int:
    t = tok.strip().lower()
    if t.isdigit():
        n = int(t)
        if n > 7:
            raise ValueError(f"day-of-week {tok!r} out of range 0-7")
        return n % 7
    if t[:3] in _DOW_NUM and len(t) == 3:
        return _DOW_NUM[t]
    raise ValueError(f"day-of-week {tok!r} not understood")


def _crontab_dow(field: str) -> str:
    """Translate a crontab day-of-week field (0/7 = Sunday) into APScheduler day names."""
    if field == "*":
        return field
    days: list[int] = []
    for item in field.split(","):
        rng, _, step_s = item.partition("/")
        step = int(step_s) if step_s else 1
        if step_s and (not step_s.isdigit() or step < 1):
            raise ValueError(f"day-of-week step {item!r} not understood")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            a, b = rng.split("-", 1)
            lo, hi = _dow_token(a), _dow_token(b)
            if b.strip() == "7":
                hi = 7
            if hi < lo:
                raise ValueError(f"day-of-week range {item!r} runs backwards")
        else:
            lo = _dow_token(rng)
            hi = lo if not step_s else 6
        days.extend(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(set(days)))


@functools.lru_cache(maxsize=4096)
def make_cron_trigger(expr: str, tz: ZoneInfo) -> CronTrigger:
    """A CronTrigger for a standard 5-field crontab line in ``tz``; ValueError if malformed."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expr!r}: expected 5 fields (minute hour day month weekday)")
    try:
        fields[4] = _crontab_dow(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as exc:
        raise ValueError(f"cron {expr!r}: {exc}") from None


class WindowSpec(BaseModel):
    """One configured window. Exactly one kind: ``cron`` | ``start`` | ``always``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    """Stable label used in window ids (default: a hash of the spec)."""
    cron: str | None = None
    """5-field crontab: when the window opens (local time of ``timezone``)."""
    duration: timedelta | None = None
    """Elapsed length of a cron window: '15h30m', '90m', 'PT2H' or seconds."""
    end_cron: str | None = None
    """Alternative to duration: the window ends at the first end_cron fire after it opens."""
    start: datetime | None = None
    """One-off window start (ISO 8601; naive = the window's / room's time zone)."""
    end: datetime | None = None
    always: bool = False
    """24/7; rolled over before the service's 168 h job limit."""
    timezone: str | None = None
    """IANA zone for this window (default: the room's, then [schedule] timezone)."""

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            load_zone(v)
        return v

    @model_validator(mode="after")
    def _kind(self) -> WindowSpec:
        kinds = [
            k
            for k, on in (
                ("cron", self.cron is not None),
                ("start", self.start is not None),
                ("always", self.always),
            )
            if on
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a window needs exactly one of cron=…, start=…/end=… or always=true"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        tz = load_zone(self.timezone or "UTC")
        if self.cron is not None:
            make_cron_trigger(self.cron, tz)
            if (self.duration is None) == (self.end_cron is None):
                raise ValueError(
                    f"cron window {self.cron!r} needs exactly one of duration or end_cron"
                )
            if self.end_cron is not None:
                make_cron_trigger(self.end_cron, tz)
            if self.end is not None:
                raise ValueError("cron windows take duration or end_cron, not end")
        elif self.start is not None:
            if self.end is None:
                raise ValueError("a one-off window needs end (use always=true for open-ended)")
            if (self.start.tzinfo is None) != (self.end.tzinfo is None):
                raise ValueError("start and end must both carry an offset or both be naive")
            if self.end <= self.start:
                raise ValueError(
                    f"end {self.end.isoformat()} is not after start {self.start.isoformat()}"
                )
            if self.duration is not None or self.end_cron is not None:
                raise ValueError("one-off windows take start and end only")
        else:
            if any(x is not None for x in (self.duration, self.end_cron, self.end)):
                raise ValueError("always=true takes no duration/end/end_cron")
        return self


def parse_windows(raw: Iterable[WindowSpec | Mapping[str, Any]]) -> list[WindowSpec]:
    """Validate raw config dicts. ValueError says which window (1-based) and why."""
    out: list[WindowSpec] = []
    for i, item in enumerate(raw, start=1):
        if isinstance(item, WindowSpec):
            out.append(item)
            continue
        try:
            out.append(WindowSpec.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                msg = "unknown key"
            raise ValueError(f"windows[{i}]{'.' + loc if loc else ''}: {msg}") from None
    return out


# --- time-zone arithmetic ------------------------------------------------------------------------

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


# --- dates, exclusions -------------------------------------------------------------------------


DateRange = tuple[date, date]


def parse_date_ranges(items: Iterable[str], *, what: str = "exclude") -> tuple[DateRange, ...]:
    """Parse ``"2026-10-01"`` and inclusive ranges ``"2026-10-01..2026-10-07"``."""
    out: list[DateRange] = []
    for raw in items:
        text = str(raw).strip()
        first, sep, last = text.partition("..")
        try:
            a = date.fromisoformat(first.strip())
            b = date.fromisoformat(last.strip()) if sep else a
        except ValueError:
            raise ValueError(
                f"{what}: {raw!r} is not a date (YYYY-MM-DD) or range (YYYY-MM-DD..YYYY-MM-DD)"
            ) from None
        if b < a:
            raise ValueError(f"{what}: range {raw!r} ends before it starts")
        out.append((a, b))
    return tuple(sorted(out))


def _excluded(d: date, ranges: tuple[DateRange, ...]) -> bool:
    return any(a <= d <= b for a, b in ranges)


def parse_hhmm(text: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"daily_restart {text!r} must be HH:MM (24 h)")
    return time(int(m[1]), int(m[2]))


# --- windows -----------------------------------------------------------------------------------


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


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def window_start_of(window_id: str) -> datetime | None:
    """The UTC start encoded in a window id (used to prune old skips)."""
    _, _, stamp = window_id.rpartition("@")
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


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
        o = _check_overrides(ov)
        added = tuple(
            WindowSpec(start=_iso(a["start"]), end=_iso(a["end"]), name=a.get("name"))
            for a in o["added"]
        )
        return replace(self, paused=o["paused"], skipped=frozenset(o["skipped"]), added=added)

    # -- queries --

    def is_excluded(self, d: date) -> bool:
        return _excluded(d, self.exclusions)

    def occurrences(self, from_: datetime, to: datetime) -> list[Window]:
        """Windows that overlap ``[from_, to)``, sorted by start, after every rule above."""
        from_, to = _utc(from_), _utc(to)
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
        now = _utc(now)
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
        now = _utc(now)
        return next((w for w in self.occurrences(now, now + _US) if w.contains(now)), None)

    def next_after(self, now: datetime) -> Window | None:
        """The first window starting strictly after ``now`` (None if none within ~400 days)."""
        now = _utc(now)
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
            if _excluded(s.astimezone(self.tz).date(), self.exclusions):
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
            out.append(Window(f"{key}@{_stamp(a)}", a, b, rollover=i + 1 < len(edges)))
        return out


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("schedule times must be timezone-aware")
    return t.astimezone(UTC)


def _aware(t: datetime, tz: ZoneInfo) -> datetime:
    return resolve_wall(t, tz) if t.tzinfo is None else t.astimezone(UTC)


def _iso(v: object) -> datetime:
    t = datetime.fromisoformat(str(v))
    if t.tzinfo is None:
        raise ValueError(f"override time {v!r} must carry an offset")
    return t


# --- runtime overrides (persisted as JSON by the app; these functions are pure) -----------------
#
# Shape (version 1):
#   {"v": 1, "paused": false,
#    "added":   [{"start": "2026-10-01T12:00:00+00:00", "end": "...", "name": "added-…"}],
#    "skipped": ["<window_id>", ...]}

EMPTY_OVERRIDES: dict[str, Any] = {"v": 1, "paused": False, "added": [], "skipped": []}


def _check_overrides(ov: Mapping[str, Any]) -> dict[str, Any]:
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
    return {**_check_overrides(ov), "paused": True}


def resume(ov: Mapping[str, Any]) -> dict[str, Any]:
    return {**_check_overrides(ov), "paused": False}


def add_window(
    ov: Mapping[str, Any], start: datetime, end: datetime, *, name: str | None = None
) -> dict[str, Any]:
    """Add a one-off window (aware datetimes; exempt from exclusions)."""
    o = _check_overrides(ov)
    s, e = _utc(start), _utc(end)
    if e <= s:
        raise ValueError(f"end {e.isoformat()} is not after start {s.isoformat()}")
    item: dict[str, Any] = {"start": s.isoformat(), "end": e.isoformat()}
    item["name"] = name or f"added-{_stamp(s)}-{_stamp(e)}"
    if item not in o["added"]:
        o["added"] = [*o["added"], item]
    return o


def skip_next(ov: Mapping[str, Any], schedule: RoomSchedule, now: datetime) -> dict[str, Any]:
    """Skip the next window that has not started yet (as the schedule with ``ov`` shows it).

    ValueError if there is none. A window already running is not affected (use pause/stop).
    """
    o = _check_overrides(ov)
    nxt = schedule.with_overrides(o).next_after(now)
    if nxt is None:
        raise ValueError("no upcoming window to skip")
    o["skipped"] = [*o["skipped"], nxt.window_id]
    return o


def prune(ov: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Drop added windows that ended and skips whose window started more than a week ago."""
    o = _check_overrides(ov)
    now = _utc(now)
    o["added"] = [a for a in o["added"] if _iso(a["end"]) > now]
    keep: list[str] = []
    for wid in o["skipped"]:
        at = window_start_of(wid)
        if at is None or at > now - timedelta(days=7):
            keep.append(wid)
    o["skipped"] = keep
    return o
