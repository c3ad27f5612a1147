"""Pure schedule calculus: DST, exclusions, overlap, rollover, catch-up."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from orchestrator.schedule.holidays import load_holidays
from orchestrator.schedule.windows import (
    RoomSchedule,
    WindowSpec,
    make_cron_trigger,
    parse_duration,
    parse_windows,
)


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


def local(tz: str, *a: int, fold: int = 0) -> datetime:
    return datetime(*a, tzinfo=ZoneInfo(tz), fold=fold)


def starts(s: RoomSchedule, a: datetime, b: datetime) -> list[datetime]:
    return [w.start for w in s.occurrences(a, b)]


# --- parsing --------------------------------------------------------------------------------


def test_parse_duration_forms() -> None:
    assert parse_duration("15h30m") == timedelta(hours=15, minutes=30)
    assert parse_duration("PT2H") == timedelta(hours=2)
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration("1d") == timedelta(days=1)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"cron": "61 * * * *", "duration": "1h"}, "61"),
        ({"cron": "0 20 * *", "duration": "1h"}, "5 fields"),
        ({"cron": "0 20 * * *", "duration": "0s"}, "must be > 0"),
        ({"cron": "0 20 * * *", "duration": "soon"}, "not understood"),
        ({"start": "2026-10-02T20:00", "end": "2026-10-01T20:00"}, "not after start"),
        ({"always": True, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 20 * * *"}, "duration or end_cron"),
        ({"always": True, "colour": "red"}, "unknown key"),
        ({}, "exactly one of"),
    ],
)
def test_parse_windows_errors(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match="windows\\[1\\]") as exc:
        parse_windows([raw])
    assert needle in str(exc.value)


def test_crontab_weekday_numbers_mean_crontab_days() -> None:
    # crontab 0 = Sunday; APScheduler 3.x alone would read 0 as Monday
    trig = make_cron_trigger("0 20 * * 0", ZoneInfo("UTC"))
    fire = trig.get_next_fire_time(None, utc(2026, 6, 1))  # a Monday
    assert fire.weekday() == 6


# --- DST ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "first_valid"),
    [
        ("Europe/Berlin", date(2026, 3, 29), local("Europe/Berlin", 2026, 3, 29, 3, 0)),
        ("America/New_York", date(2026, 3, 8), local("America/New_York", 2026, 3, 8, 3, 0)),
    ],
)
def test_spring_gap_opens_at_first_valid_instant(tz: str, day: date, first_valid: datetime) -> None:
    s = RoomSchedule.build([{"cron": "30 2 * * *", "duration": "2h"}], timezone=tz)
    a = datetime.combine(day - timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
    wins = s.occurrences(a, a + timedelta(days=3))
    assert [w.start.astimezone(ZoneInfo(tz)).day for w in wins] == [
        (day - timedelta(days=1)).day,
        day.day,
        (day + timedelta(days=1)).day,
    ]
    gap = wins[1]
    assert gap.start == first_valid.astimezone(UTC)
    assert gap.end is not None and gap.end - gap.start == timedelta(hours=2)
    # the days around keep their 02:30 wall time
    assert wins[0].start.astimezone(ZoneInfo(tz)).hour == 2
    assert wins[2].start.astimezone(ZoneInfo(tz)).strftime("%H:%M") == "02:30"


@pytest.mark.parametrize(
    ("tz", "cron", "day"),
    [
        ("Europe/Berlin", "30 2 * * *", date(2026, 10, 25)),
        ("America/New_York", "30 1 * * *", date(2026, 11, 1)),
    ],
)
def test_autumn_fold_fires_once_with_elapsed_duration(tz: str, cron: str, day: date) -> None:
    s = RoomSchedule.build([{"cron": cron, "duration": "2h"}], timezone=tz)
    a = datetime.combine(day, datetime.min.time(), ZoneInfo(tz))
    wins = s.occurrences(a, a + timedelta(hours=23))
    assert len(wins) == 1
    w = wins[0]
    hh, mm = int(cron.split()[1]), int(cron.split()[0])
    first = datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZoneInfo(tz), fold=0)
    assert w.start == first.astimezone(UTC)  # the first of the two 02:30s
    assert w.end is not None and w.end - w.start == timedelta(hours=2)  # elapsed, not wall
    # on the wall clock it shows one hour: e.g. 02:30 CEST -> 03:30 CET
    wall = w.end.astimezone(ZoneInfo(tz)).replace(tzinfo=None) - first.replace(tzinfo=None)
    assert wall == timedelta(hours=1)


def test_apscheduler_raw_dst_behaviour_is_what_we_normalise() -> None:
    """Pin APScheduler's own behaviour: if it changes, revisit cron_fires()."""
    tz = ZoneInfo("Europe/Berlin")
    trig = make_cron_trigger("30 2 * * *", tz)
    gap = trig.get_next_fire_time(None, local("Europe/Berlin", 2026, 3, 29, 0, 0))
    assert gap.astimezone(UTC) == utc(2026, 3, 29, 1, 30)  # 03:30 CEST, an hour late
    first = trig.get_next_fire_time(None, local("Europe/Berlin", 2026, 10, 25, 0, 0))
    second = trig.get_next_fire_time(first, first)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)  # twice


