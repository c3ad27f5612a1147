"""Child processes for tests and benches: start, wait until ready, stop/kill, log tail.

One implementation for the end-to-end tests (tests/support/e2e.py), the multi-instance tests
(tests/support/multi.py) and bench's ``DaemonProcess`` (bench/_common.py), which each had their
own copy. Rules it keeps for every caller:

* a child's stdout/stderr go to files (``<log_dir>/<name>.out`` / ``.err``), quoted by
  :meth:`Proc.tail` in every failure message;
* it runs in its own session, so a Ctrl-C on the runner does not reach it, and its environment
  is the runner's minus what would change its behaviour (:func:`child_env`);
* it is killed and reaped whatever happened (:meth:`Proc.kill` is idempotent; :class:`Procs`
  kills every process it started);
* nothing waits a fixed time: :func:`eventually` polls a condition with a deadline.

No pytest import: bench imports this module too (see docs/decisions.md, 2026-12-03).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

__all__ = [
    "DEADLINE",
    "REPO",
    "Proc",
    "Procs",
    "child_env",
    "eventually",
    "json_lines",
    "orchestrator_argv",
    "stop_popen",
    "tail_text",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
#: a deadline for "the process should get there": generous, polls return as soon as it holds
DEADLINE = 30.0
_STRIPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "CREDENTIALS_DIRECTORY")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The runner's environment minus anything that would change the child's behaviour."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _STRIPPED_ENV and not k.startswith(("LIVEORCH_", "CLOUD_SDK_"))
    }
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they are written
    env.update(extra or {})
    return env


def orchestrator_argv(*args: str) -> list[str]:
    """``python -m orchestrator <args>`` with this interpreter."""
    return [sys.executable, "-m", "orchestrator", *args]


async def stop_popen(popen: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; reaped; the exit code."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(popen.wait, timeout)
    if popen.poll() is None:
        popen.kill()
    return await asyncio.to_thread(popen.wait)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON object lines of a log file written so far (other lines are skipped)."""
    out: list[dict[str, Any]] = []
    with contextlib.suppress(OSError), path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    item = json.loads(line)
                    if isinstance(item, dict):
                        out.append(item)
    return out


def tail_text(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("" if there is none yet)."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class Proc:
    """One child process with its output in ``<log_dir>/<name>.out`` / ``.err``.

    ``stderr_to_stdout`` writes both streams to the ``.out`` file (bench reads one log).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
        stderr_to_stdout: bool = False,
    ) -> None:
        self.name = name
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        self._out: IO[bytes] = self.out_path.open("wb")
        self._err: IO[bytes] | None = None if stderr_to_stdout else self.err_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            stdout=self._out,
            stderr=subprocess.STDOUT if self._err is None else self._err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=dict(env if env is not None else child_env()),
            start_new_session=True,  # a Ctrl-C on the runner must not reach it
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def send(self, sig: int) -> None:
        """Send ``sig`` if the process still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    signal = send  # the name the multi-instance tests use

    async def wait(self, timeout: float) -> int:
        """The exit code; AssertionError (with the log tail) if it does not exit in time."""
        try:
            return await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout}s\n{self.tail()}"
            ) from None

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit code."""
        code = await stop_popen(self.popen, timeout)
        self.kill()  # closes the log files
        return code

    def kill(self) -> None:
        """SIGKILL (if still running), reap, close the log files. Idempotent."""
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        for f in (self._out, self._err):
            if f is not None and not f.closed:
                f.close()

    def text(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are skipped)."""
        return json_lines(self.out_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        """JSON log lines whose ``event`` is ``name``."""
        return [e for e in self.log_events() if e.get("event") == name]

    def tail(self, lines: int = 30) -> str:
        parts = [f"--- {self.name} (pid {self.pid}, rc={self.popen.poll()})"]
        paths = (self.out_path,) if self._err is None else (self.out_path, self.err_path)
        for path in paths:
            parts.append(f"--- {path} (last {lines} lines) ---\n{tail_text(path, lines)}")
        return "\n".join(parts)


class Procs:
    """Every process a test started; :meth:`kill_all` runs in teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Proc] = []

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        wrap: Sequence[str] = (),
    ) -> Proc:
        """``python -m orchestrator <args>``, under the ``wrap`` command if given (prlimit)."""
        argv = [*wrap, *orchestrator_argv(*args)]
        proc = Proc(name, argv, log_dir=self.log_dir, env=child_env(env))
        self.items.append(proc)
        return proc

    def diag(self) -> str:
        return "\n".join(p.tail() for p in self.items)

    def kill_all(self) -> None:
        for p in self.items:
            p.kill()


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    timeout: float = DEADLINE,
    diag: Callable[[], str] = lambda: "",
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something other than None; fail after ``timeout``.

    Connection errors count as "not yet" (a process may still be binding its port).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = await probe()
        except (httpx.TransportError, OSError) as exc:
            result, last_error = None, exc
        if result is not None:
            return result
        if loop.time() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}"
                f" (last error: {last_error!r})\n{diag()}"
            )
        await asyncio.sleep(interval)  # the poll period, not a synchronisation
