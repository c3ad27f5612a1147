from __future__ import annotations

import argparse

import pytest

from orchestrator.schedule.preview import add_arguments, run_from_args
from orchestrator.settings import Settings


def test_preview_marks_dst_and_holidays(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.model_validate(
        {
            "rooms": [
                {
                    "id": "r1",
                    "timezone": "Europe/Berlin",
                    "windows": [{"cron": "30 2 * * *", "duration": "2h"}],
                    "exclude": ["2026-03-31"],
                }
            ]
        }
    )
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--room", "r1", "--from", "2026-03-28T00:00:00+00:00", "--days", "4"])
    assert run_from_args(args, settings) == 0
    out = capsys.readouterr().out
    assert "2026-03-29T03:00+02:00" in out and "DST" in out
    assert "excluded/holiday days: 2026-03-31" in out
    assert run_from_args(p.parse_args(["--room", "nope"]), settings) == 2
