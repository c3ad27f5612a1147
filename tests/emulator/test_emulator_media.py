"""Real media: a job pushes to a private nginx-rtmp; killing nginx breaks the job's link."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from orchestrator.emulator.app import create_app
from orchestrator.emulator.media import FfmpegPusher, push_target
from orchestrator.emulator.service import EmulatorService, Job
from orchestrator.httpserver import serve
from tests.support.emulator import AK, PROJECT, SK
from tests.support.nginx_rtmp import FfmpegPublisher, NginxRtmp

pytestmark = pytest.mark.external_service


def test_push_target() -> None:
    assert push_target("rtmp://h/live/", "k") == "rtmp://h/live/k"
    assert push_target("rtmp://h/live", "") == "rtmp://h/live"


async def test_killing_nginx_breaks_the_link(
    nginx_rtmp: NginxRtmp, require_service: Callable[[str], None]
) -> None:
    require_service("ffmpeg")
    port = nginx_rtmp.port
    service = EmulatorService(
        PROJECT,
        {AK: SK},
        seed=1,
        waiting_s=0.0,
        connect_s=1.0,
        reconnect_interval_s=30.0,
        media=FfmpegPusher(rw_timeout_s=2.0),
    )
    service.add_room(
        "room-1", {"output_urls": [f"rtmp://127.0.0.1:{port}/live"], "stream_keys": ["test"]}
    )
    states: asyncio.Queue[str] = asyncio.Queue()

    def listener(job: Job, state: str) -> None:
        states.put_nowait(state)

    service.rtmp_listeners.append(listener)

    async def wait_for_state(*wanted: str) -> str:
        while True:
            state = await asyncio.wait_for(states.get(), 15)
            if state in wanted:
                return state

    async with service:
        job_id = service.start_job("room-1", {}, base_url="http://127.0.0.1")["job_id"]
        assert await wait_for_state("CONNECTED") == "CONNECTED"
        nginx_rtmp.stop()  # SIGKILL, reaped
        left = await wait_for_state("DISCONNECTED", "RECONNECTING")
        assert left in ("DISCONNECTED", "RECONNECTING")
        assert service.jobs[job_id].rtmp_state != "CONNECTED"
        service.stop_job("room-1", job_id)


async def _frames_at(url: str, frames: int = 10, rw_timeout_s: float = 3.0) -> bool:
    """Does a player get ``frames`` video frames from the ingest? (No publisher: nginx-rtmp
    keeps the player waiting, and ``-rw_timeout`` ends it with an error.)"""
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-rw_timeout", str(int(rw_timeout_s * 1_000_000)), "-i", url,
        "-frames:v", str(frames), "-f", "null", "-",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(proc.wait(), rw_timeout_s + 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(pred: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await pred():
                await asyncio.sleep(0.2)  # the polling period, not a synchronisation
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_frames_stop_and_resume_at_the_ingest(
    tmp_path: Path, require_service: Callable[[str], None]
) -> None:
    """Issue 23 with ``--push-ffmpeg``: the platform faults as real media faults at a real
    nginx-rtmp ingest. Its ``on_publish`` hook asks the emulator, which refuses a revoked key
    (403): frames stop; restored, they resume. The ingest stopped: frames stop and the job's
    link goes down; started again on its port: the service's reconnect brings frames back."""
    require_service("ffmpeg")
    require_service("nginx-rtmp")
    service = EmulatorService(
        PROJECT, {AK: SK}, seed=1, waiting_s=0.0, connect_s=0.5, reconnect_interval_s=1.0,
        media=FfmpegPusher(rw_timeout_s=2.0),
    )  # fmt: skip
    async with serve(create_app(service)) as served:
        nginx = NginxRtmp(
            tmp_path / "nginx", on_publish=f"{served.base_url}/_emulator/rtmp/on_publish"
        )
        nginx.start()
        try:
            service.add_room(
                "room-1", {"output_urls": [f"rtmp://127.0.0.1:{nginx.port}/live"],
                           "stream_keys": ["key-1"]},
            )  # fmt: skip
            job_id = service.start_job("room-1", {}, base_url="http://127.0.0.1")["job_id"]
            play = nginx.url("key-1")

            async def frames() -> bool:
                return await _frames_at(play)

            async def no_frames() -> bool:
                return not await _frames_at(play)

            await _until(frames, "frames from the job's push")

            # a revoked key: the hook refuses any publisher with it, not only the job's
            service.revoke_key("key-1")
            await _until(no_frames, "frames stopped after the revocation")
            intruder = FfmpegPublisher(nginx.url("key-1"))
            intruder.start()
            try:
                await _until(lambda: _done(intruder), "a publisher with the revoked key refused")
            finally:
                intruder.stop()
            assert not await _frames_at(play)  # the job's own reconnects are refused as well
            assert service.restore_key("key-1")
            await _until(frames, "frames resumed once the key is restored")

            # the ingest itself stops: the job's link goes down; it returns on the same port
            nginx.stop()

            async def link_down() -> bool:
                return service.jobs[job_id].rtmp_state != "CONNECTED"

            await _until(link_down, "the job's link down with the ingest gone")
            nginx.start()
            await _until(frames, "frames resumed once the ingest is back")
            assert service.jobs[job_id].state == "PROCESSING"  # the same job throughout
        finally:
            nginx.stop()


async def _done(publisher: FfmpegPublisher) -> bool:
    return not publisher.running
