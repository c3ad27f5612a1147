"""The real daemon and the real emulator in one event loop, over real loopback HTTP.

Imported as ``tests.support.ux``.

The daemon runs on a :class:`~orchestrator.clock.ManualClock`: room timers (grace, refresh
backoff), transition times and therefore SLA seconds move only when a test calls
``stack.clock.advance``, so SLA numbers are exact and no test waits for a grace period. The
emulator's delays run on its own (real, compressed) clock, but its wall clock — request
signature checks and callback ``hwTime`` — is the daemon's manual clock, which starts at the
real time (the daemon signs requests with the real time; a test advances a few minutes at most).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orchestrator.app import Daemon
from orchestrator.clock import ManualClock
from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService, Fault
from orchestrator.httpserver import serve
from orchestrator.rooms.model import RoomState
from orchestrator.rooms.supervisor import Transition
from orchestrator.settings import Settings
from tests.support.mqtt import recording
from tests.support.ports import free_port

WAIT_S = 15.0


@dataclass
class Transitions:
    """A daemon listener: every transition, and a wake-up for anyone waiting on one."""

    items: list[Transition] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, t: Transition) -> None:
        self.items.append(t)
        self.changed.set()

    async def wait(self, pred: Callable[[], bool], timeout: float = WAIT_S) -> None:
        """Until ``pred()`` holds; re-checked after every transition."""

        async def _loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_loop(), timeout)

    def states(self, room_id: str) -> list[str]:
        return [
            t.after.state.value
            for t in self.items
            if t.room_id == room_id and t.before.state != t.after.state
        ]

    def alerts(self, room_id: str) -> list[tuple[str, str]]:
        return [(t.alert[0], t.alert[1]) for t in self.items if t.room_id == room_id and t.alert]


@dataclass
class Stack:
    daemon: Daemon
    service: EmulatorService
    emu_url: str
    clock: ManualClock
    seen: Transitions
    store_url: str

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.http_port}"

    def state(self, room_id: str) -> RoomState:
        assert self.daemon.supervisor is not None
        return self.daemon.supervisor.snapshot(room_id).state

    def job_id(self, room_id: str) -> str:
        assert self.daemon.supervisor is not None
        job = self.daemon.supervisor.snapshot(room_id).job_id
        assert job is not None
        return job

    async def wait_state(self, room_id: str, state: RoomState, timeout: float = WAIT_S) -> None:
        await self.seen.wait(lambda: self.state(room_id) is state, timeout)

    async def admin(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.emu_url) as c:
            resp = await c.post(path, json=dict(body))
            resp.raise_for_status()
            out: dict[str, Any] = resp.json()
            return out

    async def drop_link(self, room_id: str, hold_s: float = 600.0) -> None:
        """Hold the room's RTMP link down (the emulator keeps it down until a refresh)."""
        await self.admin(
            f"/_emulator/jobs/{self.job_id(room_id)}/rtmp",
            {"state": "DISCONNECTED", "hold_s": hold_s},
        )


def stack_settings(
    *,
    base_url: str,
    project_id: str,
    ak: str,
    sk: str,
    http_port: int,
    store_url: str,
    rooms: Sequence[str],
    recovery: Mapping[str, Any] | None = None,
    mqtt: Mapping[str, Any] | None = None,
    alerts: Mapping[str, Any] | None = None,
) -> Settings:
    data: dict[str, Any] = {
        "cloud": {"base_url": base_url, "project_id": project_id, "ak": ak, "sk": sk},
        "store": {"url": store_url},
        "http": {
            "port": http_port,
            "public_callback_url": f"http://127.0.0.1:{http_port}/callbacks/metastudio",
        },
        "callbacks": {"auth_type": "MSS_A_HEAD", "key": secrets.token_hex(8)},
        "recovery": {
            "grace_s": 10.0,
            "widen_exit_minutes": 10,
            "refresh_confirm_s": 30.0,
            "refresh_backoff_s": 1.0,
            "restart_backoff_s": 2.0,
            "poll_interval_s": 3600.0,
            "stale_after_s": 3600.0,
            "start_confirm_s": 600.0,
            "unrecovered_alert_s": 3600.0,
            **dict(recovery or {}),
        },
        "mqtt": dict(mqtt or {}),
        "alerts": dict(alerts or {}),
        "log": {"level": "warning"},
        "rooms": [
            {
                "id": rid,
                "name": f"ux room {rid}",
                "output_url": "rtmp://push.example.com/live",
                "stream_key": f"ux-key-{rid}-" + secrets.token_hex(4),
                "windows": [{"always": True}],
            }
            for rid in rooms
        ],
    }
    return Settings.model_validate(data)


