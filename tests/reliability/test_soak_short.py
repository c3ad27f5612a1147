"""A CI-sized soak: 30 rooms for 90 s of compressed schedules under random faults.

Same harness as ``python -m bench soak`` (emulator, mosquitto and the daemon as real processes;
one SIGKILL + restart of the daemon, one broker restart, drops, failures, 5xx/429 storms,
latency, ghost starts, 5 % lost/duplicated and reordered callbacks), judged from the emulator's
journal. It asserts the soak's limits, not its speed:

* never two running jobs for one room, never two jobs pushing one stream key;
* every scheduled second is exactly one of live, an attributed outage or an unaccounted one,
  and the journal agrees with every sample of ``/_emulator/jobs``;
* no MQTT command lost, none executed twice, every reply matches its effect; commands keep
  flowing into the SIGKILL (no quiet window) and each one the kill interrupted ends applied
  once, answered ``outcome_unknown``, or refused with no effect;
* RSS over the last incarnation grows by less than ``RSS_GROWTH_LIMIT_MB`` (only a gross leak
  shows in ~40 s; the slope limit in MB per simulated hour is the bench's);
* a live-share floor: at least ``LIVE_FLOOR_PCT`` of scheduled time live, from the emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.soak import SoakConfig, run_soak

pytestmark = [pytest.mark.e2e, pytest.mark.external_service]

# Live share of scheduled time (after the 15 s start allowance), emulator side. This config's
# faults cost ~3.5-4 % of it: 95.9, 96.4 and 96.5 % live in three runs on the 2-core dev box
# at load 3-8 (2026-12-03). 90 % leaves recoveries 2.5x slower than that (a slower CI runner)
# before failing, while a daemon that left 2 of 30 rooms dark after its SIGKILL, or restarted
# ~10 s late, falls below it.
LIVE_FLOOR_PCT = 90.0
# RSS growth over the ~40 s fit after the warm-up: ~1.1 MB measured (caches of a fresh
# incarnation filling); 10 MB catches a gross leak only.
RSS_GROWTH_LIMIT_MB = 10.0


@pytest.mark.timeout(300)
async def test_short_soak_keeps_every_invariant(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("mosquitto")
    require_service("mosquitto-binary")  # a private, restartable broker
    cfg = SoakConfig(
        rooms=30,
        duration_s=90.0,
        window_on_s=30.0,
        window_off_s=10.0,
        fault_every_s=1.5,
        daemon_kills=1,
        broker_restarts=1,
        command_every_s=0.5,
        seed=7,
        kill_burst=8,  # commands keep flowing into the SIGKILL: no quiet window
        warmup_s=15.0,
    )
    report = await run_soak(cfg, tmp_path)
    assert report.samples > 0 and report.commands_sent > 0 and report.journal_entries > 0
    assert sum(report.faults.values()) > 0
    assert report.daemon_kills == 1 and report.broker_restarts == 1
    assert report.invariant_failures() == []
    # the emulator-side invariants
    assert report.duplicates == [] and report.double_pushers == []
    assert report.partition_error_s < 1e-6 and report.sample_disagreements == []
    assert report.scheduled_s > 0
    assert report.live_pct >= LIVE_FLOOR_PCT, report.live_pct
    # commands, across the kill
    assert report.commands_lost == [] and report.commands_double == []
    assert report.commands_effect_mismatch == []
    assert report.commands_interrupted > 0  # the kill did land among commands
    # "applied_once" (ok, one effect), "outcome_unknown" (0 or 1 effect) or an error code with
    # no effect; "<reply>_applied_<n>" would be a reply that lies about its effect
    outcomes = report.interrupted_outcomes
    assert not any("_applied_" in k for k in outcomes), outcomes
    # memory over the last incarnation, after the warm-up
    assert report.rss_fit_span_s > 20.0
    growth = report.rss_slope_mb_per_h * report.rss_fit_span_s / 3600.0
    assert growth <= RSS_GROWTH_LIMIT_MB, (growth, report.rss_mean_mb)
    assert report.unexpected_errors == [] and report.non_json_lines == []
