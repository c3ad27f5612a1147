"""The MQTT bridge: keeps a broker connection, publishes room state/events, serves commands.

Shape of the loop (one ``run()`` task, supervised by the app's TaskGroup)::

    connect (LWT offline) ─► birth: online + info ─► subscribe ─► republish all room states
         ▲                                                │
         │ jittered capped backoff              receiver ◄┴► sender   (first failure ends both)
         └──────────── MqttError ◄──────────────────┘
    (the backoff resets once a connection has lasted STABLE_AFTER_S)

:class:`MqttBridge` is the facade and holds the connection loop, the birth (online, bridge/info,
subscriptions, Home Assistant discovery) and the goodbye. Its parts, one subject each:

- :mod:`.outbox` — the bounded outboxes rooms publish into without blocking, and the sender's
  draining of them (states, events, replies, the full republish after drops);
- :mod:`.intake` — reading commands and relayed callbacks, refusing what must not run, and the
  per-room lanes that run commands in order with backpressure;
- :mod:`.runner` — one command exactly once: ACL, freshness and the stored replies that make
  a resent id idempotent;
- :mod:`.stats` — the counters all of them write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.subscribeoptions import SubscribeOptions

from orchestrator.control import Control
from orchestrator.mqtt.discovery import HaDiscovery
from orchestrator.mqtt.intake import CommandIntake, RelayHandler
from orchestrator.mqtt.link import Backoff, make_client, tls_context
from orchestrator.mqtt.outbox import PUBLISH_BATCH, Outbox, Outgoing, dumps
from orchestrator.mqtt.runner import OWNED_ELSEWHERE, UNSTORED_CODES, CommandRunner, ReplyStore
from orchestrator.mqtt.stats import BridgeStats
from orchestrator.mqtt.topics import OFFLINE, ONLINE, Topics, validate_publish_topic
from orchestrator.rooms.model import Snapshot
from orchestrator.settings import MqttSettings

__all__ = [
    "OWNED_ELSEWHERE",
    "UNSTORED_CODES",
    "BridgeStats",
    "MqttBridge",
    "RelayHandler",
    "ReplyStore",
]

log = structlog.get_logger(__name__)

_GOODBYE_TIMEOUT_S = 2.0
STABLE_AFTER_S = 10.0
"""The reconnect backoff resets only after a connection lasted this long, so two daemons
fighting over one client id (or a broker that accepts then drops us) back off instead of
flapping at the base delay."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class MqttBridge:
    """Connects the daemon's :class:`Control` surface and room snapshots to an MQTT broker."""

    def __init__(
        self,
        settings: MqttSettings,
        control: Control,
        store: ReplyStore,
        *,
        version: str,
        clock: Callable[[], datetime] = _utcnow,
        on_relayed_callback: RelayHandler | None = None,
        on_connected: Callable[[bool], None] | None = None,
        max_concurrency: int = 16,
        max_pending: int = 1000,
        reply_limit: int = 1000,
        backoff: Backoff | None = None,
        room_name: Callable[[str], str | None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics.for_prefix(settings.prefix)
        # Home Assistant discovery (off by default): what we announced, and stale configs of
        # rooms no longer configured (seen retained on the broker) waiting to be cleared
        self._ha = (
            HaDiscovery(self.topics, settings.ha_discovery_prefix, version)
            if settings.ha_discovery
            else None
        )
        self._room_name = room_name or (lambda _room_id: None)
        self._ha_announced: set[str] = set()
        self._ha_clear: set[str] = set()
        if settings.consume_relay:
            validate_publish_topic(settings.callbacks_topic)
            if on_relayed_callback is None:
                raise ValueError("consume_relay needs an on_relayed_callback handler")
        self._control = control
        self._version = version
        self._on_connected = on_connected
        self._v5 = settings.protocol == "5"
        self._backoff = backoff or Backoff(cap_s=settings.reconnect_max_s)
        self.stats = BridgeStats()
        self.outbox = Outbox(settings, self.topics, control, self.stats, reply_limit=reply_limit)
        runner = CommandRunner(
            settings,
            control,
            store,
            self.stats,
            clock=clock,
            on_reload=self.outbox.after_reload,
        )
        self._intake = CommandIntake(
            settings,
            self.topics,
            self.stats,
            self.outbox,
            runner,
            ha=self._ha,
            on_ha_config=self._ha_config_seen,
            on_relayed_callback=on_relayed_callback,
            max_concurrency=max_concurrency,
            max_pending=max_pending,
        )
        self._connected = asyncio.Event()
        self._tls = tls_context(settings)
        self._connected_at: float | None = None

    # ------------------------------------------------------------------ outward API (sync)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Return once the bridge is connected, subscribed and has sent its birth message."""
        await self._connected.wait()

    def pending_states(self) -> int:
        return len(self.outbox.states)

    def pending_events(self) -> int:
        return len(self.outbox.events)

    def pending_replies(self) -> int:
        return len(self.outbox.replies)

    def publish_state(self, room_id: str, snapshot: Snapshot | Mapping[str, Any]) -> None:
        """Queue a room's retained state; never blocks (see :meth:`Outbox.publish_state`)."""
        self.outbox.publish_state(room_id, snapshot)

    def publish_event(self, room_id: str, event: Mapping[str, Any]) -> None:
        """Queue a non-retained room event; never blocks (see :meth:`Outbox.publish_event`).

        Build payloads with ``orchestrator.payloads`` (transition, alert and callback events).
        """
        self.outbox.publish_event(room_id, event)

    def publish_sla(self, room_id: str, sla: Mapping[str, Any]) -> None:
        """Queue a room's retained SLA of today (see :meth:`Outbox.publish_sla`)."""
        self.outbox.publish_sla(room_id, sla)

    def config_reloaded(self) -> None:
        """The daemon re-read its config (SIGHUP or a reload command): rooms may have changed,
        so bridge/info, the discovery configs and every room state are published again."""
        self.outbox.after_reload()

    # ------------------------------------------------------------------ the connection loop

    async def run(self) -> None:
        """Stay connected until cancelled; on cancellation say ``offline`` and disconnect."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._connected_at = None
                try:
                    await self._connection()
                except aiomqtt.MqttError as exc:
                    self._log_loss(exc)
                finally:
                    if self._connected.is_set():
                        self._connected.clear()
                        self.stats.connected = False
                        self._notify(False)
                if self._connected_at is not None:
                    self.stats.connection_losses += 1
                    if loop.time() - self._connected_at >= STABLE_AFTER_S:
                        self._backoff.reset()
                delay = self._backoff.next_delay()
                log.info("mqtt_reconnect_scheduled", delay_s=round(delay, 3))
                await asyncio.sleep(delay)
        finally:
            await self._intake.cancel_lanes()

    async def _connection(self) -> None:
        client = make_client(self.settings, self.topics, tls=self._tls)
        async with client:
            try:
                await self._birth(client)
                self._connected_at = asyncio.get_running_loop().time()
                self.stats.connects += 1
                self.stats.connected = True
                self._connected.set()
                self._notify(True)
                log.info(
                    "mqtt_connected",
                    host=self.settings.host,
                    port=self.settings.port,
                    client_id=self.settings.client_id,
                )
                await self._serve(client)
            except asyncio.CancelledError:
                await self._goodbye(client)
                raise

    def _notify(self, connected: bool) -> None:
        """Tell readiness/metrics; their failure must not take the link down."""
        if self._on_connected is None:
            return
        try:
            self._on_connected(connected)
        except Exception as exc:  # foreign callback: log it, keep the link
            log.error("mqtt_on_connected_failed", error_type=type(exc).__name__, exc_info=exc)

    async def aclose(self) -> None:
        """Cancel queued and running commands (``run()`` does this too when cancelled)."""
        await self._intake.cancel_lanes()

    def _log_loss(self, exc: aiomqtt.MqttError) -> None:
        # paho reports a session take-over (same client id elsewhere) only as an unspecified
        # error, so the reason is logged as given; repeated quick losses show in the backoff.
        cause = exc.__cause__
        log.warning(
            "mqtt_connection_lost",
            error=str(exc)[:200],
            reason=str(cause)[:200] if cause is not None else None,
        )

    async def _birth(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.bridge_state, ONLINE, qos=1, retain=True)
        await self._publish_info(client)
        sub: dict[str, Any] = {"qos": 1}
        if self._v5:
            # retainAsPublished: a live retained publish keeps its flag, so it is ignored too.
            sub = {"options": SubscribeOptions(qos=1, retainAsPublished=True)}
        for topic in self.topics.command_filters():
            await client.subscribe(topic, **sub)
        if self.settings.consume_relay:
            await client.subscribe(self.settings.callbacks_topic, qos=1)
        if self._ha is not None:  # retained configs of removed rooms come back: clear them
            await client.subscribe(self._ha.config_filter, qos=1)
        self.outbox.resync = True  # the broker may have lost (or never had) our retained states

    async def _publish_info(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.bridge_info, dumps(self._info()), qos=1, retain=True)
        if self._ha is not None:
            await self._publish_discovery(client, self._ha)

    async def _publish_discovery(self, client: aiomqtt.Client, ha: HaDiscovery) -> None:
        """Announce every configured room (at each birth: the broker may have lost them, and
        after a reload) and clear what we announced for rooms that are gone."""
        rooms = [(r, self._room_name(r)) for r in self._control.room_ids()]
        configs = ha.payloads(rooms)
        gone = (self._ha_announced | self._ha_clear) - configs.keys()
        out = [Outgoing(t, p, retain=True) for t, p in configs.items()]
        out += [Outgoing(t, b"", retain=True) for t in sorted(gone)]
        for start in range(0, len(out), PUBLISH_BATCH):
            await self.outbox.send_batch(client, out[start : start + PUBLISH_BATCH], None)
        self._ha_announced = set(configs)
        self._ha_clear.clear()
        log.info("mqtt_ha_discovery_published", rooms=len(rooms), removed=len(gone))

    def _ha_config_seen(self, topic: str, payload: bytes) -> None:
        """A retained discovery config under our node id: stale if we no longer announce it."""
        if payload and topic not in self._ha_announced:
            self._ha_clear.add(topic)
            self.outbox.wake.set()

    async def _clear_ha_stale(self, client: aiomqtt.Client) -> None:
        stale = sorted(self._ha_clear - self._ha_announced)
        self._ha_clear.clear()
        for start in range(0, len(stale), PUBLISH_BATCH):
            batch = [Outgoing(t, b"", retain=True) for t in stale[start : start + PUBLISH_BATCH]]
            await self.outbox.send_batch(client, batch, None)
        log.info("mqtt_ha_discovery_cleared", configs=len(stale))

    def _info(self) -> dict[str, Any]:
        s = self.settings
        return {
            "version": self._version,
            "rooms": sorted(self._control.room_ids()),
            "config": {
                "prefix": s.prefix,
                "client_id": s.client_id,
                "protocol": s.protocol,
                "tls": s.tls,
                "authenticated": s.username is not None,
                "keepalive_s": s.keepalive_s,
                "queue_limit": s.queue_limit,
                "command_max_age_s": s.command_max_age_s,
                "acl_clients": sorted(s.acl),
                "consume_relay": s.consume_relay,
            },
        }

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Clean shutdown: a graceful DISCONNECT suppresses the LWT, so say offline ourselves."""
        try:
            async with asyncio.timeout(_GOODBYE_TIMEOUT_S):
                await client.publish(self.topics.bridge_state, OFFLINE, qos=1, retain=True)
            log.info("mqtt_offline_published")
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("mqtt_offline_publish_failed", error=str(exc)[:200])

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Run receiver and sender until the first of them fails; then stop the other."""
        tasks = {
            asyncio.create_task(self._intake.receive(client), name="mqtt-receiver"),
            asyncio.create_task(self._sender(client), name="mqtt-sender"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        for t in done:
            t.result()  # re-raise MqttError (or a bug) from whichever task ended first

    # ------------------------------------------------------------------ sender

    async def _sender(self, client: aiomqtt.Client) -> None:
        outbox = self.outbox
        while True:
            outbox.wake.clear()
            if outbox.info_dirty:
                outbox.info_dirty = False
                await self._publish_info(client)
            if self._ha_clear:
                await self._clear_ha_stale(client)
            await outbox.drain(client)
            if not outbox.backlog():
                await outbox.wake.wait()
