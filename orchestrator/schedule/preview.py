"""``liveorch schedule preview``: the next windows per room, in local time and UTC.

So an operator can check a DST week or a holiday before it happens. Rows whose local day has a
UTC-offset change are marked ``DST``; excluded/holiday days inside the range are listed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.schedule.holidays import load_holidays
from orchestrator.schedule.windows import RoomSchedule
from orchestrator.settings import schedule_for_room  # re-exported: older callers import it here

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["add_arguments", "run_from_args", "schedule_for_room"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--room", metavar="ID", help="only this room id")
    parser.add_argument(
        "--from",
        dest="from_",
        metavar="WHEN",
        help="ISO start, e.g. 2026-10-01 or 2026-10-01T08:00+08:00 (default: now; UTC if "
        "no offset)",
    )
    parser.add_argument("--days", type=int, default=7, help="how many days ahead (default 7)")


def _dst_day(s: RoomSchedule, t: datetime) -> bool:
    local = t.astimezone(s.tz)
    day0 = datetime.combine(local.date(), datetime.min.time(), s.tz)
    return day0.utcoffset() != (day0 + timedelta(days=1)).utcoffset()


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    """Print the table; 0 on success, 2 on a bad argument or schedule."""
    try:
        start = datetime.fromisoformat(args.from_) if args.from_ else datetime.now(UTC)
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        rooms = [r for r in settings.rooms if args.room in (None, r.id)]
        if args.room and not rooms:
            print(f"liveorch: no room {args.room!r} in the configuration", file=sys.stderr)
            return 2
        lists = load_holidays(settings.schedule.holidays_file)
        end = start + timedelta(days=args.days)
        for room in rooms:
            s = schedule_for_room(room, settings, lists)
            print(f"room {room.id}  tz={s.tz.key}")
            print(
                f"  {'local start':<26} {'local end':<26} {'UTC start':<20} {'UTC end':<20} notes"
            )
            for w in s.occurrences(start, end):
                ls = w.start.astimezone(s.tz).isoformat(timespec="minutes")
                le = w.end.astimezone(s.tz).isoformat(timespec="minutes") if w.end else "open"
                us = w.start.strftime("%Y-%m-%d %H:%MZ")
                ue = w.end.strftime("%Y-%m-%d %H:%MZ") if w.end else "-"
                notes = []
                if _dst_day(s, w.start) or (w.end is not None and _dst_day(s, w.end)):
                    notes.append("DST")
                if w.rollover:
                    notes.append("rollover")
                print(f"  {ls:<26} {le:<26} {us:<20} {ue:<20} {' '.join(notes)}")
            d = start.astimezone(s.tz).date()
            excluded = []
            while d <= end.astimezone(s.tz).date():
                if s.is_excluded(d):
                    excluded.append(d.isoformat())
                d += timedelta(days=1)
            if excluded:
                print(f"  excluded/holiday days: {', '.join(excluded)}")
        return 0
    except ValueError as exc:
        print(f"liveorch: {exc}", file=sys.stderr)
        return 2
