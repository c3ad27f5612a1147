"""probe_once and ProbeRunner against a REAL nginx-rtmp with a REAL ffmpeg publisher.

"Dead" is made the way it happens in the field: the server stays up, the stream stops.
Every wait is a condition with a deadline (probe until ok / until not ok), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from orchestrator.clock import SystemClock
from orchestrator.probe import (
    PROBE_CAUSE,
    ProbeDecision,
    ProbeResult,
    ProbeRunner,
    ProbeSettings,
    probe_once,
)
from orchestrator.rooms.model import Event, Order, RoomState, RtmpStateReported, Snapshot
from tests.support.nginx_rtmp import FfmpegPublisher, NginxRtmp

pytestmark = [pytest.mark.external_service, pytest.mark.timeout(40)]

PROBE_TIMEOUT_S = 3.0
DEADLINE_S = 15.0


async def probe_until(url: str, want_ok: bool, deadline_s: float = DEADLINE_S) -> ProbeResult:
    """Probe until the result's ``ok`` is ``want_ok``; fail the test at the deadline."""
    end = time.monotonic() + deadline_s
    last: ProbeResult | None = None
    while time.monotonic() < end:
        last = await probe_once(url, timeout_s=PROBE_TIMEOUT_S)
        if last.ok is want_ok:
            return last
    pytest.fail(f"playback never became ok={want_ok} within {deadline_s}s (last: {last})")


async def test_probe_is_ok_while_publishing_and_fails_when_the_stream_stops(
    nginx_rtmp: NginxRtmp, publisher: FfmpegPublisher
) -> None:
    play = nginx_rtmp.url("stream1") + "?token=SECRET-PLAY-TOKEN"
    publisher.start()
    result = await probe_until(play, want_ok=True)
    assert result == ProbeResult(True, "ok", video=True, audio=True)

    publisher.stop()  # nginx stays up: the classic "connected somewhere, nothing to watch"
    dead = await probe_until(play, want_ok=False)
    assert not dead.video and dead.conclusive
    assert "SECRET-PLAY-TOKEN" not in dead.reason


async def test_a_stream_nobody_publishes_is_dead(
    nginx_rtmp: NginxRtmp, publisher: FfmpegPublisher
) -> None:
    publisher.start()  # another stream is live on the same server
    await probe_until(nginx_rtmp.url("stream1"), want_ok=True)
    result = await probe_once(nginx_rtmp.url("nobody") + "?k=SECRET", timeout_s=PROBE_TIMEOUT_S)
    assert not result.ok and result.conclusive
    assert result.reason.startswith(("ffprobe_exit:", "timeout"))
    assert "SECRET" not in result.reason


class RecordingSink:
    def __init__(self) -> None:
        self.posted: list[tuple[str, Event]] = []

    def post(self, room_id: str, event: Event) -> bool:
        self.posted.append((room_id, event))
        return True


async def test_runner_reports_a_dead_stream_once_and_resets_when_it_returns(
    nginx_rtmp: NginxRtmp, publisher: FfmpegPublisher
) -> None:
    play = nginx_rtmp.url("stream1")
    settings = ProbeSettings(interval_s=0.2, timeout_s=PROBE_TIMEOUT_S, fail_after_s=1.0)
    since = datetime.now(UTC)
    snapshot = Snapshot(
        room_id="room-1", state=RoomState.LIVE, order=Order.ON, job_id="job-1", since=since,
        attempt=1, next_retry_at=None, last_error=None, alert=None,
        extra={"rtmp_state": "CONNECTED"},
    )  # fmt: skip
    sink = RecordingSink()
    observed: asyncio.Queue[ProbeDecision] = asyncio.Queue()
    runner = ProbeRunner(
        sink,
        rooms=lambda: {"room-1": (play, settings)},
        snapshot=lambda room_id: snapshot if room_id == "room-1" else None,
        clock=SystemClock(),
        observer=lambda _room, _result, decision: observed.put_nowait(decision),
    )

    async def until(*transitions: str) -> ProbeDecision:
        async with asyncio.timeout(DEADLINE_S):
            while (decision := await observed.get()).transition not in transitions:
                pass
        return decision

    publisher.start()
    await probe_until(play, want_ok=True)
    task = asyncio.create_task(runner.run(), name="test-probe-runner")
    try:
        await until("ok")
        publisher.stop()
        dead = await until("dead")
        assert len(sink.posted) == 1
        room_id, event = sink.posted[0]
        assert room_id == "room-1"
        assert isinstance(event, RtmpStateReported)
        assert (event.job_id, event.rtmp_state, event.cause) == (
            "job-1", "DISCONNECTED", PROBE_CAUSE,
        )  # fmt: skip
        assert event == dead.event
        assert dead.dead_for_s >= settings.fail_after_s
        # still dead on the next probe: nothing more is posted
        assert (await until("still_dead", "recovered")).transition == "still_dead"
        assert len(sink.posted) == 1

        publisher.start()
        recovered = await until("recovered")
        assert recovered.event is None
        tracker = runner.tracker("room-1")
        assert tracker is not None and tracker.dead_since is None and not tracker.fired
        assert len(sink.posted) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
