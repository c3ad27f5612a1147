"""Config and secrets against the real daemon process (issue 20): refused up front, never printed.

* a secrets file that is not UTF-8 (UTF-16 from a Windows editor) on SIGHUP: the reload is
  refused naming the file, the old config stays in force, not a byte of the secret is logged;
* a store that cannot be opened, or an HTTP port that cannot be bound, at start: exit 2 with
  one line on stderr naming what and why, no traceback anywhere.
"""

from __future__ import annotations

import signal
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e import ALWAYS, Stack, eventually, room, write_config
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)


def _leaks(secret: str) -> list[str]:
    """The forms a secret's bytes take in a log line: plain, UTF-16 bytes, and the escapes a
    repr() or JSON encoder writes for them."""
    utf16 = secret.encode("utf-16-le")
    return [
        secret,
        secret[:8],
        utf16.decode("latin-1"),
        "\\x00".join(secret[:6]),
        "\\u0000".join(secret[:6]),
        repr(utf16)[2:20],
    ]


async def test_sighup_with_a_utf16_secret_keeps_the_old_config(stack: Stack) -> None:
    emu = await stack.emulator(["r1", "r2"])
    creds = stack.tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    cfg: dict[str, Any] = stack.config([room("r1", [ALWAYS])], stop_jobs=False)
    cfg["secrets_dir"] = str(creds)
    stack.write(cfg)
    daemon = await stack.daemon()
    await daemon.wait_room("r1", "LIVE")

    # the operator adds room r2, its stream key saved by Notepad as "Unicode" (UTF-16)
    secret = "r2-KEY-" + uuid.uuid4().hex
    (creds / "room.r2.stream_key").write_bytes(secret.encode("utf-16"))
    r2 = room("r2", [ALWAYS])
    del r2["stream_key"]
    cfg["rooms"].append(r2)
    stack.write(cfg)
    daemon.proc.send(signal.SIGHUP)

    async def refused() -> dict[str, Any] | None:
        assert daemon.proc.returncode is None, "the daemon died on SIGHUP"
        return next((e for e in daemon.proc.log_events() if e["event"] == "reload_failed"), None)

    event = await eventually(refused, what="reload_failed", diag=stack.diag)
    assert f"secrets file {creds / 'room.r2.stream_key'}" in event["error"]
    assert "UTF-16" in event["error"]
    assert (await daemon.http.get("/rooms/r2")).status_code == 404, "the old config stays"
    assert (await daemon.room("r1"))["state"] == "LIVE"

    # fixed: the next SIGHUP applies it, so the daemon's reload still works
    (creds / "room.r2.stream_key").write_text(secret)
    daemon.proc.send(signal.SIGHUP)
    await daemon.wait_room("r2", "LIVE")
    daemon.proc.send(signal.SIGTERM)
    assert await daemon.proc.wait(30) == 0
    logs = (daemon.proc.out_path.read_bytes() + daemon.proc.err_path.read_bytes()).decode("latin-1")
    assert "Traceback" not in logs
    for leak in _leaks(secret):
        assert leak not in logs, f"the secret reached the log as {leak!r}"
    assert secret.encode("utf-16-le") not in logs.encode("latin-1")
    assert emu is not None


def _store_cases(tmp: Path) -> dict[str, str]:
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "db-is-a-dir").mkdir()
    return {
        "under-a-file": f"sqlite+aiosqlite:///{tmp / 'a-file' / 'liveorch.db'}",
        "dir-as-file": f"sqlite+aiosqlite:///{tmp / 'db-is-a-dir'}",
        # tests run as root, so chmod cannot make a file read-only: open it read-only instead
        "read-only": f"sqlite+aiosqlite:///file:{tmp / 'ro.db'}?mode=ro&uri=true",
        "pg-unreachable": "postgresql+asyncpg://liveorch:Pg-Secret-7@127.0.0.1:1/liveorch",
    }


@pytest.mark.parametrize("case", ["under-a-file", "dir-as-file", "read-only", "pg-unreachable"])
async def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(
    stack: Stack, tmp_path: Path, case: str
) -> None:
    url = _store_cases(tmp_path)[case]
    if case == "read-only":
        import sqlite3

        sqlite3.connect(tmp_path / "ro.db").close()  # exists, empty: the migration must write
    cfg = {
        "cloud": {"base_url": "http://127.0.0.1:1", "project_id": "p1", "ak": "A1", "sk": "S1"},
        "store": {"url": url},
        "http": {"port": free_port()},
        "log": {"format": "json"},
    }
    write_config(stack.config_path, cfg)
    proc = stack.procs.start("daemon", ["run", "--config", str(stack.config_path)])
    assert await proc.wait(60) == 2, proc.tail()
    err = proc.err_path.read_text()
    assert err.count("\n") == 1, f"one line on stderr, got:\n{err}"
    assert "cannot open the store" in err and "store " in err
    assert "Traceback" not in err + proc.text()
    assert "Pg-Secret-7" not in err + proc.text()


async def test_a_port_that_cannot_be_bound_is_one_line_and_exit_2(stack: Stack) -> None:
    emu = await stack.emulator(["r1"])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = stack.config([room("r1", [ALWAYS])])
        cfg["http"] = {"port": port}
        stack.write(cfg)
        proc = stack.procs.start("daemon", ["run", "--config", str(stack.config_path)])
        assert await proc.wait(60) == 2, proc.tail()
    err = proc.err_path.read_text()
    assert err.count("\n") == 1, f"one line on stderr, got:\n{err}"
    assert f"127.0.0.1:{port}" in err
    assert "Traceback" not in err + proc.text()
    assert emu is not None


async def test_run_refuses_what_check_config_refuses_without_a_traceback(stack: Stack) -> None:
    """`liveorch run` against the emulator raised a traceback (project_id is required)."""
    emu = await stack.emulator(["r1"])
    cfg = stack.config([room("r1", [ALWAYS])])
    del cfg["cloud"]["project_id"]
    stack.write(cfg)
    proc = stack.procs.start("daemon", ["run", "--config", str(stack.config_path)])
    assert await proc.wait(60) == 2, proc.tail()
    err = proc.err_path.read_text()
    assert err.count("\n") == 1 and "cloud.project_id: required" in err
    assert "Traceback" not in err + proc.text()
    assert emu is not None
