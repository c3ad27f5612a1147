"""Helpers for the MQTT bridge tests: a watcher client, a bridge runner, a private broker.

Imported as ``tests.support.mqtt_bridge``; the recorder itself is tests/support/mqtt.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from orchestrator.mqtt.bridge import MqttBridge
from orchestrator.mqtt.link import Backoff
from orchestrator.settings import MqttSettings
from tests.support.mqtt import BROKER_PORT, MqttRecorder, recording
from tests.support.mqtt_fakes import MemoryReplyStore, RecordingControl
from tests.support.ports import free_port

TIMEOUT = 5.0


#: the bridge tests' recorder: tests/support/mqtt.py (waits return the first match, 5 s)
Watcher = MqttRecorder


def watching(prefix: str, port: int = BROKER_PORT) -> AbstractAsyncContextManager[Watcher]:
    """A recorder on ``{prefix}/#`` and ``{prefix}-replies/#``; retained topics cleared after."""
    return recording(prefix, port=port, timeout=TIMEOUT)


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
