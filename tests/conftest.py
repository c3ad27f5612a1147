"""Shared fixtures. Area fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import leaks

# Under CI every skip fails unless explicitly allowed (see support/ci_guard.py): pytest finds
# hooks by name in a conftest's namespace.
from tests.support.ci_guard import (  # noqa: F401
    pytest_configure,
    pytest_make_collect_report,
    pytest_runtest_makereport,
)
from tests.support.nginx_rtmp import RTMP_MODULE, NginxRtmp
from tests.support.pgcluster import PgUnavailable, find_bindir

_SERVICES: dict[str, tuple[str, int]] = {
    "mosquitto": ("127.0.0.1", 1883),
    "postgres": ("127.0.0.1", 5432),
}
_BINARIES = {
    "mosquitto-binary": "mosquitto",
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffprobe",
    "nginx": "nginx",
    "chromium": "chromium",
    "systemd-analyze": "systemd-analyze",
    "systemd-sysusers": "systemd-sysusers",
    "systemd-tmpfiles": "systemd-tmpfiles",
    "promtool": "promtool",
}


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.fixture
def require_service() -> Callable[[str], None]:
    """Call with a service name; skips locally when it is missing, fails loudly under CI."""

    def _require(name: str) -> None:
        if name in _SERVICES:
            ok = _port_open(*_SERVICES[name])
        elif name in _BINARIES:
            ok = shutil.which(_BINARIES[name]) is not None
        elif name == "nginx-rtmp":
            ok = shutil.which("nginx") is not None and RTMP_MODULE.exists()
        elif name == "postgres-server":  # binaries for a private cluster (support/pgcluster)
            try:
                ok = bool(find_bindir())
            except PgUnavailable:
                ok = False
        else:
            raise ValueError(f"unknown service {name!r}")
        if ok:
            return
        msg = f"required service {name!r} is not available"
        if in_ci():
            pytest.fail(msg + " (CI is set: .ci/run must provide it)", pytrace=False)
        pytest.skip(msg)

    return _require


@pytest.fixture
def nginx_rtmp(tmp_path: Path, require_service: Callable[[str], None]) -> Iterator[NginxRtmp]:
    """A private nginx-rtmp (tests/support/nginx_rtmp.py), stopped at teardown."""
    require_service("nginx-rtmp")
    server = NginxRtmp(tmp_path / "nginx")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves asyncio tasks pending in its event loop or child processes
    running (tests/support/leaks.py says why); what it finds is cancelled/killed afterwards so
    the next test starts clean. Processes a wider-scoped fixture keeps: ``leaks.keep(pid)``."""
    loop = None
    # An async test runs in pytest-asyncio's function-scoped Runner. Asking for it here sets it
    # up before this fixture, so it is torn down after: the loop still exists, with whatever the
    # test and its fixtures left in it, when the check below runs.
    if getattr(request.node, "_loop_scope", None) == "function":
        loop = request.getfixturevalue("_function_scoped_runner").get_loop()
    before = set(leaks.children())
    yield
    problems: list[str] = []
    if loop is not None and not loop.is_closed():
        leaks.settle(loop)
        if tasks := leaks.pending_tasks(loop):
            names = "\n  ".join(leaks.describe_task(t) for t in tasks)
            problems.append(f"{len(tasks)} asyncio task(s) left pending:\n  {names}")
            leaks.cancel_all(loop, tasks)
    if procs := {p: c for p, c in leaks.children().items() if p not in before}:
        names = "\n  ".join(f"{p}: {c}" for p, c in procs.items())
        problems.append(f"{len(procs)} child process(es) left running:\n  {names}")
        leaks.kill(procs)
    if problems:
        pytest.fail("the test left things behind: " + "\n".join(problems), pytrace=False)
