"""The status page in headless Chromium: DOM after the scripts ran, console errors, screenshots."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette

from orchestrator.httpserver import serve
from orchestrator.rooms.model import RoomState
from tests.support.chromium import chromium
from tests.support.ops_fakes import NOW, OpsFixture, make_ops

pytestmark = pytest.mark.external_service

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _rows(dom: str) -> dict[str, str]:
    return dict(re.findall(r'<tr class="room" data-room-id="([^"]+)" data-state="([^"]+)"', dom))


@pytest.fixture
def ops() -> OpsFixture:
    return make_ops()


async def test_status_page_lists_rooms_and_follows_state_changes(
    require_service: Callable[[str], None], tmp_path: Path, ops: OpsFixture
) -> None:
    require_service("chromium")
    app = Starlette(routes=ops.routes())
    # the browser counts down on its real clock
    retry_at = datetime.now(UTC) + timedelta(minutes=10)
    ops.rooms.put("room-b", RoomState.BACKOFF, attempt=2, next_retry_at=retry_at)
    ops.rooms.put(
        "room-c",
        RoomState.QUARANTINED,
        last_error="<img src=x onerror=alert(1)>",
        alert="restart ladder exhausted",
    )
    async with serve(app, port=0) as served:
        base = served.base_url
        first = await chromium(base + "/", tmp_path / "p1", "--dump-dom")
        dom = first.out.decode()
        assert _rows(dom) == {"room-a": "LIVE", "room-b": "BACKOFF", "room-c": "QUARANTINED"}
        assert 'class="state state-live"' in dom
        assert 'class="state state-quarantined"' in dom
        assert "97.2%" in dom  # today's SLA of room-a
        assert re.search(r'<td class="countdown"[^>]*>in (9|10)m', dom), dom
        assert "20:00:00" in dom or "8:00:00" in dom  # room-a's next window
        assert "STREAMKEY" not in dom
        # markup in data is shown as text, never parsed
        assert "&lt;img src=x onerror=alert(1)&gt;" in dom
        assert "<img src=x" not in dom
        assert "conn-ok" in dom
        assert first.console == []

        ops.rooms.put("room-b", RoomState.LIVE, job_id="job-77")
        second = await chromium(base + "/", tmp_path / "p2", "--dump-dom")
        dom2 = second.out.decode()
        assert _rows(dom2)["room-b"] == "LIVE"
        assert "job-77" in dom2
        assert second.console == []

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-page.png"
        shot.unlink(missing_ok=True)
        await chromium(base + "/", tmp_path / "p3", f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_room_page_shows_audit_log_and_timeline(
    require_service: Callable[[str], None], tmp_path: Path, ops: OpsFixture
) -> None:
    require_service("chromium")
    app = Starlette(routes=ops.routes(now=NOW))
    async with serve(app, port=0) as served:
        url = served.base_url + "/ui/rooms/room-a"
        run = await chromium(url, tmp_path / "p1", "--dump-dom")
        dom = run.out.decode()
        assert run.console == []
        assert dom.count('<tr class="transition">') == 4
        assert "RtmpStateReported" in dom
        assert "<svg" in dom
        assert 'class="seg kind-fault"' in dom
        assert 'class="seg kind-live"' in dom
        assert 'class="scheduled"' in dom
        assert "job-1" in dom
        assert "STREAMKEY" not in dom and "nope" not in dom

        missing = await chromium(served.base_url + "/ui/rooms/nope", tmp_path / "p2", "--dump-dom")
        assert "HTTP 404" in missing.out.decode()  # the page says what failed
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status-room.png"
        await chromium(url, tmp_path / "p3", f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
