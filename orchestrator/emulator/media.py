"""Optional real media for the emulator: one ``ffmpeg -re`` push per PROCESSING job.

A test pattern plus a tone go to ``output_url/stream_key``. When ffmpeg exits on its own (the
RTMP server went away, ``-rw_timeout`` expired) the service is told through ``on_exit`` and the
link goes ``DISCONNECTED``/``RECONNECTING`` exactly as with an injected drop. Stopping a push on
purpose never reports an exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

__all__ = ["FfmpegPusher", "push_target"]

log = structlog.get_logger(__name__)


def push_target(url: str, stream_key: str) -> str:
    """The URL ffmpeg publishes to: the stream key is the last path segment."""
    return f"{url.rstrip('/')}/{stream_key}" if stream_key else url


class FfmpegPusher:
    """Runs and supervises one ffmpeg process per job (the stream key is never logged)."""

    def __init__(
        self, *, ffmpeg: str = "ffmpeg", size: str = "320x568", rw_timeout_s: float = 5.0
    ) -> None:
        self.ffmpeg = ffmpeg
        self.size = size
        self.rw_timeout_s = rw_timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def command(self, target: str) -> list[str]:
        return [
            self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc=size={self.size}:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "50",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
            "-rw_timeout", str(int(self.rw_timeout_s * 1_000_000)),
            "-f", "flv", target,
        ]  # fmt: skip

    def start(self, job_id: str, url: str, stream_key: str, on_exit: Callable[[], None]) -> None:
        self.stop(job_id)
        self._tasks[job_id] = asyncio.get_running_loop().create_task(
            self._run(job_id, push_target(url, stream_key), on_exit), name=f"ffmpeg-{job_id}"
        )

    def stop(self, job_id: str) -> None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job_id: str, target: str, on_exit: Callable[[], None]) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.command(target),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        log.info("emulator_ffmpeg_started", job_id=job_id, pid=proc.pid)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            raise
        log.info("emulator_ffmpeg_exited", job_id=job_id, returncode=code)
        if self._tasks.get(job_id) is asyncio.current_task():
            del self._tasks[job_id]
            on_exit()
