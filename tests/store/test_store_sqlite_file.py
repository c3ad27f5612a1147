"""SQLite-only properties: file permissions, and durability of acknowledged batches on SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from orchestrator.store.sql import SqlStore

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_creates_private_directory_and_file(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "liveorch.db"
    store = SqlStore(f"sqlite+aiosqlite:///{db}")
    await store.open()
    try:
        await store.save_room("r1", {"v": 1})
        assert _mode(tmp_path / "a") == 0o700
        assert _mode(tmp_path / "a" / "b") == 0o700
        assert _mode(db) == 0o600
        for side in ("-wal", "-shm"):
            companion = db.with_name(db.name + side)
            if companion.exists():
                assert _mode(companion) & 0o077 == 0
        with sqlite3.connect(db) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()


async def test_existing_parent_is_not_rechmodded(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o750)  # noqa: S103 - a known non-private mode we must not change
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    await store.open()
    await store.close()
    assert _mode(tmp_path) == 0o750
    assert _mode(tmp_path / "x.db") == 0o600


async def _read_line(stream: asyncio.StreamReader) -> str:
    """The writer's next protocol line ("ready" / "committed n"), skipping its log lines."""
    while True:
        raw = await asyncio.wait_for(stream.readline(), timeout=20)
        if not raw:
            raise EOFError("writer exited")
        line = raw.decode().strip()
        if line == "ready" or line.startswith("committed "):
            return line


@pytest.mark.timeout(60)
async def test_sigkill_mid_run_keeps_every_reported_batch(tmp_path: Path) -> None:
    db = tmp_path / "d" / "inbox.db"
    url = f"sqlite+aiosqlite:///{db}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "_inbox_writer.py"),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    reported: set[int] = set()
    try:
        assert await _read_line(proc.stdout) == "ready"
        while len(reported) < 30:
            line = await _read_line(proc.stdout)
            reported.add(int(line.removeprefix("committed ")))
        proc.send_signal(signal.SIGKILL)
        # lines already in the pipe were printed after their commit: they count too
        rest = await asyncio.wait_for(proc.stdout.read(), timeout=20)
        for line in rest.decode().splitlines():
            if line.startswith("committed "):
                reported.add(int(line.removeprefix("committed ")))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # not 0: it was killed mid-run (asyncio may report 255 if its child watcher lost the race)
    assert proc.returncode != 0

    store = SqlStore(url)
    await store.open()
    try:
        pending = await store.inbox_pending(limit=1_000_000)
    finally:
        await store.close()
    keys = {p.dedupe_key for p in pending}
    for n in reported:
        assert all(f"b{n}-{i}" in keys for i in range(50)), f"batch {n} lost"
    # batches are atomic: any batch present is present whole
    batches: dict[str, int] = {}
    for key in keys:
        batches[key.split("-")[0]] = batches.get(key.split("-")[0], 0) + 1
    assert set(batches.values()) == {50}
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.timeout(20)
async def test_in_memory_store_serves_concurrent_callers() -> None:
    """:memory: lives on one shared connection; concurrent calls must queue, not deadlock."""
    from datetime import UTC, datetime

    from orchestrator.store import InboxItem

    store = SqlStore("sqlite+aiosqlite:///:memory:")
    await store.open()
    try:
        now = datetime.now(UTC)
        await asyncio.wait_for(
            asyncio.gather(
                *(store.save_room(f"r{i}", {"i": i}) for i in range(20)),
                *(store.load_rooms() for _ in range(20)),
                *(
                    store.inbox_append([InboxItem(f"k{i}", None, None, "x", {}, now)])
                    for i in range(20)
                ),
            ),
            timeout=10,
        )
        assert len(await store.load_rooms()) == 20
        assert len(await store.inbox_pending()) == 20
    finally:
        await store.close()
