"""py-spy samples of the daemon under load, summarised for a RESULTS.md row.

Why in the row: where a target is missed, the row says what limits it (issue 24). The summary
is the daemon's CPU by thread, its main thread's own time by package, and the inclusive share of
its own functions (plus structlog/logging, whose cost is spread over every call site).
"""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["profile_note", "spy", "spy_result", "summarise_profile"]


def spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy on the daemon (collapsed stacks per thread), if py-spy is installed."""
    exe = os.environ.get("BENCH_PYSPY") or shutil.which(
        "py-spy", path=str(Path(sys.executable).parent)
    )
    if not exe:
        return None
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
         "--format", "raw", "--threads", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _frame_name(frame: str) -> tuple[str, str]:
    """``fn (pkg/mod.py:12)`` → (``mod.fn``, package: ``orchestrator.<sub>``, else the top
    path component, e.g. ``uvicorn``, ``asyncio``, ``logging``, ``selectors``)."""
    name, _, where = frame.partition(" (")
    parts = Path(where.split(":", 1)[0]).with_suffix("").parts
    if not parts:
        return name, "?"
    pkg = ".".join(parts[:2]) if parts[0] == "orchestrator" and len(parts) > 2 else parts[0]
    return ".".join([*parts[-1:], name]), pkg


def summarise_profile(path: Path, top: int = 8) -> dict[str, Any]:
    """The daemon's CPU by thread; its main thread's own time by package and its busiest
    own functions (inclusive %, the roots every sample shares left out) and logging."""
    threads: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    by_pkg: collections.Counter[str] = collections.Counter()
    main_total = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count_s = line.rstrip().rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            frames = stack.split(";")
            thread = frames[0].split(": ", 1)[-1]  # "thread (472): MainThread"
            threads[thread] += count
            if thread != "MainThread" or len(frames) < 2:
                continue
            main_total += count
            named = [_frame_name(fr) for fr in frames[1:]]
            for name in {n for n, pkg in named if pkg.startswith("orchestrator")}:
                incl[name] += count  # the daemon's own functions: where its time goes
            for pkg in {pkg for _, pkg in named if pkg in ("structlog", "logging")}:
                incl[f"[{pkg}, inclusive]"] += count
            by_pkg[named[-1][1]] += count
    total = sum(threads.values()) or 1

    def pct(c: int) -> float:
        return round(100.0 * c / max(1, main_total), 1)

    return {
        "samples": total,
        "threads": {t[:40]: round(100.0 * c / total, 1) for t, c in threads.most_common(4)},
        "packages": [(n, pct(c)) for n, c in by_pkg.most_common(top + 2)],
        "inclusive": [(n, pct(c)) for n, c in incl.most_common(80) if pct(c) < 85][:top],
    }


def profile_note(p: dict[str, Any], where: str) -> str:
    threads = ", ".join(f"{t} {v}%" for t, v in p["threads"].items())
    pkgs = ", ".join(f"{n} {v}%" for n, v in p["packages"])
    incl = ", ".join(f"{n} {v}%" for n, v in p["inclusive"])
    return (
        f"py-spy of the daemon in {where} ({p['samples']} samples; by thread: {threads}); "
        f"main thread own time by package: {pkgs}; inclusive: {incl}"
    )


async def spy_result(
    sampler: subprocess.Popen[bytes] | None, out: Path, timeout_s: float = 60.0
) -> dict[str, Any] | None:
    """Wait for ``sampler`` without blocking the loop (the bench process serves the emulator)
    and summarise what it wrote; None without py-spy or output."""
    if sampler is None:
        return None
    for _ in range(int(timeout_s / 0.2)):
        if sampler.poll() is not None:
            break
        await asyncio.sleep(0.2)
    else:
        sampler.kill()
        sampler.wait()
    return summarise_profile(out) if out.exists() else None
