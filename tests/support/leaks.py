"""What a test leaves behind: asyncio tasks still pending in its event loop, child processes
still running. tests/conftest.py fails the test that leaves either (an autouse fixture).

Why: a task left pending keeps working into the next test's setup or dies silently when the
loop closes (pytest-asyncio cancels it without a word), and a child process left running holds
ports, files and CPU on a machine eight people share. Both have hidden real leaks before.

A fixture that keeps a process for longer than one test on purpose (module or session scope)
registers it with :func:`keep` and releases it with :func:`release` when it stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

__all__ = [
    "cancel_all",
    "children",
    "describe_task",
    "keep",
    "kill",
    "pending_tasks",
    "release",
    "settle",
]

_KEPT: set[int] = set()


def keep(pid: int) -> None:
    """A process a module/session-scoped fixture keeps running across tests on purpose."""
    _KEPT.add(pid)


def release(pid: int) -> None:
    _KEPT.discard(pid)


def _state(pid: int) -> str:
    """One letter from /proc/<pid>/stat (R, S, D, Z, ...); "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200]


def children(pid: int | None = None) -> dict[int, str]:
    """The running (not zombie) children of ``pid`` (default: this process) → command line,
    without the processes registered with :func:`keep`.

    Read from ``/proc/<pid>/task/<tid>/children`` of every thread: a child started from a
    worker thread (``asyncio.to_thread``) has that thread as its parent task.
    """
    me = os.getpid() if pid is None else pid
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{me}/task").iterdir():
            with contextlib.suppress(OSError):
                found.update(int(p) for p in (task / "children").read_text().split())
    return {p: _cmdline(p) for p in sorted(found) if p not in _KEPT and _state(p) not in ("", "Z")}


def kill(pids: dict[int, str]) -> None:
    """SIGKILL leaked processes (their whole group when they lead one: they were started with
    ``start_new_session`` and may have children of their own). Their owner, if any, reaps."""
    for p in pids:
        with contextlib.suppress(OSError):
            if os.getpgid(p) == p:
                os.killpg(p, signal.SIGKILL)
            else:
                os.kill(p, signal.SIGKILL)


def pending_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks(loop) if not t.done()]


def settle(loop: asyncio.AbstractEventLoop, timeout: float = 5.0) -> None:
    """Let tasks whose cancellation was already requested finish (a ``task.cancel()`` without
    the ``await`` that would let it run its ``finally``): those are not leaks."""
    cancelling = [t for t in pending_tasks(loop) if t.cancelling()]
    if cancelling:
        loop.run_until_complete(asyncio.wait(cancelling, timeout=timeout))


def describe_task(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", repr(coro))
    frame = getattr(coro, "cr_frame", None)
    at = f" at {frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else ""
    return f"{task.get_name()} ({where}{at})"


def cancel_all(loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[object]]) -> None:
    """Cancel the leaked tasks and let them unwind, so the next test starts clean."""
    for t in tasks:
        t.cancel()
    loop.run_until_complete(asyncio.wait(tasks, timeout=10.0))
