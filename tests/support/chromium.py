"""Headless Chromium for page tests (Debian's chromium; no driver, no download)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass
class BrowserRun:
    out: bytes
    console: list[str]


async def chromium(url: str, profile: Path, *extra: str) -> BrowserRun:
    """Load ``url`` in headless Chromium (scripts run for 5 s of virtual time).

    ``console`` holds every console message Chromium logged (errors, CSP violations, uncaught
    exceptions); a clean page has none. ``extra`` adds e.g. ``--dump-dom`` or ``--screenshot``.
    """
    binary = shutil.which("chromium")
    assert binary is not None
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,800",
        "--virtual-time-budget=5000",
        "--enable-logging=stderr",
        "--v=0",
        *extra,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=45)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    console = [
        line
        for line in err.decode(errors="replace").splitlines()
        if ":CONSOLE" in line or "Uncaught" in line
    ]
    return BrowserRun(out, console)
