"""Wiring and lifecycle: the daemon's parts, one TaskGroup of named services, signals, readiness.

Start order (each step finishes before the next begins)::

    store open → MetaStudio client → room supervisor → HTTP server (ops + callbacks)
    → inbox replay → adoption of running jobs → schedule (catch-up) → MQTT → poller
    → READY=1 (systemd)

With leases, adoption is the ownership loop's and the poller the fleet's (``fleet.parts``).
A callback may then reach any instance: one whose room is owned elsewhere is left in the shared
inbox and announced over LISTEN/NOTIFY; the owner claims it (``fleet.callbacks``), and claims
its rooms' pending callbacks when it gains them (this replaces the startup inbox replay).

Every long-running service is a named task in one TaskGroup. A service that crashes is logged
with context and brings the whole process down with exit code 1 (systemd restarts it): never a
silent half-alive daemon. Room workers are the exception: the supervisor restarts a crashed room
worker itself, because one bad room must not take the others off the air.

Signals: SIGTERM/SIGINT → graceful stop within ``shutdown.timeout_s`` (jobs keep streaming unless
``shutdown.stop_jobs``); SIGHUP → reload config and schedules without touching running jobs.

The parts live in their own modules; this one only builds and connects them:
``control_service`` (commands → room events), ``listeners`` (transition fan-out), ``upkeep``
(poll, SLA, retention, probe loops), ``overrides`` (stored output and schedule overrides),
``reload`` (SIGHUP / ``reload``), ``handover`` (leases, adoption at boot), ``cloud`` (the
configured MetaStudio client), ``endpoints`` (the HTTP routes), ``fleet`` (the tenant's budget
and listing shared between instances). docs/architecture.md maps them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from orchestrator import __version__, cloud, endpoints
from orchestrator import logging as olog
from orchestrator.alerts import WebhookSender
from orchestrator.callbacks.receiver import CallbackIntake
from orchestrator.clock import Clock, SystemClock
from orchestrator.control import CommandError
from orchestrator.control_service import ControlService
from orchestrator.errors import ConfigError
from orchestrator.fleet.callbacks import CallbackHandoff, inbox_channel
from orchestrator.fleet.parts import Fleet
from orchestrator.fleet.share import TENANT_READER
from orchestrator.handover import Handover, adopt_at_boot
from orchestrator.httpserver import GuardStats
from orchestrator.listeners import TransitionFanout
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.mqtt.bridge import MqttBridge
from orchestrator.ops import systemd
from orchestrator.ops.http import Readiness, ops_routes
from orchestrator.ops.metrics import Metrics
from orchestrator.overrides import Overrides
from orchestrator.ownership import OwnershipManager
from orchestrator.reload import ConfigReload
from orchestrator.rooms.supervisor import RoomSupervisor, Transition
from orchestrator.schedule.scheduler import WindowScheduler
from orchestrator.settings import Settings, config_url_secrets, mask_url
from orchestrator.sla import SlaAccumulator
from orchestrator.store.base import Store, StoreError
from orchestrator.store.sql import SqlStore
from orchestrator.upkeep import Retention, SlaBook, TenantPoller, log_repeats_loop, probe_runner

log = structlog.get_logger(__name__)


def register_secrets(settings: Settings) -> None:
    """Teach the log redactor every secret value we hold."""
    c = settings.cloud
    values = [c.ak, c.sk, c.password, c.security_token, settings.mqtt.password]
    values += [settings.callbacks.key, settings.callbacks.previous_key, settings.ops.token]
    for r in settings.rooms:
        values += [r.stream_key, r.callback_key]
        values += [b.stream_key for b in r.backup_outputs]
    olog.register_secrets(v.get_secret_value() for v in values if v is not None)
    olog.register_secrets(config_url_secrets(settings))  # store.url password, webhook tokens


class Daemon:
    """The running daemon: builds the parts, runs them, reloads and stops them.

    Parts that need nothing running are built here; the cloud client, the rooms and what
    depends on them in :meth:`run`, in start order. ``control`` implements
    :class:`orchestrator.control.Control` once the rooms exist.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        listeners: Sequence[Callable[[Transition], None]] = (),
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self._transport = transport
        self._extra_listeners = list(listeners)
        self.instance_id = settings.store.instance_id or f"{socket.gethostname()}:{os.getpid()}"
        self.stop_requested = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.ready = asyncio.Event()
        self.started = False
        self.http_port: int | None = None
        self.http_guard: GuardStats | None = None
        self.metrics = Metrics(version=__version__)
        self.readiness = Readiness(
            api_reachable_s=settings.ops.api_reachable_s, mqtt_required=settings.mqtt.enabled
        )
        self.store: Store = store or SqlStore(
            settings.store.url,
            schema=settings.store.pg_schema,
            max_payload_bytes=settings.limits.callback_stored_bytes,
            max_text_bytes=settings.limits.stored_text_bytes,
        )
        self.sla = SlaAccumulator()
        self.fanout = TransitionFanout(self.metrics, self.sla)
        self.sla_book = SlaBook(
            self.sla,
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
            settings=self._current,
        )
        self.retention = Retention(self.store, clock=self.clock, settings=self._current)
        self.overrides = Overrides(self.store, self._current)
        self._handover = Handover(self.overrides, clock=self.clock, settings=self._current)
        self.ownership: OwnershipManager | None = None
        if _leases_on(settings):  # several instances: rooms are owned through leases
            self.ownership = OwnershipManager(
                self.store,
                owner=self.instance_id,
                room_ids=lambda: [r.id for r in self.settings.rooms],
                ttl_s=settings.store.lease_ttl_s,
                max_rooms=settings.store.max_rooms_per_instance,
                clock=self.clock,
                rng=self.rng,
                on_gained=self._handover.gained,
                on_lost=self._handover.lost,
                roles=[TENANT_READER],
                join_settle_s=settings.store.join_settle_s,
            )
        self.fleet: Fleet | None = None  # several instances: shared budget, one tenant read
        self._http: httpx.AsyncClient | None = None
        self.client: MetaStudioClient | None = None
        self.supervisor: RoomSupervisor | None = None
        self.control: ControlService | None = None
        self.callback_intake: CallbackIntake | None = None
        self.scheduler: WindowScheduler | None = None
        self.bridge: MqttBridge | None = None
        self.webhook: WebhookSender | None = None
        self._reload: ConfigReload | None = None
        self.handoff: CallbackHandoff | None = None  # several instances: callbacks to the owner

    def _current(self) -> Settings:
        """The settings in force (a reload replaces them); what every part re-reads."""
        return self.settings

    def attach_rooms(self, supervisor: RoomSupervisor) -> ControlService:
        """Connect the room supervisor to the parts that command and read rooms."""
        self.supervisor = self._handover.rooms = supervisor
        self._reload = ConfigReload(
            self.config_path,
            settings=self._current,
            install=self._install,
            register=register_secrets,
            rooms=supervisor,
            sla=self.sla_book,
            overrides=self.overrides,
            leases=self.ownership is not None,
            status=self._status,
        )
        self.control = ControlService(
            rooms=supervisor,
            overrides=self.overrides,
            settings=self._current,
            clock=self.clock,
            instance_id=self.instance_id,
            ownership=self.ownership,
            reload=lambda cause: self.reload(cause=cause),
        )
        return self.control

    def ops_routes(self) -> list[BaseRoute]:
        """The ops API (health, metrics, status pages, reset) over the attached rooms."""
        assert self.control is not None
        return ops_routes(
            rooms=self.control,
            store=self.store,
            metrics=self.metrics,
            readiness=self.readiness,
            token=self.settings.ops.token,
            now=self.clock.now,
            names=self._room_name,
            actions=self.control,
        )

    # --- run --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``stop_requested``). Returns the process exit code."""
        s = self.settings
        await self._open_store()
        self._http, self.client = cloud.build_client(
            s.cloud, transport=self._transport, on_call=self._on_api_call
        )
        if self.ownership is not None:  # several instances share the tenant's API limits
            self.fleet = Fleet(self.ownership, self.client.limits, self._current, self.metrics)
        sup = RoomSupervisor(
            cloud=self.client,
            store=self.store,
            rooms=self.overrides.room_config,
            room_ids=lambda: [] if self.ownership else [r.id for r in self.settings.rooms],
            settings=self._current,
            clock=self.clock,
            rng=self.rng,
            listeners=[self.fanout, *self._extra_listeners],
            owns=self.ownership.is_owned if self.ownership else None,
            on_dropped=self.ownership.dropped if self.ownership else None,
        )
        self.attach_rooms(sup)
        if self.fleet is not None:
            self._fleet_callbacks(self.fleet, sup)
        assert self._reload is not None
        self._reload.cloud = (self._http, self.client)
        await self.overrides.load_outputs()
        rc = 0
        refused: ConfigError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._stop_during_startup(), name="startup-stop")
                tg.create_task(sup.run(), name="supervisor")
                await self._start_http(tg, sup)
                if self.handoff is not None:  # each owner claims its rooms' items as it gains them
                    tg.create_task(self.handoff.run(), name="callback-handoff")
                else:
                    await self._replay_inbox()
                if self.ownership is None:
                    report = await adopt_at_boot(sup, self.rng)
                    log.info("adoption_done", **report.to_log())
                await self._start_schedule(sup)
                if self.ownership is not None:  # rooms arrive as leases are gained
                    tg.create_task(self.ownership.run(), name="ownership")
                if s.mqtt.enabled:
                    self._start_mqtt(tg)
                if s.alerts.webhook_url:
                    self.webhook = WebhookSender(
                        s.alerts.webhook_url, http=self._http, retries=s.alerts.webhook_retries
                    )
                    self.fanout.alerts = self.webhook
                    tg.create_task(self.webhook.run(), name="alert-webhook")
                if self.fleet is None:
                    poller = TenantPoller(
                        sup, settings=self._current, rng=self.rng, status=self._status
                    )
                    tg.create_task(poller.run(), name="poller")
                else:  # one tenant read for the fleet, by the elected reader
                    self.fleet.start_read(
                        tg, sup, self.store, clock=self.clock, rng=self.rng, status=self._status
                    )
                if s.probe.enabled and any(r.playback_url for r in s.rooms):
                    probes = probe_runner(sup, sup, settings=self._current, clock=self.clock)
                    tg.create_task(probes.run(), name="probe")
                tg.create_task(self.sla_book.run(), name="sla-flush")
                tg.create_task(self.retention.run(), name="retention")
                tg.create_task(log_repeats_loop(self._current), name="log-repeats")
                tg.create_task(systemd.watchdog_loop(), name="sd-watchdog")
                self.started = True
                self.ready.set()
                systemd.ready(self._status())
                log.info(
                    "daemon_ready",
                    rooms=len(s.rooms),
                    http_port=self.http_port,
                    instance=self.instance_id,
                    version=__version__,
                )
                await self._main_loop()
                raise _Shutdown
        except* _Shutdown:
            pass
        except* ConfigError as eg:  # e.g. the HTTP port cannot be bound: one line, exit 2
            refused = eg.exceptions[0]  # type: ignore[assignment]
        except* Exception as eg:
            for exc in eg.exceptions:
                log.error("service_crashed", error=repr(exc), exc_info=exc)
            rc = 1
        finally:
            await self._close()
        if refused is not None:
            raise refused
        return rc

    # --- start steps ------------------------------------------------------------------------

    async def _open_store(self) -> None:
        """Open the store; a store that cannot be opened (read-only file, a directory where the
        file should be, database unreachable) is one line naming the store, not a traceback."""
        try:
            await self.store.open()
        except (StoreError, SQLAlchemyError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            store = mask_url(self.settings.store.url)
            log.error("store_open_failed", store=store, error=reason)
            raise ConfigError(f"cannot open the store: {reason}", where=f"store {store}") from None

    async def _start_http(self, tg: asyncio.TaskGroup, sup: RoomSupervisor) -> None:
        self.callback_intake = endpoints.callback_intake(
            self._current, store=self.store, rooms=sup, clock=self.clock, metrics=self.metrics,
            on_event=self.fanout.on_callback_event, route=self.handoff,
        )  # fmt: skip
        if self.handoff is not None:  # claimed callbacks share the intake's ordering state
            self.handoff.dispatcher = self.callback_intake.dispatcher
        routes = [*self.callback_intake.routes(), *self.ops_routes()]
        server = await endpoints.start_server(tg, Starlette(routes=routes), self.settings)
        self.http_port, self.http_guard = server.port, server.guard

    def _fleet_callbacks(self, fleet: Fleet, sup: RoomSupervisor) -> None:
        """Several instances: callbacks to any instance reach the owner of their room, over the
        fleet's one LISTEN connection (it starts with the fleet's tenant read)."""
        self.handoff = CallbackHandoff(
            self.store,
            owner=self.instance_id,
            rooms=sup,
            configured=lambda room_id: self.settings.room(room_id) is not None,
            clock=self.clock,
            signals=fleet.signals,
            channel=inbox_channel(self.settings.store),
        )
        self._handover.inbox = self.handoff.gained
        self._handover.hints = fleet.hints_for_gains(self.store, self.clock)

    async def _replay_inbox(self) -> None:
        assert self.callback_intake is not None
        n = await self.callback_intake.replay()
        if n:
            log.info("inbox_replayed", count=n)

    async def _start_schedule(self, sup: RoomSupervisor) -> None:
        self.scheduler = WindowScheduler(
            sup,
            now=self.clock.now,
            misfire_grace_s=self.settings.schedule.misfire_grace_s,
            start_rate_per_s=self.settings.cloud.rate_start_per_s,
        )
        self.overrides.scheduler = self.scheduler
        if self.fleet is not None:  # the herd is spread at our share of the start rate
            self.fleet.budget.attach_herd(self.scheduler.set_start_rate)
        await self.overrides.apply_schedules()
        for room_id, ev in self.scheduler.startup_events(self.clock.now()):
            sup.post(room_id, ev)
        self.scheduler.start()

    def _start_mqtt(self, tg: asyncio.TaskGroup) -> None:
        assert self.control is not None
        intake = self.callback_intake
        relayed = endpoints.relay_handler(intake) if self.settings.mqtt.consume_relay else None
        self.bridge = MqttBridge(
            self.settings.mqtt,
            self.control,
            self.store,
            version=__version__,
            on_connected=self._mqtt_connected,
            on_relayed_callback=relayed,
            room_name=self._room_name,
        )
        self.fanout.publisher = self.bridge
        assert self._reload is not None
        self._reload.bridge = self.bridge
        self.sla_book.publisher = self.bridge
        tg.create_task(self.bridge.run(), name="mqtt")

    # --- what the parts report ----------------------------------------------------------------

    def _on_api_call(self, operation: str, code: str, seconds: float) -> None:
        self.metrics.api_call(operation, code, seconds)
        if code.isdigit() and int(code) < 500 and int(code) not in (401, 403, 429):
            self.readiness.api_ok()

    def _mqtt_connected(self, connected: bool) -> None:
        self.readiness.mqtt(connected)
        self.metrics.mqtt_connected(connected)

    def _room_name(self, room_id: str) -> str | None:
        room = self.settings.room(room_id)  # re-read: a reload may rename it
        if room is None or not room.name:
            return None
        return room.name

    def _status(self) -> str:
        if self.supervisor is None:
            return "starting"
        counts = self.supervisor.state_counts()
        return " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no rooms"

    # --- reload ------------------------------------------------------------------------------

    async def reload(self, *, cause: str) -> Mapping[str, Any]:
        """SIGHUP and the ``reload`` command (``orchestrator.reload``)."""
        assert self._reload is not None, "reload before the rooms run"
        return await self._reload(cause)

    def _install(self, settings: Settings) -> None:
        self.settings = settings

    # --- stop ---------------------------------------------------------------------------------

    async def _stop_during_startup(self) -> None:
        """SIGTERM before READY (e.g. adoption retrying a cloud outage) must not wait for the
        startup to finish: abort it. Once started, the main loop handles the stop."""
        await self.stop_requested.wait()
        if not self.started:
            systemd.stopping()
            log.info("daemon_stopping", during="startup")
            raise _Shutdown

    async def _main_loop(self) -> None:
        while True:
            stop = asyncio.create_task(self.stop_requested.wait(), name="wait-stop")
            reload_ = asyncio.create_task(self.reload_requested.wait(), name="wait-reload")
            done, pending = await asyncio.wait({stop, reload_}, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if stop in done:
                await self._graceful_stop()
                return
            self.reload_requested.clear()
            try:
                await self.reload(cause="signal:SIGHUP")
            except (ConfigError, CommandError) as exc:
                log.error("reload_failed", error=str(exc))

    async def _graceful_stop(self) -> None:
        systemd.stopping()
        log.info("daemon_stopping", stop_jobs=self.settings.shutdown.stop_jobs)
        if self.settings.shutdown.stop_jobs and self.supervisor is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.supervisor.stop_all(cause="shutdown"), self.settings.shutdown.timeout_s
                )
        await self.sla_book.flush()

    async def _close(self) -> None:
        """Release everything; one failing step is logged and never skips the others."""
        steps: list[tuple[str, Callable[[], object]]] = []
        if self.bridge is not None:
            steps.append(("mqtt", self.bridge.aclose))
        if self.scheduler is not None:
            steps.append(("scheduler", self.scheduler.shutdown))
        if self._http is not None:
            steps.append(("http_client", self._http.aclose))
        steps.append(("sla_flush", self.sla_book.flush))
        if self.ownership is not None:  # hand rooms over now instead of after the TTL
            steps.append(("leases", self.ownership.release_all))
        steps.append(("store", self.store.close))
        for name, step in steps:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:  # shutdown must reach every step, whatever one raises
                log.warning("shutdown_step_failed", step=name, error=repr(exc))
        log.info("daemon_stopped")


def _leases_on(settings: Settings) -> bool:
    """Room ownership by leases: explicit, or "auto" = on for a PostgreSQL store."""
    mode = settings.store.leases
    return mode == "on" or (mode == "auto" and settings.store.url.startswith("postgresql"))


class _Shutdown(Exception):
    """Raised inside the TaskGroup to cancel every service on a requested stop."""


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, daemon.stop_requested.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stop_requested.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload_requested.set)


async def amain(settings: Settings, config_path: Path | None) -> int:
    daemon = Daemon(settings, config_path=config_path)
    install_signal_handlers(daemon)
    return await daemon.run()


def run(settings: Settings, *, config_path: Path | None = None) -> int:
    lim = settings.limits
    olog.configure(
        settings.log.level,
        settings.log.format,
        field_max_chars=lim.log_field_max_chars,
        repeat_interval_s=lim.log_repeat_interval_s,
        repeat_burst=lim.log_repeat_burst,
    )
    register_secrets(settings)
    return asyncio.run(amain(settings, config_path))


__all__ = ["Daemon", "amain", "install_signal_handlers", "register_secrets", "run"]
