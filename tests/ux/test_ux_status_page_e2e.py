"""The status page in headless Chromium against the REAL daemon and emulator.

A held RTMP drop (emulator admin API) must show on the page as DEGRADED, then — after the
ladder's refresh repaired it — as LIVE again, with today's SLA from the store, the room page's
audit log naming DEGRADED and REFRESHING, and no console error on any page. DOM dumps and
screenshots go to test-artifacts/ (git-ignored) for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.rooms.model import RoomState
from tests.support.chromium import chromium
from tests.support.ux import ARTIFACTS, per_day, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.external_service]


def _rows(dom: str) -> dict[str, str]:
    return dict(re.findall(r'<tr class="room" data-room-id="([^"]+)" data-state="([^"]+)"', dom))


def _save(name: str, data: bytes) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(data)


async def _sla_text(ops_url: str, room: str) -> str:
    async with httpx.AsyncClient(base_url=ops_url) as ops:
        rooms = (await ops.get("/rooms")).json()["rooms"]
    sla = next(r for r in rooms if r["room_id"] == room)["sla_today"]
    return f"{sla['percent']:.1f}%"


async def test_page_follows_a_real_drop_and_its_repair(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("chromium")
    async with running_stack(tmp_path, rooms=("ux-a", "ux-b")) as st:
        t0 = st.clock.now()
        await st.wait_state("ux-a", RoomState.LIVE)
        await st.wait_state("ux-b", RoomState.LIVE)
        st.clock.advance(60)
        await st.drop_link("ux-a")
        await st.wait_state("ux-a", RoomState.DEGRADED)
        await st.daemon.sla_book.flush()

        degraded = await chromium(st.ops_url + "/", tmp_path / "p1", "--dump-dom")
        dom1 = degraded.out.decode()
        _save("status-page-e2e-degraded.html", degraded.out)
        assert degraded.console == []
        assert _rows(dom1) == {"ux-a": "DEGRADED", "ux-b": "LIVE"}
        assert 'class="state state-degraded"' in dom1
        assert "conn-ok" in dom1  # the page's last poll succeeded
        assert st.job_id("ux-a") in dom1
        assert "100.0%" in dom1  # SLA today, from the store: nothing lost before the drop
        assert "ux-key-" not in dom1  # never a stream key
        await chromium(
            st.ops_url + "/",
            tmp_path / "p2",
            f"--screenshot={ARTIFACTS / 'status-page-e2e-degraded.png'}",
        )

        st.clock.advance(10)  # grace over: REFRESH_OUTPUT_URL brings the link back
        await st.wait_state("ux-a", RoomState.LIVE)
        assert st.seen.states("ux-a")[-3:] == ["DEGRADED", "REFRESHING", "LIVE"]
        await st.daemon.sla_book.flush()
        live = per_day(t0, [(0, 60)]).get(t0.date(), 0.0)
        sched = per_day(t0, [(0, 70)]).get(t0.date(), 0.0)
        sla = await _sla_text(st.ops_url, "ux-a")
        if t0.date() == st.clock.now().date():
            assert sla == f"{100 * live / sched:.1f}%" == "85.7%"

        healed = await chromium(st.ops_url + "/", tmp_path / "p3", "--dump-dom")
        dom2 = healed.out.decode()
        _save("status-page-e2e-live.html", healed.out)
        assert healed.console == []
        assert _rows(dom2) == {"ux-a": "LIVE", "ux-b": "LIVE"}
        assert sla in dom2
        assert "state-degraded" not in dom2

        room = await chromium(st.ops_url + "/ui/rooms/ux-a", tmp_path / "p4", "--dump-dom")
        dom3 = room.out.decode()
        _save("status-room-e2e.html", room.out)
        assert room.console == []
        assert "DEGRADED" in dom3 and "REFRESHING" in dom3
        assert dom3.count('<tr class="transition">') >= 5  # → IDLE → STARTING → LIVE → … → LIVE
        assert 'class="seg kind-fault"' in dom3 and 'class="seg kind-live"' in dom3

        shot = ARTIFACTS / "status-page-e2e.png"
        shot.unlink(missing_ok=True)
        final = await chromium(st.ops_url + "/", tmp_path / "p5", f"--screenshot={shot}")
        assert final.console == []
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
