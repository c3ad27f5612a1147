"""probe_once against stand-in ffprobe executables: parsing, errors, hard timeout, no leftovers.

The stand-ins are tiny Python scripts passed as ``ffprobe=``; real ffprobe against a real
nginx-rtmp is covered in test_probe_media.py.
"""

from __future__ import annotations

import asyncio
import os
import select
import stat
import sys
from pathlib import Path

import pytest

from orchestrator.probe import ProbeResult, probe_command, probe_once, safe_url

URL = "rtmp://play.example.com:1935/live/room1?auth_key=SECRET-TOKEN"


def fake_ffprobe(tmp_path: Path, body: str) -> str:
    """An executable that behaves like ffprobe as ``body`` says (``argv`` holds its args)."""
    path = tmp_path / "ffprobe-fake"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time, subprocess\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie some other parent must reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in {"Z", "X"}


def exits_within(pid: int, timeout_s: float) -> bool:
    """Wait (pidfd, no polling) until ``pid`` has exited; True when it did in time."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable) or gone(pid)
    finally:
        os.close(fd)


def test_safe_url_keeps_scheme_host_path_only() -> None:
    assert safe_url(URL) == "rtmp://play.example.com:1935/live/room1"
    assert safe_url("https://user:pw@cdn.example.com/a/b.flv?token=x#f") == (
        "https://cdn.example.com/a/b.flv"
    )


def test_command_uses_rw_timeout_and_never_rtmp_listen_timeout() -> None:
    argv = probe_command(URL, timeout_s=10, ffprobe="/opt/ffprobe")
    assert argv[0] == "/opt/ffprobe"
    assert argv[argv.index("-rw_timeout") + 1] == "5000000"
    assert argv[argv.index("-analyzeduration") + 1] == "5000000"
    assert "-timeout" not in argv  # for RTMP it would turn ffprobe into a listening server
    assert argv[-1] == URL
    assert argv[argv.index("-of") + 1] == "json" and "-show_streams" in argv


async def test_video_and_audio_streams_are_ok(tmp_path: Path) -> None:
    exe = fake_ffprobe(
        tmp_path,
        'print(json.dumps({"streams": [{"codec_type": "video"}, {"codec_type": "audio"}]}))',
    )
    assert await probe_once(URL, timeout_s=5, ffprobe=exe) == ProbeResult(True, "ok", True, True)


async def test_audio_only_is_dead(tmp_path: Path) -> None:
    exe = fake_ffprobe(tmp_path, 'print(json.dumps({"streams": [{"codec_type": "audio"}]}))')
    result = await probe_once(URL, timeout_s=5, ffprobe=exe)
    assert result == ProbeResult(False, "no_video", video=False, audio=True)
    assert result.conclusive


async def test_garbage_output_is_dead(tmp_path: Path) -> None:
    exe = fake_ffprobe(tmp_path, "print('not json')")
    assert await probe_once(URL, timeout_s=5, ffprobe=exe) == ProbeResult(False, "bad_output")


async def test_error_exit_reason_is_scrubbed_of_tokens(tmp_path: Path) -> None:
    exe = fake_ffprobe(
        tmp_path,
        "sys.stderr.write('[rtmp @ 0x1] Server error: nope\\n'"
        " + sys.argv[-1] + ': Input/output error\\n'"
        " + 'tcp://10.0.0.1:1935?rw_timeout=1&tok=SECRET-TOKEN: refused\\n')\n"
        "print('{}'); sys.exit(1)",
    )
    result = await probe_once(URL, timeout_s=5, ffprobe=exe)
    assert not result.ok and result.conclusive
    assert result.reason.startswith("ffprobe_exit:1:")
    assert "SECRET-TOKEN" not in result.reason
    assert "tcp://10.0.0.1:1935?" in result.reason


async def test_url_in_error_line_is_replaced_by_its_safe_form(tmp_path: Path) -> None:
    exe = fake_ffprobe(
        tmp_path, "sys.stderr.write(sys.argv[-1] + ': Input/output error\\n'); sys.exit(1)"
    )
    result = await probe_once(URL, timeout_s=5, ffprobe=exe)
    assert result.reason == (
        "ffprobe_exit:1:rtmp://play.example.com:1935/live/room1: Input/output error"
    )


async def test_hard_timeout_kills_the_whole_group_and_reaps(tmp_path: Path) -> None:
    """A hung ffprobe (and anything it spawned) is killed; nothing is left behind."""
    pids = tmp_path / "pids"
    exe = fake_ffprobe(
        tmp_path,
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)",
    )
    result = await probe_once(URL, timeout_s=1.0, ffprobe=exe)
    assert result == ProbeResult(False, "timeout")
    assert result.conclusive
    leader, child = (int(p) for p in pids.read_text().split())
    assert gone(leader)
    with pytest.raises(ChildProcessError):
        os.waitpid(leader, os.WNOHANG)  # already reaped by probe_once: not our zombie
    assert exits_within(child, 5.0)  # SIGKILL is asynchronous: its exit may trail the EOF


async def test_missing_ffprobe_is_inconclusive(tmp_path: Path) -> None:
    result = await probe_once(URL, timeout_s=1, ffprobe=str(tmp_path / "no-such-ffprobe"))
    assert not result.ok and not result.conclusive
    assert result.reason == "spawn_failed:FileNotFoundError"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/var/x.flv", "gopher://h/x"])
async def test_unsupported_scheme_is_inconclusive_and_spawns_nothing(
    tmp_path: Path, url: str
) -> None:
    marker = tmp_path / "ran"
    exe = fake_ffprobe(tmp_path, f"open({str(marker)!r}, 'w').write('x')")
    result = await probe_once(url, timeout_s=1, ffprobe=exe)
    assert not result.ok and not result.conclusive
    assert result.reason.startswith("unsupported_scheme:")
    assert not marker.exists()


async def test_cancelling_a_probe_kills_and_reaps_ffprobe(tmp_path: Path) -> None:
    """Shutdown cancels probes in flight: ffprobe must not outlive its caller."""
    fifo = tmp_path / "pids"
    os.mkfifo(fifo)
    exe = fake_ffprobe(
        tmp_path,
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(fifo)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)",
    )
    task = asyncio.create_task(probe_once(URL, timeout_s=30, ffprobe=exe))
    # the fifo read returns once the fake is running and has spawned its child
    pids = await asyncio.wait_for(asyncio.to_thread(fifo.read_text), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    leader, child = (int(p) for p in pids.split())
    assert gone(leader)
    with pytest.raises(ChildProcessError):
        os.waitpid(leader, os.WNOHANG)
    assert exits_within(child, 5.0)
