"""Per-room configuration the supervisor needs, and the start request built from it.

The start request is assembled from the room's settings: its ``start`` template (video config,
play policy, …), the RTMP target (``output_url`` + ``stream_key``; backups are only used by
REFRESH_OUTPUT_URL), the live-event callback config (our public callback URL, auth type and key,
subscribed to RTMP state changes so drops reach us), and the exit config from the template.
It is validated by :func:`orchestrator.metastudio.models.build`, so a bad template fails as
:class:`~orchestrator.errors.InvalidRequest` before any call (the room is quarantined with the
reason instead of retrying forever).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from orchestrator.errors import InvalidRequest
from orchestrator.metastudio.models import StartSmartLiveReq, build
from orchestrator.rooms.policy import Policy
from orchestrator.settings import ConfigProblem, RecoverySettings, RoomSettings, Settings

__all__ = [
    "CallbackTarget",
    "OutputTarget",
    "RoomConfig",
    "build_start_request",
    "check_start_requests",
]


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """Where MetaStudio must send live-event callbacks for our jobs."""

    url: str
    auth_type: str = "MSS_A_HEAD"
    key: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class OutputTarget:
    """One RTMP target; ``stream_key`` stays a secret until the request body is written."""

    url: str
    stream_key: SecretStr


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """Everything the supervisor needs about one room (rebuilt on reload)."""

    room: RoomSettings
    recovery: RecoverySettings = field(default_factory=RecoverySettings)
    callback: CallbackTarget | None = None

    @property
    def room_id(self) -> str:
        return self.room.id

    @property
    def outputs(self) -> list[OutputTarget]:
        """Primary target first, then the backups (index = RefreshOutput.output_index)."""
        out: list[OutputTarget] = []
        if self.room.output_url:
            out.append(OutputTarget(self.room.output_url, self.room.stream_key or SecretStr("")))
        out += [OutputTarget(b.url, b.stream_key) for b in self.room.backup_outputs]
        return out

    @property
    def policy(self) -> Policy:
        return Policy.from_settings(self.recovery, outputs=max(1, len(self.outputs)))

    @classmethod
    def from_settings(cls, settings: Settings, room_id: str) -> RoomConfig:
        room = settings.room(room_id)
        if room is None:
            raise KeyError(room_id)
        return cls.build(settings, room)

    @classmethod
    def build(cls, settings: Settings, room: RoomSettings) -> RoomConfig:
        """``room`` may differ from ``settings.room(id)`` (e.g. a runtime output override)."""
        room_id = room.id
        callback = None
        if settings.http.public_callback_url:
            callback = CallbackTarget(
                url=settings.http.public_callback_url,
                auth_type=settings.callbacks.auth_type,
                key=room.callback_key or settings.callbacks.key,
            )
        return cls(room=room, recovery=settings.recovery_for(room_id), callback=callback)


def build_start_request(cfg: RoomConfig) -> StartSmartLiveReq:
    """The validated start request for ``cfg`` (raises InvalidRequest for a bad template)."""
    body: dict[str, Any] = copy.deepcopy(dict(cfg.room.start))
    outputs = cfg.outputs
    if outputs:
        body["output_urls"] = [outputs[0].url]
        body["stream_keys"] = [outputs[0].stream_key.get_secret_value()]
    if cfg.callback is not None:
        callback: dict[str, Any] = dict(body.get("live_event_callback_config") or {})
        callback["live_event_type_callback_url"] = cfg.callback.url
        callback["auth_type"] = cfg.callback.auth_type
        if cfg.callback.key is not None:
            callback["key"] = cfg.callback.key.get_secret_value()
        events = list(callback.get("callback_event_type") or [])
        if "RTMP_STREAM_STATE_CHANGE" not in events:
            events.append("RTMP_STREAM_STATE_CHANGE")
        callback["callback_event_type"] = events
        body["live_event_callback_config"] = callback
    return build(StartSmartLiveReq, body)


def check_start_requests(settings: Settings) -> None:
    """Load-time check (``load_settings(checks=...)``): the start request every start of each
    room would send is valid, so a bad ``start`` template is refused with the config, not by
    every start later. Raises :class:`ConfigProblem` pointing at the room's ``start``."""
    for i, room in enumerate(settings.rooms):
        try:
            build_start_request(RoomConfig.build(settings, room))
        except InvalidRequest as exc:
            raise ConfigProblem(("rooms", i, "start"), f"rooms.{i}.start: {exc.message}") from None
