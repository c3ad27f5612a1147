"""The MQTT recorder: a client of the broker that records every message under a prefix, waits
on a condition over what it has seen, publishes, and clears the retained topics a test left.

One implementation for the bridge tests (``mqtt_bridge.Watcher``), the end-to-end tests
(``e2e.MqttWatch``), the UX tests (``ux.mqtt_tap``) and the secret scan, which each had their
own client, pump task and retained-topic clean-up. Every test uses its own topic prefix on the
shared broker (127.0.0.1:1883, which persists retained messages: they must be cleared).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = [
    "BROKER_HOST",
    "BROKER_PORT",
    "MqttRecorder",
    "NoMessage",
    "clear_retained",
    "payload_json",
    "recording",
    "recording_as",
]

#: the shared broker every test machine runs (scripts/test starts it)
BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883


class NoMessage(AssertionError, TimeoutError):
    """No matching message in time: a test failure (AssertionError) that callers used to
    catch as the ``TimeoutError`` of ``asyncio.timeout``."""


def payload_json(payload: Any) -> dict[str, Any]:
    raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
    data: dict[str, Any] = json.loads(raw)
    return data


class MqttRecorder:
    """Records every message the client receives; waits on a condition; sends."""

    def __init__(self, client: aiomqtt.Client, prefix: str, *, timeout: float = 5.0) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout  # default for the waits
        self.messages: list[aiomqtt.Message] = []
        self.listeners: list[Callable[[aiomqtt.Message], None]] = []
        self._cond = asyncio.Condition()

    async def pump(self) -> None:
        async for m in self.client.messages:
            async with self._cond:
                self.messages.append(m)
                for listener in self.listeners:
                    listener(m)
                self._cond.notify_all()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.value == topic]

    async def wait_for(
        self,
        pred: Callable[[aiomqtt.Message], bool],
        *,
        what: str = "",
        timeout: float | None = None,
        last: bool = False,
    ) -> aiomqtt.Message:
        """The first (``last``: the latest) message matching ``pred``, waiting for one."""
        found: list[aiomqtt.Message] = []

        def check() -> bool:
            found[:] = [m for m in self.messages if pred(m)]
            return bool(found)

        wait_s = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait_s), self._cond:
                await self._cond.wait_for(check)
        except TimeoutError:
            seen = sorted({m.topic.value for m in self.messages})
            raise NoMessage(
                f"no MQTT message in {wait_s}s: {what or pred}; topics seen: {seen}"
            ) from None
        return found[-1] if last else found[0]

    async def wait_topic(
        self, topic: str, payload: str | None = None, *, timeout: float | None = None
    ) -> aiomqtt.Message:
        def pred(m: aiomqtt.Message) -> bool:
            return m.topic.value == topic and (payload is None or m.payload == payload.encode())

        return await self.wait_for(pred, what=f"{topic} = {payload!r}", timeout=timeout)

    async def wait_reply(
        self, topic: str, command_id: str | None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The JSON reply on ``topic`` whose ``id`` is ``command_id``."""

        def pred(m: aiomqtt.Message) -> bool:
            if m.topic.value != topic:
                return False
            return bool(payload_json(m.payload).get("id") == command_id)

        m = await self.wait_for(pred, what=f"reply {command_id} on {topic}", timeout=timeout)
        return payload_json(m.payload)

    async def send(
        self,
        topic: str,
        body: dict[str, Any] | bytes,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        retain: bool = False,
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        await self.client.publish(topic, payload, qos=1, retain=retain, properties=props)

    def retained_topics(self) -> set[str]:
        """Topics this test may have left retained on the broker (retained, state, info)."""
        return {
            m.topic.value
            for m in self.messages
            if m.retain or "/state" in m.topic.value or m.topic.value.endswith("/info")
        }


async def clear_retained(
    prefix: str,
    topics: Iterable[str],
    *,
    port: int = BROKER_PORT,
    client: aiomqtt.Client | None = None,
) -> None:
    """The broker keeps retained messages forever: remove what this test left (and the bridge's
    own ``bridge/state`` / ``bridge/info``)."""
    every = sorted(set(topics) | {f"{prefix}/bridge/state", f"{prefix}/bridge/info"})
    with contextlib.suppress(aiomqtt.MqttError):
        if client is not None:
            for t in every:
                await client.publish(t, b"", qos=1, retain=True)
            return
        async with aiomqtt.Client(BROKER_HOST, port, identifier=f"{prefix}-clean") as c:
            for t in every:
                await c.publish(t, b"", qos=1, retain=True)


R = TypeVar("R", bound=MqttRecorder)


@contextlib.asynccontextmanager
async def recording_as(
    cls: type[R],
    prefix: str,
    *,
    port: int = BROKER_PORT,
    name: str = "watch",
    topics: Sequence[str] | None = None,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
    timeout: float = 5.0,
    clear: bool = True,
) -> AsyncIterator[R]:
    """A ``cls`` recorder subscribed to ``{prefix}/#`` and the replies namespace
    ``{prefix}-replies/#`` (or ``topics``); with ``clear``, the retained topics it saw are
    cleared at the end."""
    client = aiomqtt.Client(BROKER_HOST, port, identifier=f"{prefix}-{name}", protocol=protocol)
    async with client:
        for topic in topics if topics is not None else (f"{prefix}/#", f"{prefix}-replies/#"):
            await client.subscribe(topic, qos=1)
        rec = cls(client, prefix, timeout=timeout)
        pump = asyncio.create_task(rec.pump(), name=f"mqtt-{name}-pump")
        try:
            yield rec
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump
            if clear:
                await clear_retained(prefix, rec.retained_topics(), client=client)


def recording(prefix: str, **kw: Any) -> AbstractAsyncContextManager[MqttRecorder]:
    """:func:`recording_as` with the plain :class:`MqttRecorder`."""
    return recording_as(MqttRecorder, prefix, **kw)
