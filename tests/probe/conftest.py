"""Fixtures for the probe tests: a real ffmpeg publisher to the private nginx-rtmp
(``nginx_rtmp``, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.nginx_rtmp import FfmpegPublisher, NginxRtmp


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
