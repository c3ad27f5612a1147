"""Named holiday lists, loaded from a TOML file so many rooms can share one calendar.

File format (``[schedule] holidays_file``)::

    cn_national = ["2026-10-01..2026-10-07", "2027-01-01"]
    shop_closed = ["2026-12-24", "2026-12-25"]

Rooms refer to lists by name (``holidays = ["cn_national"]``). Errors name the file, the list
and the bad entry, and become :class:`ConfigError` so check-config reports them like any
other configuration mistake.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.schedule.windows import DateRange, parse_date_ranges

__all__ = ["HolidayLists", "load_holidays", "parse_holidays"]

HolidayLists = Mapping[str, tuple[DateRange, ...]]


def parse_holidays(
    data: Mapping[str, Any], *, where: str = "<holidays>"
) -> dict[str, tuple[DateRange, ...]]:
    """Validate the decoded TOML: every key a list of date or range strings."""
    out: dict[str, tuple[DateRange, ...]] = {}
    for name, items in data.items():
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError(
                f"holiday list {name!r} must be a list of 'YYYY-MM-DD' or 'YYYY-MM-DD..YYYY-MM-DD' "
                "strings",
                where=where,
            )
        try:
            out[name] = parse_date_ranges(items, what=f"holiday list {name!r}")
        except ValueError as exc:
            raise ConfigError(str(exc), where=where) from None
    return out


def load_holidays(path: str | Path | None) -> dict[str, tuple[DateRange, ...]]:
    """Read the holidays file (``None`` → no lists). Raises :class:`ConfigError`."""
    if path is None:
        return {}
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("holidays file not found", where=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read holidays file: {exc.strerror}", where=str(p)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", where=str(p)) from exc
    return parse_holidays(data, where=str(p))