def test_shanghai_has_no_dst_drift() -> None:
    s = RoomSchedule.build([{"cron": "0 20 * * *", "duration": "4h"}], timezone="Asia/Shanghai")
    wins = s.occurrences(utc(2026, 1, 1), utc(2026, 12, 31))
    assert len(wins) == 364 or len(wins) == 365
    assert {w.start.hour for w in wins} == {12}
    assert {w.end - w.start for w in wins if w.end} == {timedelta(hours=4)}


def test_per_window_timezone_overrides_room_zone() -> None:
    s = RoomSchedule.build(
        [{"cron": "0 9 * * *", "duration": "1h", "timezone": "America/New_York"}],
        timezone="Asia/Shanghai",
    )
    (w,) = s.occurrences(utc(2026, 7, 1, 12), utc(2026, 7, 2, 12))
    assert w.start == utc(2026, 7, 1, 13)


def test_end_cron_ends_at_next_end_fire() -> None:
    s = RoomSchedule.build([{"cron": "0 20 * * *", "end_cron": "30 2 * * *"}], timezone="UTC")
    (w,) = s.occurrences(utc(2026, 7, 1, 19), utc(2026, 7, 1, 21))
    assert (w.start, w.end) == (utc(2026, 7, 1, 20), utc(2026, 7, 2, 2, 30))


def test_one_off_naive_is_room_time() -> None:
    s = RoomSchedule.build(
        [{"start": "2026-10-01T20:00", "end": "2026-10-02T02:00"}], timezone="Asia/Shanghai"
    )
    (w,) = s.occurrences(utc(2026, 9, 1), utc(2026, 11, 1))
    assert (w.start, w.end) == (utc(2026, 10, 1, 12), utc(2026, 10, 1, 18))


# --- exclusions ------------------------------------------------------------------------------


def test_exclusion_dates_and_ranges(tmp_path: pytest.TempPathFactory) -> None:
    f = tmp_path / "holidays.toml"  # type: ignore[operator]
    f.write_text('golden_week = ["2026-10-01..2026-10-07"]\nxmas = ["2026-12-25"]\n')
    lists = load_holidays(f)
    s = RoomSchedule.build(
        [{"cron": "0 20 * * *", "duration": "2h"}],
        timezone="Asia/Shanghai",
        exclude=["2026-09-28"],
        holidays=["golden_week", "xmas"],
        holiday_lists=lists,
    )
    days = {
        w.start.astimezone(s.tz).date() for w in s.occurrences(utc(2026, 9, 25), utc(2026, 12, 31))
    }
    for d in [date(2026, 9, 28), date(2026, 10, 1), date(2026, 10, 7), date(2026, 12, 25)]:
        assert d not in days
    assert date(2026, 10, 8) in days and date(2026, 9, 30) in days
    # 20:00 Shanghai is 12:00 UTC the same day: local start date decides, not UTC date
    late = RoomSchedule.build(
        [{"cron": "30 1 * * *", "duration": "1h"}], timezone="Asia/Shanghai", exclude=["2026-10-02"]
    )
    assert all(
        w.start.astimezone(late.tz).date() != date(2026, 10, 2)
        for w in late.occurrences(utc(2026, 9, 30), utc(2026, 10, 4))
    )


def test_holiday_file_errors(tmp_path: pytest.TempPathFactory) -> None:
    from orchestrator.errors import ConfigError

    f = tmp_path / "h.toml"  # type: ignore[operator]
    f.write_text('bad = ["2026-13-01"]\n')
    with pytest.raises(ConfigError, match="bad"):
        load_holidays(f)
    with pytest.raises(ConfigError, match="not found"):
        load_holidays(tmp_path / "missing.toml")  # type: ignore[operator]
    with pytest.raises(ValueError, match="unknown list 'nope'"):
        RoomSchedule.build([], holidays=["nope"], holiday_lists={})


def test_always_cuts_out_excluded_days() -> None:
    s = RoomSchedule.build([{"always": True}], timezone="Asia/Shanghai", exclude=["2026-10-01"])
    assert s.active_at(local("Asia/Shanghai", 2026, 10, 1, 12)) is None
    assert s.active_at(local("Asia/Shanghai", 2026, 10, 2, 0, 30)) is not None
    assert s.active_at(local("Asia/Shanghai", 2026, 9, 30, 12)) is not None


# --- overlap ---------------------------------------------------------------------------------

OVERLAP = [
    {"cron": "0 10 * * *", "duration": "4h"},
    {"cron": "0 12 * * *", "duration": "4h"},
    {"cron": "0 16 * * *", "duration": "1h"},  # touches the second
]


def test_overlap_merge_joins_overlapping_and_touching() -> None:
    s = RoomSchedule.build(OVERLAP, overlap="merge")
    wins = s.occurrences(utc(2026, 7, 1), utc(2026, 7, 1, 23))
    assert [(w.start, w.end) for w in wins] == [(utc(2026, 7, 1, 10), utc(2026, 7, 1, 17))]


