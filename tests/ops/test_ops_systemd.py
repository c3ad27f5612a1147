"""sd_notify client against real AF_UNIX datagram sockets (path and abstract)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.ops import systemd


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        addr = str(tmp_path / "notify.sock")
        sock.bind(addr)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
    else:
        name = f"liveorch-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    sock.settimeout(2.0)
    with sock:
        yield sock


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_ready_status_watchdog_stopping(notify_socket: socket.socket) -> None:
    assert systemd.ready("3 rooms live")
    assert _recv(notify_socket) == "READY=1\nSTATUS=3 rooms live\n"
    assert systemd.status("reconciling")
    assert _recv(notify_socket) == "STATUS=reconciling\n"
    assert systemd.watchdog()
    assert _recv(notify_socket) == "WATCHDOG=1\n"
    assert systemd.stopping()
    assert _recv(notify_socket) == "STOPPING=1\n"


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    assert systemd.reloading()
    lines = _recv(notify_socket).splitlines()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=", 1)[1]) > 0


def test_newline_in_value_cannot_forge_a_field(notify_socket: socket.socket) -> None:
    assert systemd.status("ok\nREADY=1")
    assert _recv(notify_socket) == "STATUS=ok READY=1\n"


def test_bad_field_name_is_refused(notify_socket: socket.socket) -> None:
    with pytest.raises(ValueError):
        systemd.notify(**{"a=b": 1})


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.watchdog() is False


def test_unreachable_socket_logs_and_returns_false(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}
    assert systemd.notify(env, ready=1) is False


def test_watchdog_interval_from_env() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 30.0
    # another process is the one supervised
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "nonsense"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None


async def test_watchdog_loop_pings_at_half_the_interval(notify_socket: socket.socket) -> None:
    delays: list[float] = []
    third = asyncio.Event()

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 3:
            third.set()
            await asyncio.Event().wait()  # park here until cancelled

    task = asyncio.create_task(systemd.watchdog_loop(30.0, sleep=fake_sleep))
    await asyncio.wait_for(third.wait(), timeout=2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays == [15.0, 15.0, 15.0]
    assert [_recv(notify_socket) for _ in range(3)] == ["WATCHDOG=1\n"] * 3


async def test_watchdog_loop_returns_when_not_supervised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(systemd.watchdog_loop(), timeout=2)