@asynccontextmanager
async def running_stack(
    tmp_path: Path,
    *,
    rooms: Sequence[str] = ("ux-a",),
    recovery: Mapping[str, Any] | None = None,
    mqtt: Mapping[str, Any] | None = None,
    alerts: Mapping[str, Any] | None = None,
    faults: Sequence[Fault] = (),
) -> AsyncIterator[Stack]:
    """Emulator + daemon, ready (adoption done, schedule loaded); stopped cleanly on exit."""
    ak, sk = "UX" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    project_id = secrets.token_hex(16)
    clock = ManualClock(datetime.now(UTC))
    # callbacks carry the manual time, so two link changes a test makes "seconds apart" are
    # seconds apart for the receiver too (its dedupe key has one-second resolution)
    service = EmulatorService(
        project_id,
        {ak: sk},
        seed=11,
        time_scale=10.0,
        wallclock=lambda: clock.now().timestamp(),
    )
    for rid in rooms:
        service.add_room(rid)
    for fault in faults:
        service.add_fault(fault)
    seen = Transitions()
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'ux.db'}"
    async with serve(create_app(service)) as emu:
        settings = stack_settings(
            base_url=emu.base_url,
            project_id=project_id,
            ak=ak,
            sk=sk,
            http_port=free_port(),
            store_url=store_url,
            rooms=rooms,
            recovery=recovery,
            mqtt=mqtt,
            alerts=alerts,
        )
        daemon = Daemon(settings, clock=clock, listeners=[seen])
        task = asyncio.create_task(daemon.run(), name="ux-daemon")
        try:
            ready = asyncio.create_task(daemon.ready.wait(), name="ux-ready")
            done, _ = await asyncio.wait(
                {task, ready}, timeout=WAIT_S, return_when="FIRST_COMPLETED"
            )
            if ready not in done:
                ready.cancel()
                raise AssertionError(f"daemon not ready (exited: {task.done()})")
            yield Stack(daemon, service, emu.base_url, clock, seen, store_url)
        finally:
            daemon.stop_requested.set()
            rc = await asyncio.wait_for(task, WAIT_S)
        assert rc == 0, "the daemon exited with a failure"


# --- headless Chromium ---------------------------------------------------------------------

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def per_day(t0: datetime, spans: Sequence[tuple[float, float]]) -> dict[date, float]:
    """Seconds of the ``[t0+a, t0+b)`` spans per UTC day (an SLA oracle independent of sla.py)."""
    out: dict[date, float] = {}
    for a, b in spans:
        start, end = t0 + timedelta(seconds=a), t0 + timedelta(seconds=b)
        while start < end:
            midnight = datetime.combine(start.date() + timedelta(days=1), time(0), UTC)
            cut = min(end, midnight)
            out[start.date()] = out.get(start.date(), 0.0) + (cut - start).total_seconds()
            start = cut
    return out


# --- MQTT tap and webhook receiver ---------------------------------------------------------


@dataclass
class Seen:
    """Received JSON documents, with a wake-up per arrival."""

    items: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        self.changed.set()

    async def wait(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
    ) -> dict[str, Any]:
        """The first item matching ``pred`` (waiting for it if needed)."""

        async def _loop() -> dict[str, Any]:
            while True:
                for item in self.items:
                    if pred(item):
                        return item
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(_loop(), timeout)


@dataclass
class MqttTap:
    client: aiomqtt.Client
    prefix: str
    messages: Seen  # {"topic": ..., "payload": <JSON or text>}

    def alerts(self, room_id: str) -> list[dict[str, Any]]:
        topic = f"{self.prefix}/rooms/{room_id}/events"
        return [
            m["payload"]
            for m in self.messages.items
            if m["topic"] == topic
            and isinstance(m["payload"], dict)
            and m["payload"].get("type") == "alert"
        ]

    async def command(self, room_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a room command; return its reply (``…/command/reply``)."""
        topic = f"{self.prefix}/rooms/{room_id}/command"
        await self.client.publish(topic, json.dumps(dict(body)).encode(), qos=1)
        reply = await self.messages.wait(
            lambda m: (
                m["topic"] == topic + "/reply"
                and isinstance(m["payload"], dict)
                and m["payload"].get("id") == body["id"]
            )
        )
        out: dict[str, Any] = reply["payload"]
        return out


@asynccontextmanager
async def mqtt_tap(prefix: str) -> AsyncIterator[MqttTap]:
    """The recorder (tests/support/mqtt.py) on ``{prefix}/#`` of the local mosquitto, its
    messages also as JSON documents in a :class:`Seen`; clears retained topics after."""
    seen = Seen()

    def add(msg: aiomqtt.Message) -> None:
        raw = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        seen.add({"topic": msg.topic.value, "payload": payload, "retain": msg.retain})

    async with recording(prefix, name="tap", topics=[f"{prefix}/#"], timeout=WAIT_S) as rec:
        rec.listeners.append(add)  # before the pump's first turn: nothing is missed
        yield MqttTap(rec.client, prefix, seen)


@dataclass
class WebhookReceiver:
    url: str
    posts: Seen
    fail_first: int


@asynccontextmanager
async def webhook_receiver(*, fail_first: int = 0) -> AsyncIterator[WebhookReceiver]:
    """A Starlette app on a loopback port recording JSON POSTs; answers 503 ``fail_first``
    times first (to prove the sender retries)."""
    posts = Seen()
    calls = 0

    async def hook(request: Request) -> JSONResponse:
        nonlocal calls
        calls += 1
        if calls <= fail_first:
            return JSONResponse({"error": "busy"}, status_code=503)
        posts.add(await request.json())
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve(app) as served:
        yield WebhookReceiver(served.base_url + "/hook", posts, fail_first)
