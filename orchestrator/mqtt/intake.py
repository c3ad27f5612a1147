"""The bridge's command intake: reading the broker's messages, refusing what must not run
(bad topic, oversized, a refused v5 response topic, retained), and running each command in its
*lane*.

A lane is a room (or the bridge); a lane runs its commands strictly in order, lanes run in
parallel up to ``max_concurrency``, and at most ``max_pending`` commands wait in total (beyond
that the receiver stops reading: backpressure onto the broker instead of unbounded memory).

Retained commands are ignored with the warning ``mqtt_retained_command_ignored`` and answered
with an error reply (code ``retained_ignored``) so the sender learns why nothing happened; the
reply is repeated whenever the broker redelivers the retained message (on each reconnect) —
clear it with an empty retained publish.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
import structlog
from paho.mqtt.properties import Properties

from orchestrator.mqtt.commands import error_reply, peek_id
from orchestrator.mqtt.discovery import HaDiscovery
from orchestrator.mqtt.outbox import Outbox
from orchestrator.mqtt.runner import OWNED_ELSEWHERE, CommandRunner, reply_code
from orchestrator.mqtt.stats import BridgeStats
from orchestrator.mqtt.topics import CommandTarget, TopicError, Topics, validate_publish_topic
from orchestrator.settings import MqttSettings

__all__ = ["CommandIntake", "RelayHandler"]

log = structlog.get_logger(__name__)

RelayHandler = Callable[[bytes, Properties | None], Awaitable[None]]
"""Receives one relayed callback envelope (raw payload + v5 properties)."""


@dataclass(frozen=True, slots=True)
class _Job:
    lane: str
    topic: str
    payload: bytes
    target: CommandTarget | None  # None = relayed callback
    reply_topic: str  # "" for relayed callbacks (no reply)
    correlation: bytes | None
    properties: Properties | None


def _payload(msg: aiomqtt.Message) -> bytes:
    p = msg.payload
    if isinstance(p, bytes | bytearray):
        return bytes(p)
    return b"" if p is None else str(p).encode()


class CommandIntake:
    """Reads commands (and relayed callbacks) off the broker and runs them in lanes."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        stats: BridgeStats,
        outbox: Outbox,
        runner: CommandRunner,
        *,
        ha: HaDiscovery | None,
        on_ha_config: Callable[[str, bytes], None],
        on_relayed_callback: RelayHandler | None,
        max_concurrency: int,
        max_pending: int,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.stats = stats
        self._outbox = outbox
        self._runner = runner
        self._ha = ha
        self._on_ha_config = on_ha_config
        self._on_relayed = on_relayed_callback
        self._lanes: dict[str, deque[_Job]] = {}
        self._lane_tasks: dict[str, asyncio.Task[None]] = {}
        self._exec = asyncio.Semaphore(max_concurrency)
        self._pending = asyncio.Semaphore(max_pending)

    # ------------------------------------------------------------------ receiver

    async def receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            topic = msg.topic.value
            if self._ha is not None and self._ha.is_config_topic(topic):
                self._on_ha_config(topic, _payload(msg))
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
            self._outbox.reply(
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
            self._outbox.reply(
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
            self._outbox.reply(
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

    async def cancel_lanes(self) -> None:
        tasks = list(self._lane_tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _handle_relay(self, job: _Job) -> None:
        if self._on_relayed is None:  # MqttBridge refuses consume_relay without one
            return
        try:
            await self._on_relayed(job.payload, job.properties)
        except Exception as exc:  # the handler is foreign code; one bad envelope must not kill us
            self.stats.relay_failed += 1
            log.error("mqtt_relay_handler_failed", error_type=type(exc).__name__, exc_info=exc)

    async def _handle_command(self, job: _Job, target: CommandTarget) -> None:
        reply = await self._runner.evaluate(job.payload, target)
        if reply_code(reply) == OWNED_ELSEWHERE:
            return  # another instance owns the room and answers; see Control.owned_elsewhere
        self._outbox.reply(job.reply_topic, job.correlation, reply)
