"""The daemon's command surface, shared by MQTT, the CLI and the ops API.

Adapters parse and validate their own input, then call one of these methods. Each method either
returns JSON-able data or raises :class:`CommandError` with a stable ``code`` and a message that
is safe to show (never a secret). :class:`orchestrator.control_service.ControlService` implements
it; the daemon (``orchestrator.app``) builds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from orchestrator.errors import OrchestratorError


class CommandError(OrchestratorError):
    """A command was refused. ``code`` is stable and machine-readable (e.g. ``unknown_room``)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class Control(Protocol):
    def room_ids(self) -> Sequence[str]: ...

    def room_state(self, room_id: str) -> Mapping[str, Any]:
        """JSON snapshot (same shape as the retained MQTT state). Raises unknown_room."""

    async def start(
        self, room_id: str, *, until: datetime | None, cause: str
    ) -> Mapping[str, Any]: ...
    async def stop(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def restart(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def refresh_output(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def set_output(
        self, room_id: str, *, url: str, stream_key: str, cause: str
    ) -> Mapping[str, Any]: ...
    async def reset(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def insert_script(
        self, room_id: str, *, text: str, play_type: str, cause: str
    ) -> Mapping[str, Any]: ...
    async def pause_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def resume_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def add_window(
        self, room_id: str, *, start: datetime, end: datetime, cause: str
    ) -> Mapping[str, Any]: ...
    async def skip_next_window(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...
    async def reload(self, *, cause: str) -> Mapping[str, Any]: ...
