"""The bridge's outboxes: what rooms and commands want published, held in bounded memory until
the sender drains it to the broker.

Publishing never blocks a room: :meth:`Outbox.publish_state` and :meth:`Outbox.publish_event`
only put data here (latest state per room wins; oldest event dropped and counted). If state
updates had to be dropped, every room is republished from Control afterwards, so the retained
view converges. Replies have their own outbox, so a reply computed during a reconnect is still
delivered.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.control import CommandError, Control
from orchestrator.mqtt.commands import redact
from orchestrator.mqtt.discovery import sla_topic
from orchestrator.mqtt.link import MAX_INFLIGHT
from orchestrator.mqtt.stats import BridgeStats
from orchestrator.mqtt.topics import Topics, is_valid_room_id
from orchestrator.payloads import snapshot_json
from orchestrator.rooms.model import Snapshot
from orchestrator.settings import MqttSettings

__all__ = ["PUBLISH_BATCH", "Outbox", "Outgoing", "dumps"]

log = structlog.get_logger(__name__)

PUBLISH_BATCH = MAX_INFLIGHT


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message waiting to be published."""

    topic: str
    payload: bytes
    retain: bool = False
    properties: Properties | None = None


def dumps(obj: Any) -> bytes:
    def default(o: object) -> str:
        if isinstance(o, datetime):
            return o.isoformat()
        return str(o)

    return json.dumps(obj, default=default, separators=(",", ":"), ensure_ascii=False).encode()


class Outbox:
    """Bounded outboxes for states, events and replies, and the draining of them."""

    def __init__(
        self,
        settings: MqttSettings,
        topics: Topics,
        control: Control,
        stats: BridgeStats,
        *,
        reply_limit: int,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self._control = control
        self.stats = stats
        self._v5 = settings.protocol == "5"
        # filled synchronously by rooms and commands, drained by the sender
        self.states: dict[str, bytes] = {}
        self.events: deque[Outgoing] = deque()
        self.replies: deque[Outgoing] = deque()
        self._reply_limit = reply_limit
        self.resync = False
        """Republish every room from Control (set after drops, at birth and after a reload)."""
        self._resync_rooms: deque[str] = deque()
        self.info_dirty = False
        """bridge/info (and the discovery configs) must be published again."""
        self.wake = asyncio.Event()

    # ------------------------------------------------------------------ filling (sync)

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
        if room_id not in self.states and len(self.states) >= self.settings.queue_limit:
            self.stats.states_dropped += 1
            self.resync = True
            return
        data = snapshot_json(snapshot) if isinstance(snapshot, Snapshot) else dict(snapshot)
        self.states[room_id] = dumps(redact(data))
        self.wake.set()

    def publish_event(self, room_id: str, event: Mapping[str, Any]) -> None:
        """Queue a non-retained room event. Never blocks; drops (and counts) the oldest.

        Build payloads with ``orchestrator.payloads`` (transition, alert and callback events).
        """
        if not is_valid_room_id(room_id):
            log.warning("mqtt_event_invalid_room", room_id=room_id[:128])
            return
        if len(self.events) >= self.settings.queue_limit:
            self.events.popleft()
            self.stats.events_dropped += 1
        self.events.append(Outgoing(self.topics.room_events(room_id), dumps(redact(dict(event)))))
        self.wake.set()

    def publish_sla(self, room_id: str, sla: Mapping[str, Any]) -> None:
        """Queue a room's retained SLA of today (``{prefix}/rooms/{room}/sla``, read by Home
        Assistant's SLA sensor). Shares the events' bounded queue: a dropped update is
        superseded by the next flush's a minute later."""
        if not is_valid_room_id(room_id):
            log.warning("mqtt_sla_invalid_room", room_id=room_id[:128])
            return
        if len(self.events) >= self.settings.queue_limit:
            self.events.popleft()
            self.stats.events_dropped += 1
        topic = sla_topic(self.topics, room_id)
        self.events.append(Outgoing(topic, dumps(dict(sla)), retain=True))
        self.wake.set()

    def reply(self, topic: str, correlation: bytes | None, reply: Mapping[str, Any]) -> None:
        """Queue a command's reply (v5: JSON content type and the command's correlation data)."""
        props: Properties | None = None
        if self._v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = "application/json"
            if correlation is not None:
                props.CorrelationData = correlation
        self._queue_reply(Outgoing(topic, dumps(reply), properties=props))

    def _queue_reply(self, out: Outgoing) -> None:
        if len(self.replies) >= self._reply_limit:
            self.replies.popleft()
            self.stats.replies_dropped += 1
        self.replies.append(out)
        self.wake.set()

    def after_reload(self) -> None:
        """Rooms may have changed: refresh bridge/info and every retained state."""
        self.resync = True
        self.info_dirty = True
        self.wake.set()

    # ------------------------------------------------------------------ draining

    def backlog(self) -> bool:
        return bool(self.replies or self.states or self.events or self.resync or self._resync_rooms)

    async def drain(self, client: aiomqtt.Client) -> None:
        """Round-robin one batch per source so no source starves another (replies first)."""
        while self.backlog():
            if self.resync:  # (re)start a full republish from Control's current view
                self.resync = False
                self._resync_rooms = deque(self._control.room_ids())
            if self.replies:
                await self.send_batch(client, self._take(self.replies), self.replies)
            if self.states:
                await self.send_batch(client, self._take_states(), None)
            if self.events:
                await self.send_batch(client, self._take(self.events), self.events)
            if self._resync_rooms:
                await self.send_batch(client, self._take_resync(), None)
                if not self._resync_rooms:
                    log.info("mqtt_states_republished")

    @staticmethod
    def _take(q: deque[Outgoing]) -> list[Outgoing]:
        return [q.popleft() for _ in range(min(PUBLISH_BATCH, len(q)))]

    def _take_states(self) -> list[Outgoing]:
        batch: list[Outgoing] = []
        for room_id in list(self.states)[:PUBLISH_BATCH]:
            payload = self.states.pop(room_id)
            batch.append(Outgoing(self.topics.room_state(room_id), payload, retain=True))
        return batch

    async def send_batch(
        self, client: aiomqtt.Client, batch: list[Outgoing], requeue: deque[Outgoing] | None
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
            self.resync = True
        first = next(r for r in results if isinstance(r, BaseException))
        if isinstance(first, aiomqtt.MqttError):
            raise first
        raise aiomqtt.MqttError(f"publish failed: {type(first).__name__}") from first

    def _take_resync(self) -> list[Outgoing]:
        """Next batch of the full republish: fresh snapshots supersede pending updates."""
        batch: list[Outgoing] = []
        for _ in range(min(PUBLISH_BATCH, len(self._resync_rooms))):
            room_id = self._resync_rooms.popleft()
            self.states.pop(room_id, None)
            try:
                snap = self._control.room_state(room_id)
            except CommandError:
                continue  # removed by a reload in the meantime
            batch.append(
                Outgoing(self.topics.room_state(room_id), dumps(redact(dict(snap))), retain=True)
            )
        return batch
