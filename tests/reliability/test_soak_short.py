"""A CI-sized soak: 30 rooms for 90 s of compressed schedules under random faults.

Same harness as ``python -m bench soak`` (emulator, mosquitto and the daemon as real processes;
one SIGKILL + restart of the daemon, one broker restart, drops, failures, 5xx/429 storms,
latency, ghost starts, 5 % lost/duplicated and reordered callbacks). It asserts invariants only
— never timing or SLA figures, which depend on the machine: no two running jobs for one room,
no MQTT command lost or executed twice, replays answered alike, no unexpected error in the
daemon's log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.soak import SoakConfig, run_soak

pytestmark = [pytest.mark.e2e, pytest.mark.external_service]


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
        quiet_kills=True,  # see SoakConfig.quiet_kills: the bench measures that window
    )
    report = await run_soak(cfg, tmp_path)
    assert report.samples > 0 and report.commands_sent > 0
    assert sum(report.faults.values()) > 0
    assert report.daemon_kills == 1 and report.broker_restarts == 1
    assert report.invariant_failures() == []
    assert report.duplicates == []
    assert report.commands_lost == []
    assert report.commands_double == []
    assert report.unexpected_errors == [] and report.non_json_lines == []
