"""The daemon's HTTP side: the MetaStudio callback intake, the relay hand-off and the server.

One Starlette app on ``[http]`` serves both the callback receiver (``callbacks.receiver``) and
the ops API (``ops.http``) behind the connection guard of ``httpserver``. Callbacks relayed over
MQTT (``callbacks.relay``) go through the same intake as those received here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp

from orchestrator.callbacks.receiver import CallbackIntake, CallbackRoute, OnEvent
from orchestrator.callbacks.relay import handle_relayed
from orchestrator.clock import Clock
from orchestrator.httpserver import ConnectionLimits, GuardStats, serve
from orchestrator.mqtt.bridge import RelayHandler
from orchestrator.ops.metrics import Metrics
from orchestrator.rooms.supervisor import RoomSupervisor
from orchestrator.settings import Settings
from orchestrator.store.base import Store

__all__ = ["Server", "callback_intake", "callback_keys", "relay_handler", "start_server"]


def callback_keys(settings: Settings, room_id: str) -> list[str]:
    """The room's own key if it has one, else the current and previous global keys."""
    room = settings.room(room_id)
    if room is not None and room.callback_key is not None:
        return [room.callback_key.get_secret_value()]
    return [
        k.get_secret_value()
        for k in (settings.callbacks.key, settings.callbacks.previous_key)
        if k is not None
    ]


class _CallbackMetrics:
    """Adapts the receiver's metrics protocol to :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def callback(self, event_type: str, result: str) -> None:
        self._m.callback(event_type, result)

    def lag(self, seconds: float) -> None:
        self._m.callback_lag(seconds)


def callback_intake(
    settings: Callable[[], Settings],
    *,
    store: Store,
    rooms: RoomSupervisor,
    clock: Clock,
    metrics: Metrics,
    on_event: OnEvent,
    route: CallbackRoute | None = None,
) -> CallbackIntake:
    """Callbacks in: verified, stored in the inbox, posted to the room of their job. Keys are
    looked up per callback (a reload rotates them); the rest of ``[callbacks]`` is fixed.
    With ``route`` (several instances) a callback of a room owned elsewhere is left in the
    inbox for its owner (``fleet.callbacks``)."""
    s = settings()
    return CallbackIntake(
        s.callbacks,
        store=store,
        sink=rooms,
        room_for_job=rooms.room_for_job,
        key_for_room=lambda room_id: callback_keys(settings(), room_id),
        clock=clock.now,
        on_event=on_event,
        metrics=_CallbackMetrics(metrics),
        public_url=s.http.public_callback_url,
        route=route,
    )


def relay_handler(intake: CallbackIntake | None) -> RelayHandler:
    """Callbacks relayed over MQTT, into the same intake as those received over HTTP."""
    assert intake is not None

    async def relayed(payload: bytes, properties: object) -> None:
        await handle_relayed(payload, properties, intake=intake)

    return relayed


@dataclass(frozen=True)
class Server:
    port: int
    guard: GuardStats | None


async def start_server(tg: asyncio.TaskGroup, app: ASGIApp, settings: Settings) -> Server:
    """Serve ``app`` as the task ``http`` of ``tg``; returns once the port is bound (a port
    that cannot be bound fails the task, and with it the start)."""
    started: asyncio.Future[Server] = asyncio.get_running_loop().create_future()

    async def _serve() -> None:
        lim = settings.limits
        limits = ConnectionLimits(
            max_connections=lim.http_max_connections,
            header_timeout_s=lim.http_header_timeout_s,
            body_timeout_s=lim.http_body_timeout_s,
            keepalive_s=lim.http_keepalive_s,
        )
        http = settings.http
        async with serve(app, host=http.host, port=http.port, limits=limits) as sv:
            started.set_result(Server(sv.port, sv.guard))
            await asyncio.Event().wait()

    tg.create_task(_serve(), name="http")
    return await started
