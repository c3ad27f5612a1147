"""Window specs as written in a room's config: parsing and validation (pure).

See :mod:`orchestrator.schedule.windows` for the kinds of spec and the cron dialect.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
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
    "DateRange",
    "WindowSpec",
    "excluded",
    "load_zone",
    "make_cron_trigger",
    "parse_date_ranges",
    "parse_duration",
    "parse_hhmm",
    "parse_windows",
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


def excluded(d: date, ranges: tuple[DateRange, ...]) -> bool:
    return any(a <= d <= b for a, b in ranges)


def parse_hhmm(text: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f"daily_restart {text!r} must be HH:MM (24 h)")
    return time(int(m[1]), int(m[2]))
