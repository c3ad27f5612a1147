"""Wiring and lifecycle: one TaskGroup of named services, signals, readiness.

Start order (each step finishes before the next begins)::

    store open → MetaStudio client → room supervisor → HTTP server (ops + callbacks)
    → inbox replay → adoption of running jobs → schedule (catch-up) → MQTT → poller
    → READY=1 (systemd)

Every long-running service is a named task in one TaskGroup. A service that crashes is logged
with context and brings the whole process down with exit code 1 (systemd restarts it): never a
silent half-alive daemon. Room workers are the exception: the supervisor restarts a crashed room
worker itself, because one bad room must not take the others off the air.

Signals: SIGTERM/SIGINT → graceful stop within ``shutdown.timeout_s`` (jobs keep streaming unless
``shutdown.stop_jobs``); SIGHUP → reload config and schedules without touching running jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from orchestrator import __version__
from orchestrator import logging as olog
from orchestrator.alerts import Alert, WebhookSender
from orchestrator.callbacks.parse import CallbackEvent
from orchestrator.clock import Clock, SystemClock
from orchestrator.control import CommandError
from orchestrator.errors import ConfigError, OrchestratorError, TemporaryError
from orchestrator.httpserver import ConnectionLimits, GuardStats, serve
from orchestrator.metastudio.auth import AkSkAuth, IamTokenAuth
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits, RateSpec, default_specs
from orchestrator.ops import systemd
from orchestrator.ops.http import Readiness
from orchestrator.ops.metrics import Metrics
from orchestrator.ownership import OwnershipManager
from orchestrator.rooms import model
from orchestrator.rooms.policy import poll_period
from orchestrator.rooms.supervisor import RoomSupervisor, Transition
from orchestrator.settings import (
    CloudSettings,
    RoomSettings,
    Settings,
    config_url_secrets,
    load_settings,
    mask_url,
)
from orchestrator.sla import SlaAccumulator
from orchestrator.store.base import Store
from orchestrator.store.sql import SqlStore

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
    """The running daemon. Implements :class:`orchestrator.control.Control`."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        listeners: Sequence[Callable[[Transition], None]] = (),
    ) -> None:
        self.settings = settings
        self._extra_listeners = list(listeners)
        self.config_path = config_path
        self.clock: Clock = clock or SystemClock()
        self._transport = transport
        self.rng = rng or random.Random()
        self.metrics = Metrics(version=__version__)
        self.readiness = Readiness(
            api_reachable_s=settings.ops.api_reachable_s, mqtt_required=settings.mqtt.enabled
        )
        self.started = False
        self.sla = SlaAccumulator()
        self._sla_published: dict[str, dict[str, Any]] = {}  # last SLA sent per room (MQTT)
        self.instance_id = settings.store.instance_id or f"{socket.gethostname()}:{os.getpid()}"
        self.stop_requested = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.ready = asyncio.Event()
        self.http_port: int | None = None
        self.http_guard: GuardStats | None = None
        self.store: Store = SqlStore(
            settings.store.url,
            schema=settings.store.pg_schema,
            max_payload_bytes=settings.limits.callback_stored_bytes,
            max_text_bytes=settings.limits.stored_text_bytes,
        )
        self.prune_runs = 0
        """Completed retention passes (tests and the bench wait on it)."""
        self.pruned = asyncio.Condition()
        self.ownership: OwnershipManager | None = None
        if _leases_on(settings):  # several instances: rooms are owned through leases
            self.ownership = OwnershipManager(
                self.store,
                owner=self.instance_id,
                room_ids=self.room_ids,
                ttl_s=settings.store.lease_ttl_s,
                max_rooms=settings.store.max_rooms_per_instance,
                clock=self.clock,
                rng=self.rng,
                on_gained=self._rooms_gained,
                on_lost=self._rooms_lost,
            )
        self._http: httpx.AsyncClient | None = None
        self.client: MetaStudioClient | None = None
        self.supervisor: RoomSupervisor | None = None
        self.bridge: Any = None
        self.scheduler: Any = None
        self.webhook: WebhookSender | None = None
        self._outputs: dict[str, tuple[str, str]] = {}
        self._overridden: dict[str, tuple[RoomSettings, tuple[str, str], RoomSettings]] = {}

    # --- construction helpers ------------------------------------------------------------

    def _build_auth(self, c: CloudSettings) -> httpx.Auth | None:
        """Credentials from settings (also on reload: rotated AK/SK take effect without restart)."""
        auth: httpx.Auth | None = None
        if c.auth == "aksk" and c.ak is not None and c.sk is not None:
            auth = AkSkAuth(
                c.ak.get_secret_value(),
                c.sk.get_secret_value(),
                c.project_id,
                security_token=c.security_token.get_secret_value() if c.security_token else None,
            )
        elif c.auth == "token" and c.password is not None and self._http is not None:
            auth = IamTokenAuth.with_password(
                http=self._http,
                iam_url=c.iam_url,
                user=c.iam_user,
                password=c.password.get_secret_value(),
                domain=c.iam_domain,
                project_id=c.project_id or None,
                project_name=None if c.project_id else c.region,
            )
        return auth

    def _build_client(self) -> MetaStudioClient:
        c = self.settings.cloud
        timeout = httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s)
        self._http = httpx.AsyncClient(timeout=timeout, transport=self._transport)
        base_url = c.base_url or MetaStudioClient.endpoint_for_region(c.region)
        auth = self._build_auth(c)
        specs = default_specs(c.region)
        # burst=1: a full bucket of one second's tokens plus its refill would allow 2x the rate
        # in a sliding second (measured: 40 queries/s against a 20/s limit); now at most rate+1.
        specs[ApiGroup.START] = RateSpec(c.rate_start_per_s, burst=1)
        specs[ApiGroup.STOP] = RateSpec(c.rate_write_per_s, burst=1)
        specs[ApiGroup.COMMAND] = RateSpec(c.rate_write_per_s, burst=1)
        specs[ApiGroup.JOB_QUERY] = RateSpec(c.rate_query_per_s, burst=1)
        specs[ApiGroup.ROOM_QUERY] = RateSpec(c.rate_query_per_s, burst=1)
        self.rate_limits = RateLimits(specs=specs)
        return MetaStudioClient(
            self._http,
            base_url=base_url,
            project_id=c.project_id,
            auth=auth,
            limits=self.rate_limits,
            app_user_id=c.app_user_id,
            timeout=timeout,
            on_call=self._on_api_call,
            backoff_base=c.read_retry_backoff_s,
        )

    def _on_api_call(self, operation: str, code: str, seconds: float) -> None:
        self.metrics.api_call(operation, code, seconds)
        if code.isdigit() and int(code) < 500 and int(code) not in (401, 403, 429):
            self.readiness.api_ok()

    def room_config(self, room_id: str) -> RoomSettings | None:
        room = self.settings.room(room_id)
        if room is None:
            return None
        override = self._outputs.get(room_id)
        if override is not None:
            # the same object while nothing changed: the supervisor rebuilds a room's config
            # only when the identity of what it was built from changes
            cached = self._overridden.get(room_id)
            if cached is not None and cached[0] is room and cached[1] == override:
                return cached[2]
            from pydantic import SecretStr

            copy = room.model_copy(
                update={"output_url": override[0], "stream_key": SecretStr(override[1])}
            )
            self._overridden[room_id] = (room, override, copy)
            return copy
        return room

    # --- transitions fan-out -------------------------------------------------------------

    def _on_transition(self, t: Transition) -> None:
        before, after = t.before, t.after
        if before.state != after.state:
            self.metrics.transition(before.state.value, after.state.value)
            log.info(
                "room_transition",
                room_id=t.room_id,
                from_state=before.state.value,
                to_state=after.state.value,
                trigger=t.event,
                cause=t.cause,
                job_id=after.job_id,
                attempt=after.attempt,
                last_error=after.last_error,
            )
        down_since = self.sla.down_since(t.room_id)  # the open drop, before this step
        self.sla.observe(
            t.room_id, state=after.state.value, order_on=after.order is model.Order.ON, at=t.at,
            down_since=t.drop_since,
        )  # fmt: skip
        if before.state != after.state and down_since is not None:
            _observe_recovery(self.metrics, t, down_since)
        if self.bridge is not None:
            self.bridge.publish_state(t.room_id, after)
            self.bridge.publish_event(t.room_id, t.to_json())
        for kind, status, message in t.alerts:
            alert = Alert(t.room_id, kind, status, message, t.at)
            log.warning("alert", room_id=t.room_id, kind=kind, status=status, message=message)
            if self.bridge is not None:  # the documented {"type": "alert", ...} event
                self.bridge.publish_event(t.room_id, alert.to_json())
            if self.webhook is not None:
                self.webhook.submit(alert)
        # rooms-by-state gauges are computed at scrape time (ops.http), not per transition:
        # with thousands of rooms a per-transition recount would be O(rooms) on the hot path.

    # --- services ------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``stop_requested``). Returns the process exit code."""
        s = self.settings
        await self._open_store()
        self.client = self._build_client()
        self.supervisor = RoomSupervisor(
            cloud=self.client,
            store=self.store,
            rooms=self.room_config,
            room_ids=lambda: [] if self.ownership else [r.id for r in self.settings.rooms],
            settings=lambda: self.settings,
            clock=self.clock,
            rng=self.rng,
            listeners=[self._on_transition, *self._extra_listeners],
            owns=self.ownership.is_owned if self.ownership else None,
            on_dropped=self.ownership.dropped if self.ownership else None,
        )
        for rid, ov in (await self._load_output_overrides()).items():
            self._outputs[rid] = ov
        rc = 0
        refused: ConfigError | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._stop_during_startup(), name="startup-stop")
                tg.create_task(self.supervisor.run(), name="supervisor")
                served = await self._start_http(tg)
                self.http_port = served
                await self._replay_inbox()
                if self.ownership is None:
                    report = await self._adopt_all()
                    log.info("adoption_done", **report.to_log())
                await self._start_schedule(tg)
                if self.ownership is not None:  # rooms arrive as leases are gained
                    tg.create_task(self.ownership.run(), name="ownership")
                if s.mqtt.enabled:
                    await self._start_mqtt(tg)
                if s.alerts.webhook_url and self._http is not None:
                    self.webhook = WebhookSender(
                        s.alerts.webhook_url, http=self._http, retries=s.alerts.webhook_retries
                    )
                    tg.create_task(self.webhook.run(), name="alert-webhook")
                tg.create_task(self._poller(), name="poller")
                if s.probe.enabled and any(r.playback_url for r in s.rooms):
                    tg.create_task(self._probe_runner().run(), name="probe")
                tg.create_task(self._sla_flusher(), name="sla-flush")
                tg.create_task(self._retention_loop(), name="retention")
                tg.create_task(self._log_repeats_loop(), name="log-repeats")
                tg.create_task(systemd.watchdog_loop(), name="sd-watchdog")
                self.started = True
                self.ready.set()
                systemd.ready(self._status_text())
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

    async def _open_store(self) -> None:
        """Open the store; a store that cannot be opened (read-only file, a directory where the
        file should be, database unreachable) is one line naming the store, not a traceback."""
        from sqlalchemy.exc import SQLAlchemyError

        from orchestrator.store.base import StoreError

        try:
            await self.store.open()
        except (StoreError, SQLAlchemyError, OSError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            store = mask_url(self.settings.store.url)
            log.error("store_open_failed", store=store, error=reason)
            raise ConfigError(f"cannot open the store: {reason}", where=f"store {store}") from None

    async def _adopt_all(self) -> Any:
        """Adoption with retries: adopt_all() leaves retrying to us, and a MetaStudio outage
        (5xx/429 storm, network) at boot must not kill the daemon (rooms wait in UNKNOWN)."""
        assert self.supervisor is not None
        delay = 1.0
        while True:
            try:
                return await self.supervisor.adopt_all()
            except TemporaryError as exc:
                wait = max(delay, exc.retry_after or 0.0) * (0.8 + 0.4 * self.rng.random())
                log.warning("adoption_retry", error=str(exc)[:300], retry_in_s=round(wait, 2))
                await asyncio.sleep(wait)
                delay = min(delay * 2.0, 30.0)

    async def _rooms_gained(self, fences: Mapping[str, int]) -> None:
        """Leases gained: fresh overrides from the store, supervise, catch up on windows."""
        assert self.supervisor is not None
        self._outputs.update(await self._load_output_overrides(list(fences)))
        taken = set(await self.supervisor.take_over(fences))
        if taken and self.scheduler is not None:
            await self._apply_schedules()  # the previous owner may have paused or added windows
            for room_id, ev in self.scheduler.startup_events(self.clock.now()):
                if room_id in taken:
                    self.supervisor.post(room_id, ev)

    async def _rooms_lost(self, room_ids: Sequence[str], cause: str) -> None:
        """Leases lost or given away: stand down, jobs keep running for the next owner."""
        assert self.supervisor is not None
        # Giving a room away: let a call in flight finish, but never long enough to miss renewals.
        wait = self.settings.store.lease_ttl_s / 6 if cause == "lease:rebalance" else 0.0
        await self.supervisor.stand_down(room_ids, cause=cause, wait_s=wait)

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
        await self._flush_sla()

    async def _close(self) -> None:
        """Release everything; one failing step is logged and never skips the others."""
        steps: list[tuple[str, Callable[[], Any]]] = []
        if self.bridge is not None:
            steps.append(("mqtt", self.bridge.aclose))
        if self.scheduler is not None:
            steps.append(("scheduler", self.scheduler.shutdown))
        if self._http is not None:
            steps.append(("http_client", self._http.aclose))
        steps.append(("sla_flush", self._flush_sla))
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

    def _status_text(self) -> str:
        if self.supervisor is None:
            return "starting"
        counts = self.supervisor.state_counts()
        return " ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no rooms"

    async def _start_http(self, tg: asyncio.TaskGroup) -> int:
        routes: list[BaseRoute] = []
        routes += self._callback_routes()
        routes += self._ops_routes()
        app = Starlette(routes=routes)
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def _serve() -> None:
            lim = self.settings.limits
            limits = ConnectionLimits(
                max_connections=lim.http_max_connections,
                header_timeout_s=lim.http_header_timeout_s,
                body_timeout_s=lim.http_body_timeout_s,
                keepalive_s=lim.http_keepalive_s,
            )
            http = self.settings.http
            async with serve(app, host=http.host, port=http.port, limits=limits) as sv:
                self.http_guard = sv.guard
                started.set_result(sv.port)
                await asyncio.Event().wait()

        tg.create_task(_serve(), name="http")
        return await started

    def _callback_routes(self) -> list[BaseRoute]:
        from orchestrator.callbacks.receiver import CallbackIntake

        assert self.supervisor is not None
        sup = self.supervisor
        self.callback_intake = CallbackIntake(
            self.settings.callbacks,
            store=self.store,
            sink=sup,
            room_for_job=sup.room_for_job,
            key_for_room=self._callback_keys,
            clock=self.clock.now,
            on_event=self._on_callback_event,
            metrics=_CallbackMetrics(self.metrics),
            public_url=self.settings.http.public_callback_url,
        )
        return list(self.callback_intake.routes())

    def _callback_keys(self, room_id: str) -> list[str]:
        """The room's own key if it has one, else the current and previous global keys."""
        room = self.settings.room(room_id)
        if room is not None and room.callback_key is not None:
            return [room.callback_key.get_secret_value()]
        return [
            k.get_secret_value()
            for k in (self.settings.callbacks.key, self.settings.callbacks.previous_key)
            if k is not None
        ]

    async def _on_callback_event(self, event: CallbackEvent, room_id: str | None) -> None:
        """Script switches and reply completions matter to shop backends: publish them."""
        if self.bridge is not None and room_id is not None:
            self.bridge.publish_event(
                room_id,
                {
                    "type": event.event_type,
                    "job_id": event.job_id,
                    "scene_script_name": event.scene_script_name,
                    "shoot_script_sequence_no": event.shoot_script_sequence_no,
                    "shoot_script_title": event.shoot_script_title,
                    "reply_id": event.reply_id,
                },
            )

    def _ops_routes(self) -> list[BaseRoute]:
        from orchestrator.ops.http import ops_routes

        return ops_routes(
            rooms=self,
            store=self.store,
            metrics=self.metrics,
            readiness=self.readiness,
            token=self.settings.ops.token,
            now=self.clock.now,
            names=self._room_name,
            actions=self,
        )

    async def _replay_inbox(self) -> None:
        n = await self.callback_intake.replay()
        if n:
            log.info("inbox_replayed", count=n)

    async def _start_schedule(self, tg: asyncio.TaskGroup) -> None:
        from orchestrator.schedule.scheduler import WindowScheduler

        assert self.supervisor is not None
        self.scheduler = WindowScheduler(
            self.supervisor,
            now=self.clock.now,
            misfire_grace_s=self.settings.schedule.misfire_grace_s,
            start_rate_per_s=self.settings.cloud.rate_start_per_s,
        )
        await self._apply_schedules()
        for room_id, ev in self.scheduler.startup_events(self.clock.now()):
            self.supervisor.post(room_id, ev)
        self.scheduler.start()

    async def _apply_schedules(self) -> None:
        """(Re)build every room's schedule from config + stored overrides; the scheduler posts
        what changes for rooms whose current window moved (never a restart of a room that is
        still inside its window)."""
        from orchestrator.schedule.holidays import load_holidays
        from orchestrator.schedule.preview import schedule_for_room

        assert self.scheduler is not None
        lists = load_holidays(self.settings.schedule.holidays_file)
        schedules = {r.id: schedule_for_room(r, self.settings, lists) for r in self.settings.rooms}
        stored = await self.store.all_overrides()  # one read, not one per room
        overrides = {
            r.id: dict(stored.get(r.id, {}).get("schedule", {})) for r in self.settings.rooms
        }
        self.scheduler.apply(schedules, overrides)

    async def _start_mqtt(self, tg: asyncio.TaskGroup) -> None:
        from orchestrator.mqtt.bridge import MqttBridge

        self.bridge = MqttBridge(
            self.settings.mqtt,
            self,
            self.store,
            version=__version__,
            on_connected=self._mqtt_connected,
            on_relayed_callback=self._relayed if self.settings.mqtt.consume_relay else None,
            room_name=self._room_name,
        )
        tg.create_task(self.bridge.run(), name="mqtt")

    def _room_name(self, room_id: str) -> str | None:
        room = self.settings.room(room_id)  # re-read: a reload may rename it
        if room is None or not room.name:
            return None
        return room.name

    def _mqtt_connected(self, connected: bool) -> None:
        self.readiness.mqtt(connected)
        self.metrics.mqtt_connected(connected)

    async def _relayed(self, payload: bytes, properties: object) -> None:
        from orchestrator.callbacks.relay import handle_relayed

        await handle_relayed(payload, properties, intake=self.callback_intake)

    def _probe_runner(self) -> Any:
        from orchestrator.probe import ProbeRunner, ProbeSettings

        assert self.supervisor is not None
        sup = self.supervisor

        def rooms() -> dict[str, tuple[str, ProbeSettings]]:
            cfg = self.settings  # re-read on every tick so a reload applies
            return {
                r.id: (r.playback_url, cfg.probe_for(r.id))
                for r in cfg.rooms
                if r.playback_url and cfg.probe_for(r.id).enabled
            }

        def snapshot(room_id: str) -> model.Snapshot | None:
            return sup.snapshot(room_id) if self.settings.room(room_id) else None

        return ProbeRunner(sup, rooms=rooms, snapshot=snapshot, clock=self.clock)

    async def _poller(self) -> None:
        """Level-triggered safety net: the paged tenant job list, every poll period ± 20 %
        (sized by the tenant's job count and the poll's query budget: ``poll_period``)."""
        assert self.supervisor is not None
        sup = self.supervisor
        while True:
            r = self.settings.recovery
            period = poll_period(
                max(sup.tenant_jobs_seen, sup.room_count),
                longest_s=r.poll_interval_s,
                shortest_s=r.poll_min_interval_s,
                queries_per_s=r.poll_queries_per_s,
            )
            await asyncio.sleep(period * (0.8 + 0.4 * self.rng.random()))
            try:
                await self.supervisor.poll_once()
            except OrchestratorError as exc:
                log.warning("poll_failed", error=str(exc))
            systemd.status(self._status_text())

    async def _sla_flusher(self) -> None:
        while True:
            await asyncio.sleep(60)
            await self._flush_sla()

    async def _retention_loop(self) -> None:
        """Prune every growing table by ``[retention]``: at once, then every ``interval_s``
        (read each time, so a reload applies). A store failure skips one pass, never the
        daemon: streams matter more than housekeeping."""
        while True:
            await self.prune_once()
            interval = self.settings.retention.interval_s
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=interval))

    async def prune_once(self) -> dict[str, int]:
        from orchestrator.store.base import PruneCutoffs, StoreError

        r = self.settings.retention
        now = self.clock.now()

        def ago(days: float) -> datetime:
            return now - timedelta(days=days)

        cutoffs = PruneCutoffs(
            inbox=ago(r.inbox_days),
            replies=ago(r.replies_days),
            transitions=ago(r.transitions_days),
            jobs=ago(r.jobs_days),
            start_intents=ago(r.start_intents_days),
            alerts=ago(r.alerts_days),
            sla=ago(r.sla_days).date(),
        )
        counts: dict[str, int] = {}
        try:
            counts = await self.store.prune_older(cutoffs)
        except StoreError as exc:
            log.warning("retention_prune_failed", error=str(exc))
        else:
            if any(counts.values()):
                log.info("retention_pruned", **counts)
        async with self.pruned:
            self.prune_runs += 1
            self.pruned.notify_all()
        return counts

    async def _log_repeats_loop(self) -> None:
        """Report log lines the repeat limiter dropped once their flood has stopped."""
        while True:
            await asyncio.sleep(self.settings.limits.log_repeat_interval_s)
            olog.flush_repeats()

    async def _flush_sla(self) -> None:
        """Hand accumulated SLA seconds to the store. A store failure keeps what was not
        written for the next flush (never lost, never counted twice) and does not stop the
        daemon: SLA figures are bookkeeping, streams matter more."""
        from orchestrator.store.base import SlaRow, StoreError

        self.sla.tick(self.clock.now())
        pending = list(self.sla.drain().items())
        # One transaction per chunk, not one per room: 10,000 rooms made 10,000 commits a
        # minute (most of a quiet daemon's CPU in the scale bench).
        for start in range(0, len(pending), _SLA_CHUNK):
            chunk = pending[start : start + _SLA_CHUNK]
            rows = [
                SlaRow(room_id, day, d.scheduled_s, d.live_s, d.drops, len(d.recoveries),
                       sum(d.recoveries), max(d.recoveries, default=0.0))
                for (room_id, day), d in chunk
            ]  # fmt: skip
            try:
                await self.store.add_sla_rows(rows)
            except StoreError as exc:
                left = dict(pending[start:])
                self.sla.restore(left)
                log.warning("sla_flush_failed", error=str(exc), rooms_pending=len(left))
                return
            for (room_id, _), d in chunk:
                self.metrics.sla(room_id, live_s=d.live_s, scheduled_s=d.scheduled_s)
        if self.bridge is not None and self.settings.mqtt.ha_discovery:
            await self._publish_sla_today(self.bridge)

    async def _publish_sla_today(self, bridge: Any) -> None:
        """Each room's SLA of the UTC day, retained on MQTT when it changed (Home Assistant's
        SLA sensor). One store read per flush; a failure skips this minute, nothing else."""
        from orchestrator.store.base import StoreError

        today = self.clock.now().date()  # an aware UTC time: the store's UTC day
        try:
            rows = await self.store.sla(today)
        except StoreError as exc:
            log.warning("sla_publish_failed", error=str(exc))
            return
        for row in rows:
            if row.day != today or self.settings.room(row.room_id) is None:
                continue
            pct = 100.0 * row.live_s / row.scheduled_s if row.scheduled_s > 0 else None
            body = {
                "day": today.isoformat(),
                "scheduled_s": round(row.scheduled_s, 1),
                "live_s": round(row.live_s, 1),
                "percent": None if pct is None else round(min(pct, 100.0), 2),
            }
            if self._sla_published.get(row.room_id) != body:
                self._sla_published[row.room_id] = body
                bridge.publish_sla(row.room_id, body)

    async def _load_output_overrides(
        self, room_ids: Sequence[str] | None = None
    ) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        stored = await self.store.all_overrides()  # one read, not one per room
        for rid in self.room_ids() if room_ids is None else room_ids:
            o = stored.get(rid, {}).get("output")
            if isinstance(o, Mapping) and o.get("url") and o.get("stream_key"):
                out[rid] = (str(o["url"]), str(o["stream_key"]))
                olog.register_secret(str(o["stream_key"]))
        return out

    # --- Control --------------------------------------------------------------------------

    def _need_room(self, room_id: str) -> None:
        if self.settings.room(room_id) is None:
            raise CommandError("unknown_room", f"room {room_id!r} is not managed here")
        if self.ownership is not None and not (
            self.ownership.is_owned(room_id, self.clock.now())
            and self.supervisor is not None
            and self.supervisor.supervises(room_id)
        ):
            self._not_owner(room_id)

    def _not_owner(self, room_id: str) -> None:
        owner = self.ownership.owner_of(room_id) if self.ownership else None
        if owner is not None and owner != self.instance_id:
            # Every instance hears every command; the owner answers it. Staying silent here
            # keeps the requester from getting a second, contradicting reply.
            raise CommandError("owned_elsewhere", f"room {room_id!r} is owned by {owner}")
        raise CommandError(
            "not_owner",
            f"room {room_id!r} is owned by instance {owner or '(none right now)'}, "
            f"not by this one ({self.instance_id}); send it there or retry",
        )

    def _post(self, room_id: str, event: model.Event) -> None:
        self._need_room(room_id)
        assert self.supervisor is not None
        if not self.supervisor.post(room_id, event):
            if self.ownership is not None:
                self._not_owner(room_id)
            raise CommandError("unknown_room", f"room {room_id!r} has no worker")

    def room_ids(self) -> Sequence[str]:
        return [r.id for r in self.settings.rooms]

    def rooms_json(self) -> list[Mapping[str, Any]]:
        """Every room this instance works on (with leases: the rooms it owns)."""
        if self.ownership is not None and self.supervisor is not None:
            now = self.clock.now()
            owned = [r for r in self.supervisor.room_ids() if self.ownership.is_owned(r, now)]
            return [self.room_state(rid) for rid in owned]
        return [self.room_state(rid) for rid in self.room_ids()]

    def room_state(self, room_id: str) -> Mapping[str, Any]:
        from orchestrator.mqtt.topics import snapshot_json

        self._need_room(room_id)
        assert self.supervisor is not None
        state = snapshot_json(self.supervisor.snapshot(room_id))
        window = self.scheduler.next_window(room_id, self.clock.now()) if self.scheduler else None
        if window is not None:
            state["next_window"] = {
                "start": window.start.isoformat(),
                "end": window.end.isoformat() if window.end else None,
            }
        return state

    async def start(self, room_id: str, *, until: datetime | None, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.OrderChanged(order=model.Order.ON, deadline=until, cause=cause))
        return {"accepted": True}

    async def stop(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.OrderChanged(order=model.Order.OFF, cause=cause))
        return {"accepted": True}

    async def restart(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.RestartRequested(cause=cause))
        return {"accepted": True}

    async def refresh_output(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.RefreshRequested(cause=cause))
        return {"accepted": True}

    async def set_output(
        self, room_id: str, *, url: str, stream_key: str, cause: str
    ) -> Mapping[str, Any]:
        self._need_room(room_id)
        olog.register_secret(stream_key)
        ov = dict(await self.store.get_overrides(room_id))
        ov["output"] = {"url": url, "stream_key": stream_key}
        await self.store.put_overrides(room_id, ov)
        self._outputs[room_id] = (url, stream_key)
        self._post(room_id, model.OutputChanged(cause=cause))
        return {"accepted": True, "output_url": url}

    async def reset(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.Reset(cause=cause))
        return {"accepted": True}

    async def insert_script(
        self, room_id: str, *, text: str, play_type: str, cause: str
    ) -> Mapping[str, Any]:
        self._need_room(room_id)
        assert self.supervisor is not None
        return await self.supervisor.insert_script(
            room_id, text=text, play_type=play_type, cause=cause
        )

    async def _schedule_override(
        self, room_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Mapping[str, Any]:
        self._need_room(room_id)
        ov = dict(await self.store.get_overrides(room_id))
        sched = change(dict(ov.get("schedule", {})))
        ov["schedule"] = sched
        await self.store.put_overrides(room_id, ov)
        await self._apply_schedules()
        return {"schedule": sched}

    async def pause_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        from orchestrator.schedule import windows

        return await self._schedule_override(room_id, windows.pause)

    async def resume_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        from orchestrator.schedule import windows

        return await self._schedule_override(room_id, windows.resume)

    async def add_window(
        self, room_id: str, *, start: datetime, end: datetime, cause: str
    ) -> Mapping[str, Any]:
        from orchestrator.schedule import windows

        if end <= start:
            raise CommandError("bad_payload", "end must be after start")
        return await self._schedule_override(room_id, lambda ov: windows.add_window(ov, start, end))

    async def skip_next_window(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        from orchestrator.schedule import windows
        from orchestrator.schedule.preview import schedule_for_room

        self._need_room(room_id)
        room = self.settings.room(room_id)
        assert room is not None
        sched = schedule_for_room(room, self.settings)
        now = self.clock.now()
        return await self._schedule_override(room_id, lambda ov: windows.skip_next(ov, sched, now))

    def _reload_credentials(self, new: CloudSettings) -> None:
        """Reload used to keep the AK/SK the client was built with: swap them when rotated."""
        old = self.settings.cloud
        keys = ("auth", "ak", "sk", "security_token", "password", "iam_user", "iam_domain")
        if self.client is None or all(getattr(old, k) == getattr(new, k) for k in keys):
            return
        self.client.set_auth(self._build_auth(new))
        log.info("cloud_credentials_reloaded")

    async def reload(self, *, cause: str) -> Mapping[str, Any]:
        """Re-read the config; apply rooms and schedules without touching jobs still desired."""
        systemd.reloading()
        try:
            new = load_settings(self.config_path)
        except ConfigError as exc:
            systemd.ready(self._status_text())  # end the reload systemd saw begin; nothing changed
            raise CommandError("bad_config", str(exc)) from exc
        register_secrets(new)
        self._reload_credentials(new.cloud)
        old_ids = {r.id for r in self.settings.rooms}
        new_ids = {r.id for r in new.rooms}
        self.settings = new
        assert self.supervisor is not None
        for rid in sorted(new_ids - old_ids):
            if self.ownership is None:  # with leases the next ownership tick picks it up
                self.supervisor.add_room(rid)
        for rid in sorted(old_ids - new_ids):
            await self.supervisor.remove_room(rid, stop_job=new.reload.stop_removed, cause=cause)
            self.sla.forget(rid)
            self._sla_published.pop(rid, None)
        await self._apply_schedules()
        if self.bridge is not None:  # a SIGHUP reload too: rooms in bridge/info and discovery
            self.bridge.config_reloaded()
        systemd.ready(self._status_text())
        log.info(
            "config_reloaded",
            added=sorted(new_ids - old_ids),
            removed=sorted(old_ids - new_ids),
            cause=cause,
        )
        return {
            "rooms": sorted(new_ids),
            "added": sorted(new_ids - old_ids),
            "removed": sorted(old_ids - new_ids),
        }


_SLA_CHUNK = 500  # (room, day) rows per SLA flush transaction

_S = model.RoomState
_RUNG_FAILED = frozenset({_S.RESTARTING, _S.BACKOFF, _S.QUARANTINED})


def _rung(snap: model.Snapshot) -> str:
    """The ladder rung a room was on (its state before LIVE, or before the next rung)."""
    if snap.state is _S.DEGRADED:
        return "self"  # the service's own reconnect, within the grace
    if snap.state is _S.REFRESHING:
        index = snap.extra.get("output_index")
        return "backup_output" if isinstance(index, int) and index > 0 else "refresh"
    return "restart"


def _observe_recovery(metrics: Metrics, t: Transition, down_since: datetime) -> None:
    """A state change during a drop that opened at ``down_since`` (when the stream stopped,
    as the SLA counts it): back on air, by the rung that did it, or a rung that gave up."""
    before, after = t.before.state, t.after.state
    if after is _S.LIVE:
        metrics.recovery(_rung(t.before), "ok", (t.at - down_since).total_seconds())
    elif before is _S.DEGRADED and after is _S.REFRESHING:
        metrics.recovery("self", "failed")
    elif before in (_S.REFRESHING, _S.STARTING) and after in _RUNG_FAILED:
        metrics.recovery(_rung(t.before), "failed")


def _leases_on(settings: Settings) -> bool:
    """Room ownership by leases: explicit, or "auto" = on for a PostgreSQL store."""
    mode = settings.store.leases
    return mode == "on" or (mode == "auto" and settings.store.url.startswith("postgresql"))


class _CallbackMetrics:
    """Adapts the receiver's metrics protocol to :class:`Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def callback(self, event_type: str, result: str) -> None:
        self._m.callback(event_type, result)

    def lag(self, seconds: float) -> None:
        self._m.callback_lag(seconds)


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
