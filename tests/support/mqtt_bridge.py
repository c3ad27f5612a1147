"""Helpers for the MQTT bridge tests: a watcher client, a bridge runner, a private broker.

Kept out of conftest.py so test modules import them by a unique module name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from orchestrator.mqtt.bridge import MqttBridge
from orchestrator.mqtt.link import Backoff
from orchestrator.settings import MqttSettings
from tests.support.mqtt_fakes import MemoryReplyStore, RecordingControl
from tests.support.ports import free_port

TIMEOUT = 5.0


class Watcher:
    """A v5 client subscribed to ``{prefix}/#`` that records messages and sends commands."""

    def __init__(self, client: aiomqtt.Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.messages: list[aiomqtt.Message] = []
        self._cond = asyncio.Condition()

    async def pump(self) -> None:
        async for m in self.client.messages:
            async with self._cond:
                self.messages.append(m)
                self._cond.notify_all()

    def on(self, topic: str) -> list[aiomqtt.Message]:
        return [m for m in self.messages if m.topic.value == topic]

    async def wait_for(
        self, pred: Callable[[aiomqtt.Message], bool], *, timeout: float = TIMEOUT
    ) -> aiomqtt.Message:
        found: list[aiomqtt.Message] = []

        def check() -> bool:
            found[:] = [m for m in self.messages if pred(m)]
            return bool(found)

        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(check)
        return found[0]

    async def wait_topic(
        self, topic: str, payload: str | None = None, *, timeout: float = TIMEOUT
    ) -> aiomqtt.Message:
        def pred(m: aiomqtt.Message) -> bool:
            return m.topic.value == topic and (payload is None or m.payload == payload.encode())

        return await self.wait_for(pred, timeout=timeout)

    async def wait_reply(self, topic: str, command_id: str | None) -> dict[str, Any]:
        def pred(m: aiomqtt.Message) -> bool:
            if m.topic.value != topic:
                return False
            return bool(json.loads(m.payload).get("id") == command_id)

        m = await self.wait_for(pred)
        reply: dict[str, Any] = json.loads(m.payload)
        return reply

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


@contextlib.asynccontextmanager
async def watching(prefix: str, port: int = 1883) -> AsyncIterator[Watcher]:
    client = aiomqtt.Client(
        "127.0.0.1", port, identifier=f"{prefix}-watch", protocol=aiomqtt.ProtocolVersion.V5
    )
    async with client:
        await client.subscribe(f"{prefix}/#", qos=1)
        await client.subscribe(f"{prefix}-replies/#", qos=1)  # the bridges' reply namespace
        w = Watcher(client, prefix)
        pump = asyncio.create_task(w.pump(), name="watcher-pump")
        try:
            yield w
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump
            retained = {
                m.topic.value for m in w.messages if m.retain or m.topic.value.endswith("/state")
            } | {f"{prefix}/bridge/info", f"{prefix}/bridge/state"}
            with contextlib.suppress(aiomqtt.MqttError):
                for t in sorted(retained):
                    await client.publish(t, b"", qos=1, retain=True)


class BridgeRunner:
    """Starts bridges as tasks and cancels them at teardown."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.tasks: list[asyncio.Task[None]] = []

    def make(
        self,
        control: RecordingControl | None = None,
        store: MemoryReplyStore | None = None,
        **kw: Any,
    ) -> tuple[MqttBridge, RecordingControl, MemoryReplyStore]:
        bridge_kw = {
            k: kw.pop(k) for k in ("clock", "on_relayed_callback", "on_connected") if k in kw
        }
        fields: dict[str, Any] = {
            "enabled": True,
            "host": "127.0.0.1",
            "port": 1883,
            "client_id": f"{self.prefix}-bridge",
            "prefix": self.prefix,
            "reconnect_max_s": 0.2,
            "reply_topic_prefixes": [f"{self.prefix}-replies"],
        }
        fields.update(kw)
        control = control or RecordingControl()
        store = store or MemoryReplyStore()
        bridge = MqttBridge(
            MqttSettings(**fields),
            control,
            store,
            version="test",
            backoff=Backoff(cap_s=0.2, base_s=0.02),
            **bridge_kw,
        )
        return bridge, control, store

    async def start(self, bridge: MqttBridge) -> asyncio.Task[None]:
        task = asyncio.create_task(bridge.run(), name="bridge-under-test")
        self.tasks.append(task)
        done, _ = await asyncio.wait(
            [task, asyncio.ensure_future(bridge.wait_connected())],
            timeout=TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if task in done:
            task.result()
        assert bridge.connected, "bridge did not connect"
        return task

    async def run(self, **kw: Any) -> tuple[MqttBridge, RecordingControl, MemoryReplyStore]:
        bridge, control, store = self.make(**kw)
        await self.start(bridge)
        return bridge, control, store

    async def stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PrivateBroker:
    """Our own mosquitto on a free port, so tests can kill and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            # max_queued_messages 0: a slow test subscriber must not lose 10,000 states
            "persistence false\nmax_queued_messages 0\nlog_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "mosquitto",
            "-c",
            str(self.conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,  # stderr is unbuffered: lines arrive as logged
        )
        assert self.proc.stderr is not None
        stdout = self.proc.stderr
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    line = (await stdout.readline()).decode(errors="replace")
                    if not line:
                        raise RuntimeError("mosquitto exited: " + "".join(self.lines))
                    self.lines.append(line)
                    if " running" in line:
                        break
        except BaseException:
            await self.stop()  # never leak a broker when start-up fails
            raise
        self._drain = asyncio.create_task(self._drain_output(stdout), name="broker-log")

    async def _drain_output(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            await self._drain
            self._drain = None
