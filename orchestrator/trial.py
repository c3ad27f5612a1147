"""``liveorch run --emulator URL``: the same configuration, against ``liveorch emulate``.

The emulator's endpoint, project id and AK/SK replace the ``[cloud]`` section; the store moves
to ``liveorch-emulator.db`` in the working directory (emulator job ids and trial SLA never mix
with the real store's). Everything else (rooms, schedules, recovery, ops) is the config's own.

The overrides are applied as ``LIVEORCH_*`` environment variables, the highest-precedence
source, before the config is loaded: the loader then validates the trial target exactly as it
will be used (an emulator has a project id and keys even when the config has none yet), and a
reload (SIGHUP) re-reads the file with the same overrides.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from orchestrator.errors import ConfigError

__all__ = ["TRIAL_STORE", "apply_emulator", "emulator_environment"]

TRIAL_STORE = "liveorch-emulator.db"


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def emulator_environment(url: str, *, cwd: Path | None = None) -> dict[str, str]:
    """The ``LIVEORCH_*`` variables that point the daemon at the emulator serving ``url``."""
    base = url.rstrip("/")
    if urlsplit(base).scheme not in ("http", "https") or not _loopback(base):
        raise ConfigError(
            f"--emulator {url!r}: expected the loopback URL `liveorch emulate` printed, "
            "e.g. http://127.0.0.1:8600"
        )
    try:
        resp = httpx.get(base + "/_emulator/credentials", timeout=5.0)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"--emulator: no emulator answers at {base} ({type(exc).__name__}); "
            "start it first: liveorch emulate --config CONFIG"
        ) from None
    if resp.status_code != 200:
        raise ConfigError(
            f"--emulator: {base} is not a liveorch emulator (GET /_emulator/credentials "
            f"answered HTTP {resp.status_code})"
        )
    try:
        creds = resp.json()
        project_id, ak, sk = str(creds["project_id"]), str(creds["ak"]), str(creds["sk"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"--emulator: {base} answered an unexpected credentials body") from None
    store = (cwd or Path.cwd()) / TRIAL_STORE
    return {
        "LIVEORCH_CLOUD__BASE_URL": base,
        "LIVEORCH_CLOUD__PROJECT_ID": project_id,
        "LIVEORCH_CLOUD__AUTH": "aksk",
        "LIVEORCH_CLOUD__AK": ak,
        "LIVEORCH_CLOUD__SK": sk,
        "LIVEORCH_STORE__URL": f"sqlite+aiosqlite:///{store}",
    }


def apply_emulator(url: str, environ: MutableMapping[str, str] | None = None) -> Mapping[str, str]:
    """Put :func:`emulator_environment` into ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    overrides = emulator_environment(url)
    env.update(overrides)
    return overrides
