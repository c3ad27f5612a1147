"""Real media: a job pushes to a private nginx-rtmp; killing nginx breaks the job's link."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from emulator_support import AK, PROJECT, SK

from orchestrator.emulator.media import FfmpegPusher, push_target
from orchestrator.emulator.service import EmulatorService, Job

pytestmark = pytest.mark.external_service
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if proc.poll() is not None:
            raise RuntimeError("nginx exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.05):
                return
        except OSError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)
    raise TimeoutError("nginx-rtmp did not listen")


@pytest.fixture
def nginx_rtmp(
    tmp_path: Path, require_service: Callable[[str], None]
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    require_service("ffmpeg")
    require_service("nginx-rtmp")
    port = _free_port()
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"load_module {RTMP_MODULE};\n"
        "daemon off;\nmaster_process off;\n"
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}\n"
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-e", f"{tmp_path}/logs/error.log", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_push_target() -> None:
    assert push_target("rtmp://h/live/", "k") == "rtmp://h/live/k"
    assert push_target("rtmp://h/live", "") == "rtmp://h/live"


async def test_killing_nginx_breaks_the_link(
    nginx_rtmp: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = nginx_rtmp
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
        proc.kill()
        proc.wait()
        left = await wait_for_state("DISCONNECTED", "RECONNECTING")
        assert left in ("DISCONNECTED", "RECONNECTING")
        assert service.jobs[job_id].rtmp_state != "CONNECTED"
        service.stop_job("room-1", job_id)
