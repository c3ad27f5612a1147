"""`liveorch demo` says what it waits for (issue 21: it was silent for ~70 s).

The real demo (emulator + daemon in one process), with its ticks made short: every wait is
announced, and the closing wait counts down.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from orchestrator.demo import run_demo

pytestmark = [pytest.mark.e2e]


async def test_demo_announces_every_wait_and_counts_down(tmp_path: Path) -> None:
    out = io.StringIO()
    rc = await run_demo(duration_s=40.0, out=out, state_dir=tmp_path, window_in_s=2.0, tick_s=0.5)
    text = out.getvalue()
    assert rc == 0, text
    for said in (
        "starting the daemon (store, adoption of running jobs, schedule)",
        "demo-247     24/7 window: starting its job, waiting for LIVE",
        "the service gets 2 s to reconnect by itself, then the daemon refreshes the output",
        "<<< recovered in",
        "demo done; the status page http://127.0.0.1:",
    ):
        assert said in text, text
    assert re.search(r"demo-window  (waiting for its one-off window|window open)", text), text
    countdown = [int(n) for n in re.findall(r"\] ending in (\d+) s", text)]
    assert countdown, text
    assert countdown == sorted(countdown, reverse=True)
