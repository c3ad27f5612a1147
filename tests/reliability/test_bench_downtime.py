"""The downtime bench's machinery on a tiny scale, so it cannot rot between full runs.

Same code as ``python -m bench downtime --quick`` (emulator in process, the daemon and the naive
poller for real, faults through the emulator's admin API, the per-room callback gate), one
repetition of a few faults. Asserts what the machinery did, never how fast: speed lives in
``bench/``.
"""

from __future__ import annotations

import math

import pytest

from bench import downtime
from orchestrator.settings import RecoverySettings


def test_every_fault_has_a_floor_with_a_reason() -> None:
    d = downtime._defaults()
    for fault in downtime.FAULTS:
        assert fault.floor(d) > 0, fault.name
        assert fault.floor_why.strip(), fault.name
    names = [f.name for f in downtime.FAULTS]
    assert len(names) == len(set(names))


def test_the_daemon_runs_at_shipped_defaults_only_compressed() -> None:
    """Every [recovery] duration is the shipped default divided by the factor, nothing else."""
    recovery, extra = downtime.daemon_settings(20.0)
    shipped = RecoverySettings()
    for name, value in recovery.items():
        default = float(getattr(shipped, name))
        expected = default * 20.0 if name.endswith("per_s") else default / 20.0
        assert value == pytest.approx(expected), name
    durations = {n for n, f in RecoverySettings.model_fields.items() if n.endswith("_s")}
    assert durations <= set(recovery), durations - set(recovery)
    assert set(extra) == {"cloud"}


def test_off_air_time_is_cut_to_the_window() -> None:
    from orchestrator.emulator.service import EmulatorService

    tracker = downtime.Tracker(EmulatorService("p", {}), ["r"])
    tracker.flips["r"] = [(0.0, False), (1.0, True), (5.0, False), (7.0, True)]
    assert tracker.down_between("r", 0.0, 10.0) == pytest.approx(3.0)
    assert tracker.down_between("r", 4.0, 6.0) == pytest.approx(1.0)
    assert tracker.down_between("r", 8.0, 9.0) == 0.0


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_quick_machinery_runs_both_contestants(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BENCH_NO_RECORD", "1")  # never a row in RESULTS.md from a test
    faults = ("job_failed", "dark_drop", "revoked_backup", "storm_429")
    plan = downtime.Plan(scale=60.0, reps=1, faults=faults)
    live = await downtime.run_liveorch(plan)
    naive = await downtime.run_naive(downtime.Plan(scale=60.0, reps=1, faults=("job_failed",)))
    assert sorted(e.fault for e in live) == sorted(faults)
    assert [e.fault for e in naive] == ["job_failed"]
    for ep in [*live, *naive]:
        assert math.isfinite(ep.down_sim_s) and ep.down_sim_s >= 0.0
        assert ep.timeline[0].startswith("+0.0s fault:")
        assert 0.0 <= ep.phase_sim_s <= downtime.PHASE_SPAN_SIM_S
    dark = next(e for e in live if e.fault == "dark_drop")
    assert any("DISCONNECTED" in line for line in dark.timeline)
    # the revoked key is refused on the emulator: the push went down at least once
    revoked = next(e for e in live if e.fault == "revoked_backup")
    assert any("DISCONNECTED" in line for line in revoked.timeline)
    downtime.report(plan, naive, live, [], quick=True)
    out = capsys.readouterr().out
    for name in faults:
        assert name in out
