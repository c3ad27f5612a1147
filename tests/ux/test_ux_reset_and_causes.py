"""Leaving QUARANTINED without MQTT, and the status page's names, causes and "no data".

Against the REAL daemon and emulator (tests.support.ux); the CLI runs as a process
(``python -m orchestrator``). Chromium screenshots go to ``$LIVEORCH_SCREENS_DIR`` (default
test-artifacts/, git-ignored) for a human to look at.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.emulator.service import Fault
from orchestrator.rooms.model import RoomState
from tests.support.chromium import chromium
from tests.support.ux import ARTIFACTS, running_stack

pytestmark = [pytest.mark.e2e]

SCREENS = Path(os.environ.get("LIVEORCH_SCREENS_DIR") or ARTIFACTS)


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_reset_takes_a_room_out_of_quarantine(tmp_path: Path) -> None:
    refuse = Fault(operation="start", status=400, error_code="MSS.00000003", count=1)
    async with running_stack(tmp_path, rooms=("ux-q",), faults=[refuse]) as st:
        await st.wait_state("ux-q", RoomState.QUARANTINED)
        rc, _, err = await _cli("reset", "nope", "--url", st.ops_url)
        assert (rc, err.strip()) == (2, "liveorch: no room 'nope'")
        assert st.state("ux-q") is RoomState.QUARANTINED  # a bad request changes nothing

        rc, out, err = await _cli("reset", "ux-q", "--url", st.ops_url)
        assert (rc, out.strip(), err) == (0, "liveorch: reset of ux-q accepted", "")
        await st.wait_state("ux-q", RoomState.LIVE)  # the refused start was a one-off

        rc, out, err = await _cli("status", "ux-q", "--url", st.ops_url)
        assert rc == 0, err
        assert re.search(r"QUARANTINED\s+UNKNOWN\s+operator reset via ops HTTP", out), out
        assert re.search(r"STARTING\s+QUARANTINED\s+start refused", out), out


@pytest.mark.external_service
async def test_status_page_names_causes_and_no_data(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("chromium")
    SCREENS.mkdir(parents=True, exist_ok=True)
    async with running_stack(tmp_path, rooms=("ux-a", "ux-b")) as st:
        await st.wait_state("ux-a", RoomState.LIVE)
        await st.wait_state("ux-b", RoomState.LIVE)
        st.clock.advance(60)
        await st.drop_link("ux-a")
        await st.wait_state("ux-a", RoomState.DEGRADED)
        await chromium(
            st.ops_url + "/", tmp_path / "p0", f"--screenshot={SCREENS / 'status-degraded.png'}"
        )
        st.clock.advance(10)  # the grace ends: REFRESH_OUTPUT_URL brings the link back
        await st.wait_state("ux-a", RoomState.LIVE)

        index = await chromium(st.ops_url + "/", tmp_path / "p1", "--dump-dom")
        dom = index.out.decode()
        assert index.console == []
        assert '<span class="room-name">ux room ux-a</span>' in dom
        assert '<span class="room-name">ux room ux-b</span>' in dom

        room = await chromium(st.ops_url + "/ui/rooms/ux-a", tmp_path / "p2", "--dump-dom")
        page = room.out.decode()
        assert room.console == []
        assert 'id="room-name" class="room-name">ux room ux-a<' in page
        why = re.findall(r'<td class="why"[^>]*>([^<]*)</td>', page)
        assert why[:4] == [
            # after a drop a CONNECTED callback is a hint; the job read that shows the push
            # advancing is what ends it (issue 20)
            "job read: pushing (CONNECTED)",
            "still down after the grace period: repairing",
            "callback DISCONNECTED",
            "callback CONNECTED",
        ], why
        assert why[-1] == "daemon start: no job"
        # the day before this daemon's first record is "no data", not the UNKNOWN state
        segments = re.findall(r'class="seg kind-([a-z]+)"', page)
        assert segments[0] == "nodata"
        assert "unknown" not in segments
        for name, url in (("status-page.png", "/"), ("status-room.png", "/ui/rooms/ux-a")):
            shot = SCREENS / name
            shot.unlink(missing_ok=True)
            run = await chromium(st.ops_url + url, tmp_path / name, f"--screenshot={shot}")
            assert run.console == []
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