def test_overlap_skip_drops_the_later_overlapping_window() -> None:
    s = RoomSchedule.build(OVERLAP, overlap="skip")
    wins = s.occurrences(utc(2026, 7, 1), utc(2026, 7, 1, 23))
    assert [(w.start, w.end) for w in wins] == [
        (utc(2026, 7, 1, 10), utc(2026, 7, 1, 14)),
        (utc(2026, 7, 1, 16), utc(2026, 7, 1, 17)),
    ]


# --- catch-up --------------------------------------------------------------------------------


def test_boot_inside_window_and_just_before_end() -> None:
    s = RoomSchedule.build([{"cron": "0 20 * * *", "duration": "2h"}], min_remaining_s=120)
    w = s.active_at(utc(2026, 7, 1, 21))
    assert w is not None and w.start == utc(2026, 7, 1, 20) and w.end == utc(2026, 7, 1, 22)
    assert s.active_at(utc(2026, 7, 1, 21, 58, 30)) is None  # 90 s left < 120 s
    assert s.active_at(utc(2026, 7, 1, 21, 58)) is not None  # exactly 120 s left
    assert s.active_at(utc(2026, 7, 1, 22)) is None
    assert s.current(utc(2026, 7, 1, 21, 59)) is not None  # the window itself still runs
    nxt = s.next_after(utc(2026, 7, 1, 21))
    assert nxt is not None and nxt.start == utc(2026, 7, 2, 20)


def test_window_ids_are_deterministic_and_independent_of_query_range() -> None:
    a = RoomSchedule.build([{"cron": "0 20 * * *", "duration": "2h"}])
    b = RoomSchedule.build([{"cron": "0 20 * * *", "duration": "2h"}])
    w1 = a.occurrences(utc(2026, 7, 1), utc(2026, 7, 10))
    w2 = b.occurrences(utc(2026, 7, 5, 21), utc(2026, 7, 6))
    assert w2[0] in w1
    named = RoomSchedule.build([{"name": "evening", "cron": "0 20 * * *", "duration": "2h"}])
    assert named.occurrences(utc(2026, 7, 1), utc(2026, 7, 2))[0].window_id == (
        "evening@20260701T200000Z"
    )


# --- rollover --------------------------------------------------------------------------------


def test_always_is_split_before_168h() -> None:
    s = RoomSchedule.build([{"always": True}], timezone="Europe/Berlin", rollover_before_h=160)
    wins = s.occurrences(utc(2026, 3, 1), utc(2026, 5, 1))
    assert all(w.end is not None for w in wins)
    assert all(w.end - w.start < timedelta(hours=168) for w in wins if w.end)
    assert all(a.end == b.start for a, b in itertools.pairwise(wins))
    assert all(w.rollover for w in wins)
    # same ids whatever the query range
    mid = s.occurrences(utc(2026, 4, 1), utc(2026, 4, 2))
    assert set(mid) <= set(wins)


def test_long_finite_window_split() -> None:
    s = RoomSchedule.build(
        [{"start": "2026-07-01T20:00:00+00:00", "end": "2026-07-20T20:00:00+00:00"}],
        rollover_before_h=160,
    )
    wins = s.occurrences(utc(2026, 6, 1), utc(2026, 8, 1))
    assert [w.start for w in wins] == [
        utc(2026, 7, 1, 20),
        utc(2026, 7, 7, 20),
        utc(2026, 7, 13, 20),
        utc(2026, 7, 19, 20),
    ]
    assert wins[-1].end == utc(2026, 7, 20, 20) and not wins[-1].rollover


def test_daily_restart_rolls_over_at_local_time() -> None:
    s = RoomSchedule.build([{"always": True}], timezone="Asia/Shanghai", daily_restart="04:00")
    wins = s.occurrences(utc(2026, 7, 1), utc(2026, 7, 4))
    assert {w.start.astimezone(s.tz).strftime("%H:%M") for w in wins} == {"04:00"}
    assert all(w.end - w.start == timedelta(days=1) for w in wins if w.end)
    # catch-up right before a rollover still starts: the airtime continues past it
    assert s.active_at(local("Asia/Shanghai", 2026, 7, 2, 3, 59)) is not None


def test_daily_restart_not_right_after_window_start() -> None:
    s = RoomSchedule.build(
        [{"cron": "30 3 * * *", "duration": "10h"}], timezone="UTC", daily_restart="04:00"
    )
    (w,) = s.occurrences(utc(2026, 7, 1), utc(2026, 7, 1, 23))
    assert (w.start, w.end) == (utc(2026, 7, 1, 3, 30), utc(2026, 7, 1, 13, 30))


def test_spec_model_is_frozen_and_forbids_extra() -> None:
    spec = WindowSpec(cron="0 20 * * *", duration=timedelta(hours=1))
    with pytest.raises(ValueError):
        WindowSpec.model_validate({"always": True, "x": 1})
    assert spec.model_config.get("frozen") is True
