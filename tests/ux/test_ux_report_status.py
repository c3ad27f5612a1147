"""`liveorch report` and `liveorch status` helpers (pure parts; the CLIs run in the e2e tests)."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from orchestrator import report, status
from orchestrator.settings import Settings
from orchestrator.store.base import SlaRow

TODAY = date(2026, 11, 25)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1d", TODAY),
        ("7d", TODAY - timedelta(days=6)),
        ("24h", TODAY),
        ("25h", TODAY - timedelta(days=1)),
        ("2w", TODAY - timedelta(days=13)),
        ("2026-11-01", date(2026, 11, 1)),
    ],
)
def test_since_is_inclusive_of_today(value: str, expected: date) -> None:
    assert report.parse_since(value, TODAY) == expected


def test_a_bad_since_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="7d, 24h, 2w or YYYY-MM-DD"):
        report.parse_since("last week", TODAY)


def test_rows_without_schedule_or_recoveries_render_as_dashes() -> None:
    rows = report.rows_to_dicts([SlaRow("r", TODAY, 0.0, 0.0, 0, 0, 0.0, 0.0)])
    assert rows[0]["sla_pct"] is None and rows[0]["mean_recovery_s"] is None
    table = report.render(rows, "table").splitlines()
    assert table[1].split() == ["r", "2026-11-25", "0.0", "0.0", "-", "0", "0", "-", "-"]
    assert report.render([], "json") == "[]"
    assert report.render([], "csv").splitlines() == [
        "room_id,day,scheduled_s,live_s,sla_pct,drops,recoveries,mean_recovery_s,max_recovery_s"
    ]


async def test_report_refuses_a_store_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.db"
    args = argparse.Namespace(since="7d", room=None, format="table", store=None)
    settings = Settings.model_validate({"store": {"url": f"sqlite+aiosqlite:///{missing}"}})
    assert await report.run_from_args(args, settings) == 2
    assert "no store at" in capsys.readouterr().err
    assert not missing.exists(), "a typo must not create an empty store"


def test_status_table_marks_alerts_and_counts_down() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    out = status.render_table(
        [
            {
                "room_id": "r1",
                "state": "QUARANTINED",
                "order": "ON",
                "alert": "quarantined",
                "since": (now - timedelta(minutes=5)).isoformat(),
                "last_error": "start refused",
            },
            {
                "room_id": "r2",
                "state": "BACKOFF",
                "order": "ON",
                "job_id": "0123456789abcdef",
                "attempt": 2,
                "next_retry_at": (now + timedelta(seconds=30)).isoformat(),
            },
        ],
        now,
    ).splitlines()
    assert out[1].split()[:5] == ["r1", "QUARANTINED", "!", "ON", "-"]
    assert "5m ago" in out[1] and "start refused" in out[1]
    assert "0123456789ab" in out[2] and "0123456789abc" not in out[2]
    assert "in 30s" in out[2]
