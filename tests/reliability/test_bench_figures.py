"""The bench machinery that turns raw observations into RESULTS.md figures (issue 24).

No timing here: these check that the intake bench's per-id persistence check reads the daemon's
real dedupe keys, that its profile summary attributes samples to the right thread and package,
and that the scale bench's median-of-N summary reports the spread and treats a run that never
repaired as a miss.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from bench._intake_load import _script_body
from bench._profile import summarise_profile
from bench.intake import _per_id, _seq
from bench.scale import _median, _summary
from orchestrator.callbacks.parse import dedupe_key, parse_body

JOBS = [("room-a", "job-a"), ("room-b", "job-b")]
AT = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def _key(i: int) -> str:
    """The inbox dedupe key the daemon stores for the load generator's request ``i``."""
    return dedupe_key(parse_body(_script_body(i, JOBS)), AT)


def test_each_load_request_is_its_own_inbox_row_and_its_id_is_read_back() -> None:
    keys = {_key(i) for i in range(10)}
    assert len(keys) == 10  # same job, same second: still distinct events
    assert [_seq(_key(i)) for i in (0, 7, 12345)] == [0, 7, 12345]
    assert _seq("v1|job-a|SHOOT_SCRIPT_SWITCH|default-scene#1|1700000000") is None


def test_per_id_check_finds_missing_doubled_and_unanswered_rows() -> None:
    rows = [(_key(1), True), (_key(2), True), (_key(2), True), (_key(5), False)]
    got = _per_id([1, 2, 3, 3], rows)
    assert got == {
        "missing_ids": 1,  # 3 was answered 200 (twice) but has no row
        "doubled_ids": 1,  # 2 has two rows
        "rows_not_accepted": 1,  # 5 has a row but was never answered 200
        "rows_not_processed": 1,
        "duplicate_answers": 1,
    }
    assert _per_id([1, 2], [(_key(1), True), (_key(2), True)])["missing_ids"] == 0


def test_profile_summary_splits_threads_and_packages(tmp_path: Path) -> None:
    raw = tmp_path / "pyspy.txt"
    raw.write_text(
        "thread (1): MainThread;run (orchestrator/app.py:1);"
        "accept (orchestrator/callbacks/receiver.py:2);info (structlog/_native.py:3) 6\n"
        "thread (1): MainThread;run (orchestrator/app.py:1);select (selectors.py:4) 2\n"
        "thread (2): Thread-1 (_connection_worker_thread);run (threading.py:5) 2\n"
    )
    p = summarise_profile(raw)
    assert p["samples"] == 10
    assert p["threads"] == {"MainThread": 80.0, "Thread-1 (_connection_worker_thread)": 20.0}
    assert p["packages"] == [("structlog", 75.0), ("selectors", 25.0)]
    inclusive = dict(p["inclusive"])
    assert inclusive["receiver.accept"] == 75.0
    assert inclusive["[structlog, inclusive]"] == 75.0
    assert "app.run" not in inclusive  # shared by every sample: no information


def test_scale_summary_is_median_with_spread_and_a_failed_repair_is_a_miss() -> None:
    runs = [
        {"rss_peak_mb": 280.0, "dark_drop_repaired_s": 40.0},
        {"rss_peak_mb": 300.0, "dark_drop_repaired_s": math.nan},
        {"rss_peak_mb": 250.0, "dark_drop_repaired_s": 50.0},
    ]
    summary = _summary(runs)
    assert summary["rss_peak_mb"] == "280 [250-300]"
    assert summary["dark_drop_repaired_s"] == "45 [40-50, 1 n/a]"
    assert _median(runs, "rss_peak_mb") == 280.0
    assert math.isnan(_median(runs, "dark_drop_repaired_s"))
