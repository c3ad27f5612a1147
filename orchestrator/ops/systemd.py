"""A small sd_notify client: READY / STATUS / WATCHDOG / STOPPING over ``$NOTIFY_SOCKET``.

Why our own and not libsystemd: the protocol is one AF_UNIX datagram of ``KEY=value`` lines,
and a C dependency (or a ctypes binding) is more to audit and package than these few lines.

Every function is a no-op returning False when ``$NOTIFY_SOCKET`` is unset (running in a
terminal, under a test runner, in a container without systemd). Sending never raises: a lost
notification must not take the daemon down; it is logged instead.

The watchdog is pinged from the event loop itself (:func:`watchdog_loop`), at half the interval
systemd asks for, so a loop blocked by a stuck call stops pinging and systemd kills and
restarts the process (``WatchdogSec=`` + ``Restart=on-failure`` in the unit).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
    "watchdog_loop",
]

log = structlog.get_logger(__name__)


def _address(raw: str) -> str | bytes:
    """``@name`` is a Linux abstract socket (leading NUL byte); anything else is a path."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def _format(fields: Mapping[str, object]) -> bytes:
    lines: list[str] = []
    for key, value in fields.items():
        name = key.upper()
        if not name.replace("_", "").isalnum():
            raise ValueError(f"invalid sd_notify field name {key!r}")
        # one field per line: a newline inside a value would forge another field
        text = str(int(value)) if isinstance(value, bool) else str(value)
        lines.append(f"{name}={text.replace(chr(10), ' ')}")
    return ("\n".join(lines) + "\n").encode()


def notify(env: Mapping[str, str] | None = None, /, **fields: object) -> bool:
    """Send ``KEY=value`` fields (keys upper-cased: ``notify(status="x")`` → ``STATUS=x``).

    Returns True when the datagram was handed to the socket, False when there is no
    ``$NOTIFY_SOCKET`` or sending failed (logged as ``sd_notify_failed``). ``env`` replaces
    ``os.environ`` for tests.
    """
    environ = os.environ if env is None else env
    raw = environ.get("NOTIFY_SOCKET")
    if not raw or not fields:
        return False
    payload = _format(fields)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # never block the event loop on a full receive queue; a dropped ping is logged
            sock.setblocking(False)
            sock.sendto(payload, _address(raw))
    except OSError as exc:
        log.warning(
            "sd_notify_failed", fields=sorted(k.upper() for k in fields), error=exc.strerror
        )
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Startup finished (store open, rooms reconciled, HTTP listening): ``READY=1``."""
    if status_text is None:
        return notify(ready=1)
    return notify(ready=1, status=status_text)


def status(text: str) -> bool:
    """Free-form status line shown by ``systemctl status``."""
    return notify(status=text)


def reloading() -> bool:
    """A SIGHUP reload began (``RELOADING=1`` + ``MONOTONIC_USEC``); send :func:`ready` after."""
    return notify(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def stopping() -> bool:
    """Shutdown began: ``STOPPING=1`` (systemd then waits up to ``TimeoutStopSec=``)."""
    return notify(stopping=1)


def watchdog() -> bool:
    """One keep-alive ping: ``WATCHDOG=1``."""
    return notify(watchdog=1)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd expects, in seconds, or None when it is not for us.

    ``$WATCHDOG_USEC`` carries the timeout; ``$WATCHDOG_PID``, when set, names the process that
    must ping (a child we spawned must not think it is supervised).
    """
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("sd_watchdog_usec_invalid", value=usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000


async def watchdog_loop(
    interval: float | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Ping ``WATCHDOG=1`` every ``interval / 2`` seconds until cancelled.

    ``interval`` defaults to :func:`watchdog_interval`; when that is None (no watchdog asked
    for) the coroutine returns at once, so the caller can start it unconditionally. ``sleep`` is
    injectable so tests drive the loop without real time.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None or interval <= 0:
        return
    period = interval / 2
    log.info("sd_watchdog_started", interval_s=interval, period_s=period)
    while True:
        watchdog()
        await sleep(period)
