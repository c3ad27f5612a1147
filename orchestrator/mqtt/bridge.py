"""The MQTT bridge: keeps a broker connection, publishes room state/events, serves commands.

Shape of the loop (one ``run()`` task, supervised by the app's TaskGroup)::

    connect (LWT offline) ─► birth: online + info ─► subscribe ─► republish all room states
         ▲                                                │
         │ jittered capped backoff              receiver ◄┴► sender   (first failure ends both)
         └──────────── MqttError ◄──────────────────┘
    (the backoff resets once a connection has lasted STABLE_AFTER_S)

Publishing never blocks a room: :meth:`MqttBridge.publish_state` and
:meth:`MqttBridge.publish_event` only put data in bounded in-memory outboxes (latest state per
room wins; oldest event dropped and counted) that the sender drains while connected. If state
updates had to be dropped, every room is republished from Control afterwards, so the retained
view converges.

Commands: each incoming command goes to a *lane* (its room, or the bridge); a lane runs its
commands strictly in order, lanes run in parallel up to ``max_concurrency``, and at most
``max_pending`` commands wait in total (beyond that the receiver stops reading: backpressure
onto the broker instead of unbounded memory). Replies go through an outbox too, so a reply
computed during a reconnect is still delivered.

Retained commands are ignored with the warning ``mqtt_retained_command_ignored`` and answered
with an error reply (code ``retained_ignored``) so the sender learns why nothing happened; the
reply is repeated whenever the broker redelivers the retained message (on each reconnect) —
clear it with an empty retained publish. Only replies of commands that reached Control are
stored for idempotency; a refused command (bad payload, expired, forbidden…) can be corrected
and re-sent with the same id. Read-only commands (``get``, ``list_rooms``) are never stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from orchestrator.control import CommandError, Control
from orchestrator.mqtt.commands import (
    Command,
    CommandRejected,
    check_acl,
    check_fresh,
    error_reply,
    ok_reply,
    parse_command,
    peek_id,
    redact,
)
from orchestrator.mqtt.discovery import HaDiscovery, sla_topic
from orchestrator.mqtt.link import MAX_INFLIGHT, Backoff, make_client, tls_context
from orchestrator.mqtt.topics import (
    OFFLINE,
    ONLINE,
    CommandTarget,
    TopicError,
    Topics,
    is_valid_room_id,
    validate_publish_topic,
)
from orchestrator.payloads import snapshot_json
from orchestrator.rooms.model import Snapshot
from orchestrator.settings import MqttSettings
from orchestrator.store.base import StoreError

__all__ = ["BridgeStats", "MqttBridge", "RelayHandler", "ReplyStore"]

log = structlog.get_logger(__name__)

# Multi-instance: every instance receives every command. The owner acts and answers; the others
# stay silent (owned_elsewhere), or answer not_owner when no instance owns the room right now.
# Neither answer is stored as the command's reply, so the owner's result is what a replay gets.
OWNED_ELSEWHERE = "owned_elsewhere"
UNSTORED_CODES = frozenset({OWNED_ELSEWHERE, "not_owner"})


def _code(reply: Mapping[str, Any]) -> str | None:
    err = reply.get("error")
    return str(err.get("code")) if isinstance(err, Mapping) and err.get("code") else None


RelayHandler = Callable[[bytes, Properties | None], Awaitable[None]]
"""Receives one relayed callback envelope (raw payload + v5 properties)."""

_PUBLISH_BATCH = MAX_INFLIGHT
_GOODBYE_TIMEOUT_S = 2.0
STABLE_AFTER_S = 10.0
"""The reconnect backoff resets only after a connection lasted this long, so two daemons
fighting over one client id (or a broker that accepts then drops us) back off instead of
flapping at the base delay."""


class ReplyStore(Protocol):
    """The part of :class:`orchestrator.store.base.Store` the bridge needs (idempotency)."""

    async def get_reply(self, command_id: str) -> Mapping[str, Any] | None: ...
    async def put_reply(self, command_id: str, reply: Mapping[str, Any], at: datetime) -> bool: ...


@dataclass(slots=True)
class BridgeStats:
    """Counters for /metrics and /readyz (read them; the bridge writes them)."""

    connected: bool = False
    connects: int = 0
    connection_losses: int = 0
    commands_received: int = 0
    commands_rejected: int = 0
    commands_replayed: int = 0
    retained_ignored: int = 0
    relay_received: int = 0
    relay_failed: int = 0
    states_dropped: int = 0
    events_dropped: int = 0
    replies_dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Out:
    topic: str
    payload: bytes
    retain: bool = False
    properties: Properties | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    lane: str
    topic: str
    payload: bytes
    target: CommandTarget | None  # None = relayed callback
    reply_topic: str  # "" for relayed callbacks (no reply)
    correlation: bytes | None
    properties: Properties | None


def _dumps(obj: Any) -> bytes:
    def default(o: object) -> str:
        if isinstance(o, datetime):
            return o.isoformat()
        return str(o)

    return json.dumps(obj, default=default, separators=(",", ":"), ensure_ascii=False).encode()


def _payload(msg: aiomqtt.Message) -> bytes:
    p = msg.payload
    if isinstance(p, bytes | bytearray):
        return bytes(p)
    return b"" if p is None else str(p).encode()


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
        self._store = store
        self._version = version
        self._clock = clock
        self._on_relayed = on_relayed_callback
        self._on_connected = on_connected
        self._v5 = settings.protocol == "5"
        self._backoff = backoff or Backoff(cap_s=settings.reconnect_max_s)
        self.stats = BridgeStats()
        # outboxes (bounded; filled synchronously by rooms, drained by the sender)
        self._states: dict[str, bytes] = {}
        self._events: deque[_Out] = deque()
        self._replies: deque[_Out] = deque()
        self._reply_limit = reply_limit
        self._resync = False
        self._resync_rooms: deque[str] = deque()
        self._info_dirty = False
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        # command lanes
        self._lanes: dict[str, deque[_Job]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._exec = asyncio.Semaphore(max_concurrency)
        self._pending = asyncio.Semaphore(max_pending)
        self._inflight: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
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
        return len(self._states)

    def pending_events(self) -> int:
        return len(self._events)

    def pending_replies(self) -> int:
        return len(self._replies)

    def publish_state(self, room_id: str, snapshot: Snapshot | Mapping[str, Any]) -> None:
        """Queue a room's retained state. Never blocks; call from the event loop's thread.

        ``snapshot`` is a :class:`Snapshot` (rendered with ``payloads.snapshot_json``) or that
        JSON already. Latest per room wins; at most ``queue_limit`` rooms wait. A room beyond
        that is dropped (counted) and every room is republished from Control once the backlog
        drains, so the retained view still converges.
        """
        if not is_valid_room_id(room_id):
            log.warning("mqtt_state_invalid_room", room_id=room_id[:128])
            return
        if room_id not in self._states and len(self._states) >= self.settings.queue_limit:
            self.stats.states_dropped += 1
            self._resync = True
            return
        data = snapshot_json(snapshot) if isinstance(snapshot, Snapshot) else dict(snapshot)
        self._states[room_id] = _dumps(redact(data))
        self._wake.set()

    def publish_event(self, room_id: str, event: Mapping[str, Any]) -> None:
        """Queue a non-retained room event. Never blocks; drops (and counts) the oldest.

        Build payloads with ``orchestrator.payloads`` (transition, alert and callback events).
        """
        if not is_valid_room_id(room_id):
            log.warning("mqtt_event_invalid_room", room_id=room_id[:128])
            return
        if len(self._events) >= self.settings.queue_limit:
            self._events.popleft()
            self.stats.events_dropped += 1
        self._events.append(_Out(self.topics.room_events(room_id), _dumps(redact(dict(event)))))
        self._wake.set()

    def publish_sla(self, room_id: str, sla: Mapping[str, Any]) -> None:
        """Queue a room's retained SLA of today (``{prefix}/rooms/{room}/sla``, read by Home
        Assistant's SLA sensor). Shares the events' bounded queue: a dropped update is
        superseded by the next flush's a minute later."""
        if not is_valid_room_id(room_id):
            log.warning("mqtt_sla_invalid_room", room_id=room_id[:128])
            return
        if len(self._events) >= self.settings.queue_limit:
            self._events.popleft()
            self.stats.events_dropped += 1
        topic = sla_topic(self.topics, room_id)
        self._events.append(_Out(topic, _dumps(dict(sla)), retain=True))
        self._wake.set()

    def config_reloaded(self) -> None:
        """The daemon re-read its config (SIGHUP or a reload command): rooms may have changed,
        so bridge/info, the discovery configs and every room state are published again."""
        self._after_reload()

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
            await self._cancel_lanes()

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
        await self._cancel_lanes()

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
        self._resync = True  # the broker may have lost (or never had) our retained states

    async def _publish_info(self, client: aiomqtt.Client) -> None:
        await client.publish(self.topics.bridge_info, _dumps(self._info()), qos=1, retain=True)
        if self._ha is not None:
            await self._publish_discovery(client, self._ha)

    async def _publish_discovery(self, client: aiomqtt.Client, ha: HaDiscovery) -> None:
        """Announce every configured room (at each birth: the broker may have lost them, and
        after a reload) and clear what we announced for rooms that are gone."""
        rooms = [(r, self._room_name(r)) for r in self._control.room_ids()]
        configs = ha.payloads(rooms)
        gone = (self._ha_announced | self._ha_clear) - configs.keys()
        out = [_Out(t, p, retain=True) for t, p in configs.items()]
        out += [_Out(t, b"", retain=True) for t in sorted(gone)]
        for start in range(0, len(out), _PUBLISH_BATCH):
            await self._send_batch(client, out[start : start + _PUBLISH_BATCH], None)
        self._ha_announced = set(configs)
        self._ha_clear.clear()
        log.info("mqtt_ha_discovery_published", rooms=len(rooms), removed=len(gone))

    def _ha_config_seen(self, topic: str, payload: bytes) -> None:
        """A retained discovery config under our node id: stale if we no longer announce it."""
        if payload and topic not in self._ha_announced:
            self._ha_clear.add(topic)
            self._wake.set()

    async def _clear_ha_stale(self, client: aiomqtt.Client) -> None:
        stale = sorted(self._ha_clear - self._ha_announced)
        self._ha_clear.clear()
        for start in range(0, len(stale), _PUBLISH_BATCH):
            batch = [_Out(t, b"", retain=True) for t in stale[start : start + _PUBLISH_BATCH]]
            await self._send_batch(client, batch, None)
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
            asyncio.create_task(self._receiver(client), name="mqtt-receiver"),
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
        while True:
            self._wake.clear()
            if self._info_dirty:
                self._info_dirty = False
                await self._publish_info(client)
            if self._ha_clear:
                await self._clear_ha_stale(client)
            await self._drain(client)
            if not self._backlog():
                await self._wake.wait()

    def _backlog(self) -> bool:
        return bool(
            self._replies or self._states or self._events or self._resync or self._resync_rooms
        )

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Round-robin one batch per source so no source starves another (replies first)."""
        while self._backlog():
            if self._resync:  # (re)start a full republish from Control's current view
                self._resync = False
                self._resync_rooms = deque(self._control.room_ids())
            if self._replies:
                await self._send_batch(client, self._take(self._replies), self._replies)
            if self._states:
                await self._send_batch(client, self._take_states(), None)
            if self._events:
                await self._send_batch(client, self._take(self._events), self._events)
            if self._resync_rooms:
                await self._send_batch(client, self._take_resync(), None)
                if not self._resync_rooms:
                    log.info("mqtt_states_republished")

    @staticmethod
    def _take(q: deque[_Out]) -> list[_Out]:
        return [q.popleft() for _ in range(min(_PUBLISH_BATCH, len(q)))]

    def _take_states(self) -> list[_Out]:
        batch: list[_Out] = []
        for room_id in list(self._states)[:_PUBLISH_BATCH]:
            payload = self._states.pop(room_id)
            batch.append(_Out(self.topics.room_state(room_id), payload, retain=True))
        return batch

    async def _send_batch(
        self, client: aiomqtt.Client, batch: list[_Out], requeue: deque[_Out] | None
    ) -> None:
        results = await asyncio.gather(
            *(
                client.publish(m.topic, m.payload, qos=1, retain=m.retain, properties=m.properties)
                for m in batch
            ),
            return_exceptions=True,
        )
        failed = [m for m, r in zip(batch, results, strict=True) if isinstance(r, BaseException)]
        if not failed:
            return
        if requeue is not None:  # replies/events go back in front, in order
            requeue.extendleft(reversed(failed))
        else:  # states: the full republish after the reconnect covers them
            self._resync = True
        first = next(r for r in results if isinstance(r, BaseException))
        if isinstance(first, aiomqtt.MqttError):
            raise first
        raise aiomqtt.MqttError(f"publish failed: {type(first).__name__}") from first

    def _take_resync(self) -> list[_Out]:
        """Next batch of the full republish: fresh snapshots supersede pending updates."""
        batch: list[_Out] = []
        for _ in range(min(_PUBLISH_BATCH, len(self._resync_rooms))):
            room_id = self._resync_rooms.popleft()
            self._states.pop(room_id, None)
            try:
                snap = self._control.room_state(room_id)
            except CommandError:
                continue  # removed by a reload in the meantime
            batch.append(
                _Out(self.topics.room_state(room_id), _dumps(redact(dict(snap))), retain=True)
            )
        return batch

    def _queue_reply(self, out: _Out) -> None:
        if len(self._replies) >= self._reply_limit:
            self._replies.popleft()
            self.stats.replies_dropped += 1
        self._replies.append(out)
        self._wake.set()

    # ------------------------------------------------------------------ receiver

    async def _receiver(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            topic = msg.topic.value
            if self._ha is not None and self._ha.is_config_topic(topic):
                self._ha_config_seen(topic, _payload(msg))
                continue
            if self.settings.consume_relay and topic == self.settings.callbacks_topic:
                self.stats.relay_received += 1
                await self._pending.acquire()
                self._enqueue(_Job("relay", topic, _payload(msg), None, "", None, msg.properties))
                continue
            await self._on_command_message(msg)

    async def _on_command_message(self, msg: aiomqtt.Message) -> None:
        topic = msg.topic.value
        payload = _payload(msg)
        try:
            target = self.topics.parse_command_topic(topic)
        except TopicError as exc:
            log.warning("mqtt_command_topic_refused", topic=topic[:256], reason=str(exc))
            return
        self.stats.commands_received += 1
        reply_topic, correlation, refused = self._reply_route(topic, msg.properties)
        if len(payload) > self.settings.max_payload_bytes:
            # Refused unread: parsing a 50 MB JSON object costs twice its size in memory.
            self.stats.commands_rejected += 1
            log.warning(
                "mqtt_command_too_large",
                topic=topic,
                size=len(payload),
                limit=self.settings.max_payload_bytes,
            )
            self._reply(
                reply_topic,
                correlation,
                error_reply(
                    None,
                    "payload_too_large",
                    f"command payload is {len(payload)} bytes; the limit is "
                    f"{self.settings.max_payload_bytes} (mqtt.max_payload_bytes)",
                ),
            )
            return
        if refused:
            self.stats.commands_rejected += 1
            cid = peek_id(payload)
            log.warning(
                "mqtt_response_topic_refused",
                topic=topic,
                command_id=cid,
                response_topic=str(getattr(msg.properties, "ResponseTopic", ""))[:256],
            )
            self._reply(
                reply_topic,
                correlation,
                error_reply(
                    cid,
                    "reply_topic_refused",
                    "the v5 response topic is outside mqtt.reply_topic_prefixes or is one of "
                    "the daemon's own topics; nothing was done",
                ),
            )
            return
        if msg.retain:
            self.stats.retained_ignored += 1
            cid = peek_id(payload)
            log.warning("mqtt_retained_command_ignored", topic=topic, command_id=cid)
            self._reply(
                reply_topic,
                correlation,
                error_reply(
                    cid,
                    "retained_ignored",
                    "retained commands are ignored; publish commands without the retain flag",
                ),
            )
            return
        await self._pending.acquire()
        self._enqueue(
            _Job(target.lane, topic, payload, target, reply_topic, correlation, msg.properties)
        )

    def _reply_route(self, topic: str, props: Properties | None) -> tuple[str, bytes | None, bool]:
        """(reply topic, correlation data, response topic refused).

        A v5 response topic is used when it is allowed (:meth:`_response_allowed`); otherwise
        the answer goes to ``{command topic}/reply`` and a refused topic is reported.
        """
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        if isinstance(response, str):
            try:
                if self._response_allowed(validate_publish_topic(response)):
                    return response, correlation, False
            except TopicError:
                pass
            return Topics.default_reply(topic), correlation, True
        return Topics.default_reply(topic), correlation, False

    def _response_allowed(self, response: str) -> bool:
        """Only a configured reply namespace, and never a topic the daemon itself owns.

        Under our prefix only the default reply topics (``…/command/reply``) are allowed: a
        reply published to ``bridge/state``, a room's state or another room's command topic
        would overwrite retained state or be read back as a command.
        """
        if response == self.settings.callbacks_topic:
            return False
        own = self.topics.prefix
        if response == own or response.startswith(own + "/"):
            if not response.endswith("/command/reply"):
                return False
            try:
                self.topics.parse_command_topic(response.removesuffix("/reply"))
            except TopicError:
                return False
            return True
        return any(
            response == p or response.startswith(p + "/")
            for p in self.settings.reply_topic_prefixes
        )

    def _reply(self, topic: str, correlation: bytes | None, reply: Mapping[str, Any]) -> None:
        props: Properties | None = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = "application/json"
            if correlation is not None:
                props.CorrelationData = correlation
        self._queue_reply(_Out(topic, _dumps(reply), properties=props))

    # ------------------------------------------------------------------ lanes

    def _enqueue(self, job: _Job) -> None:
        """Append to the job's lane; start the lane worker if idle. Caller holds a pending slot."""
        lane = self._lanes.get(job.lane)
        if lane is None:
            lane = self._lanes[job.lane] = deque()
        lane.append(job)
        if job.lane not in self._lane_tasks:
            self._lane_tasks[job.lane] = asyncio.create_task(
                self._lane_worker(job.lane, lane), name=f"mqtt-lane:{job.lane}"
            )

    async def _lane_worker(self, name: str, lane: deque[_Job]) -> None:
        try:
            while lane:
                job = lane.popleft()
                try:
                    async with self._exec:
                        if job.target is None:
                            await self._handle_relay(job)
                        else:
                            await self._handle_command(job, job.target)
                finally:
                    self._pending.release()
        finally:
            # No await between the emptiness check and here: nothing can slip in.
            self._lanes.pop(name, None)
            self._lane_tasks.pop(name, None)

    async def _cancel_lanes(self) -> None:
        tasks = list(self._lane_tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _handle_relay(self, job: _Job) -> None:
        if self._on_relayed is None:  # guarded in __init__
            return
        try:
            await self._on_relayed(job.payload, job.properties)
        except Exception as exc:  # the handler is foreign code; one bad envelope must not kill us
            self.stats.relay_failed += 1
            log.error("mqtt_relay_handler_failed", error_type=type(exc).__name__, exc_info=exc)

    async def _handle_command(self, job: _Job, target: CommandTarget) -> None:
        reply = await self._evaluate(job, target)
        if _code(reply) == OWNED_ELSEWHERE:
            return  # another instance owns the room and answers; see Control.owned_elsewhere
        self._reply(job.reply_topic, job.correlation, reply)

    async def _evaluate(self, job: _Job, target: CommandTarget) -> Mapping[str, Any]:
        try:
            cmd = parse_command(job.payload, target)
            check_acl(cmd, self.settings.acl)
            if cmd.room_id is not None and cmd.room_id not in set(self._control.room_ids()):
                raise CommandRejected(
                    "unknown_room", f"no room {cmd.room_id!r} is configured", command_id=cmd.id
                )
        except CommandRejected as exc:
            return self._rejected(exc, exc.command_id or peek_id(job.payload), target)
        if cmd.read_only:
            return await self._act(cmd)
        key = cmd.reply_key
        existing = self._inflight.get(key)
        if existing is not None:  # the same (room, action, id) is being executed right now
            self.stats.commands_replayed += 1
            try:
                return await asyncio.shield(existing)
            except asyncio.CancelledError:
                if not existing.cancelled():
                    raise  # we are being cancelled ourselves
                return error_reply(cmd.id, "internal", "interrupted by shutdown; resend the id")
        fut: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            reply = await self._idempotent(cmd)
            fut.set_result(reply)
            return reply
        except BaseException:
            fut.cancel()  # only cancellation gets here: _idempotent answers every error
            raise
        finally:
            del self._inflight[key]

    async def _idempotent(self, cmd: Command) -> Mapping[str, Any]:
        try:
            stored = await self._store.get_reply(cmd.reply_key)
        except StoreError as exc:
            log.error("mqtt_command_store_failed", **cmd.log_fields(), error=str(exc)[:200])
            return error_reply(cmd.id, "internal", "command store unavailable; nothing was done")
        if stored is not None:
            self.stats.commands_replayed += 1
            log.info("mqtt_command_replayed", **cmd.log_fields())
            return stored
        try:
            check_fresh(
                cmd,
                now=self._clock(),
                max_age_s=self.settings.command_max_age_s,
                max_skew_s=self.settings.command_max_skew_s,
            )
        except CommandRejected as exc:
            return self._rejected(exc, cmd.id, CommandTarget(cmd.room_id))
        # A crash between acting and storing the reply must not make a resent id act twice:
        # mark the id as started first; finding our own mark means the outcome is unknown.
        marker = f"{cmd.reply_key}\x1fstarted:{self.settings.client_id}"[:256]
        try:
            if await self._store.get_reply(marker) is not None:
                reply_unknown = error_reply(
                    cmd.id,
                    "outcome_unknown",
                    "this id was being executed when the daemon stopped; its outcome is "
                    "unknown: read the room state (action get) before sending a new command",
                )
                log.warning("mqtt_command_outcome_unknown", **cmd.log_fields())
                await self._store.put_reply(cmd.reply_key, reply_unknown, self._clock())
                return reply_unknown
            await self._store.put_reply(marker, {"started": True}, self._clock())
        except StoreError as exc:
            log.error("mqtt_command_store_failed", **cmd.log_fields(), error=str(exc)[:200])
            return error_reply(cmd.id, "internal", "command store unavailable; nothing was done")
        reply: Mapping[str, Any] = await self._act(cmd)
        if _code(reply) in UNSTORED_CODES:
            return reply  # about ownership, not the command: the owner's answer must win
        try:
            if not await self._store.put_reply(cmd.reply_key, reply, self._clock()):
                stored = await self._store.get_reply(cmd.reply_key)
                reply = stored if stored is not None else reply
        except StoreError as exc:
            log.error("mqtt_command_store_failed", **cmd.log_fields(), error=str(exc)[:200])
        return reply

    def _rejected(
        self, exc: CommandRejected, command_id: str | None, target: CommandTarget
    ) -> dict[str, Any]:
        self.stats.commands_rejected += 1
        log.warning(
            "mqtt_command_rejected",
            command_id=command_id,
            room_id=target.room_id,
            code=exc.code,
            field=exc.field,
        )
        return error_reply(command_id, exc.code, exc.message, field=exc.field)

    async def _act(self, cmd: Command) -> dict[str, Any]:
        log.info("mqtt_command_started", **cmd.log_fields())
        try:
            data = await cmd.apply(self._control)
        except CommandError as exc:
            log.warning("mqtt_command_failed", **cmd.log_fields(), code=exc.code)
            return error_reply(cmd.id, exc.code, exc.message)
        except Exception as exc:  # a bug below Control: answer, log with traceback, keep serving
            log.error(
                "mqtt_command_crashed",
                **cmd.log_fields(),
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            return error_reply(cmd.id, "internal", "internal error; see the daemon log")
        log.info("mqtt_command_done", **cmd.log_fields())
        if cmd.action == "reload":
            self._after_reload()
        return ok_reply(cmd.id, data)

    def _after_reload(self) -> None:
        """Rooms may have changed: refresh bridge/info and every retained state."""
        self._resync = True
        self._info_dirty = True
        self._wake.set()
