"""Fixtures for the probe tests: a private nginx-rtmp and a real ffmpeg publisher."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.nginx_rtmp import FfmpegPublisher, NginxRtmp


@pytest.fixture
def nginx_rtmp(tmp_path: Path, require_service: Callable[[str], None]) -> Iterator[NginxRtmp]:
    require_service("nginx-rtmp")
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def publisher(
    nginx_rtmp: NginxRtmp, require_service: Callable[[str], None]
) -> Iterator[FfmpegPublisher]:
    """Not started: tests start and stop it to make the playback live or dead."""
    require_service("ffmpeg")
    require_service("ffprobe")
    pub = FfmpegPublisher(nginx_rtmp.url("stream1"))
    try:
        yield pub
    finally:
        pub.stop()
