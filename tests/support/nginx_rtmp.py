"""A private nginx with the RTMP module, and a real ffmpeg publisher, for media tests.

Each :class:`NginxRtmp` runs in the foreground (``daemon off``, ``master_process off``) with its
own prefix, config, pid file and logs under a temp directory, on a free loopback port, so tests
never touch a system nginx and can run in parallel. Processes start in their own session and are
killed by process group and reaped on stop.

Waiting is always on a condition with a deadline (the port accepts connections), paced by
``Popen.wait`` on the process itself, so a crashing nginx is noticed at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.ports import free_port

__all__ = ["RTMP_MODULE", "FfmpegPublisher", "NginxRtmp"]

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group and reap the leader."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class NginxRtmp:
    """``rtmp { server { listen PORT; application live { live on; } } }`` in a temp prefix."""

    def __init__(
        self,
        workdir: Path,
        *,
        app: str = "live",
        nginx: str = "nginx",
        on_publish: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.app = app
        self.nginx = nginx
        self.on_publish = on_publish  # an HTTP hook: non-2xx refuses the publisher
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/{self.app}/{key}"

    def config(self) -> str:
        w = self.workdir
        hook = f"on_publish {self.on_publish}; " if self.on_publish else ""
        return (
            f"load_module {RTMP_MODULE};\n"
            "daemon off;\nmaster_process off;\n"
            f"pid {w}/nginx.pid;\nerror_log {w}/logs/error.log;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; "
            f"application {self.app} {{ live on; {hook}}} }} }}\n"
        )

    def start(self, timeout_s: float = 5.0) -> None:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        self._proc = subprocess.Popen(
            [self.nginx, "-p", str(self.workdir), "-e", f"{self.workdir}/logs/error.log",
             "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._proc.returncode}: {self.error_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(0.05)
        self.stop()
        raise TimeoutError(f"nginx-rtmp did not listen on {self.port}")

    def error_log(self) -> str:
        path = self.workdir / "logs" / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


class FfmpegPublisher:
    """``ffmpeg -re`` pushing a test pattern (H.264) and a tone (AAC) as FLV to ``target``.

    GOP 0.4 s: a new player sees video at the first key frame, so short GOPs keep probes fast.
    """

    def __init__(self, target: str, *, ffmpeg: str = "ffmpeg") -> None:
        self.target = target
        self.ffmpeg = ffmpeg
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "10",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k",
            "-f", "flv", self.target,
        ]  # fmt: skip

    def start(self) -> None:
        self.stop()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None
