"""SIGHUP and the ``reload`` command: re-read the config file and apply it in place.

Rooms added to the config are supervised (with leases: the next ownership tick picks them up);
rooms removed are let go (their job stopped only with ``reload.stop_removed``) and forgotten by
the SLA book; every schedule is rebuilt; rotated cloud credentials are swapped into the client;
the MQTT bridge republishes its info, discovery and states. Jobs of rooms still configured are
never touched. A config that does not load changes nothing (``bad_config``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from orchestrator import cloud
from orchestrator.control import CommandError
from orchestrator.errors import ConfigError
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.ops import systemd
from orchestrator.overrides import Overrides
from orchestrator.rooms.startreq import check_start_requests
from orchestrator.rooms.supervisor import RoomSupervisor
from orchestrator.settings import Settings, load_settings
from orchestrator.upkeep import SlaBook

__all__ = ["ConfigReload", "Reloaded"]

log = structlog.get_logger(__name__)


class Reloaded(Protocol):
    """A part told after the config changed (the MQTT bridge)."""

    def config_reloaded(self) -> None: ...


class ConfigReload:
    """Applies a re-read config to the running parts (see the module doc).

    ``install`` replaces the settings every part reads; ``register`` teaches the log redactor
    the new secrets. ``client``/``http`` and ``bridge`` are set once those run.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        settings: Callable[[], Settings],
        install: Callable[[Settings], None],
        register: Callable[[Settings], None],
        rooms: RoomSupervisor,
        sla: SlaBook,
        overrides: Overrides,
        leases: bool,
        status: Callable[[], str],
    ) -> None:
        self._path = path
        self._settings = settings
        self._install = install
        self._register = register
        self._rooms = rooms
        self._sla = sla
        self._overrides = overrides
        self._leases = leases
        self._status = status
        self.cloud: tuple[httpx.AsyncClient, MetaStudioClient] | None = None
        self.bridge: Reloaded | None = None

    async def __call__(self, cause: str) -> Mapping[str, Any]:
        """Re-read the config; apply rooms and schedules without touching jobs still desired."""
        systemd.reloading()
        try:
            new = load_settings(self._path, checks=(check_start_requests,))
        except ConfigError as exc:
            systemd.ready(self._status())  # end the reload systemd saw begin; nothing changed
            raise CommandError("bad_config", str(exc)) from exc
        self._register(new)
        old = self._settings()
        self._swap_credentials(old, new)
        old_ids = {r.id for r in old.rooms}
        new_ids = {r.id for r in new.rooms}
        self._install(new)
        for rid in sorted(new_ids - old_ids):
            if not self._leases:  # with leases the next ownership tick picks it up
                self._rooms.add_room(rid)
        for rid in sorted(old_ids - new_ids):
            await self._rooms.remove_room(rid, stop_job=new.reload.stop_removed, cause=cause)
            self._sla.forget(rid)
        await self._overrides.apply_schedules()
        if self.bridge is not None:  # a SIGHUP reload too: rooms in bridge/info and discovery
            self.bridge.config_reloaded()
        systemd.ready(self._status())
        added, removed = sorted(new_ids - old_ids), sorted(old_ids - new_ids)
        log.info("config_reloaded", added=added, removed=removed, cause=cause)
        return {"rooms": sorted(new_ids), "added": added, "removed": removed}

    def _swap_credentials(self, old: Settings, new: Settings) -> None:
        """Reload used to keep the AK/SK the client was built with: swap them when rotated."""
        if self.cloud is None:
            return
        if all(getattr(old.cloud, k) == getattr(new.cloud, k) for k in cloud.CREDENTIAL_KEYS):
            return
        http, client = self.cloud
        client.set_auth(cloud.build_auth(new.cloud, http))
        log.info("cloud_credentials_reloaded")
