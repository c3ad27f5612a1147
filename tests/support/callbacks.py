"""Helpers for callback tests (imported by conftest and the tests): sink, metrics, harness."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from orchestrator.callbacks.receiver import CallbackIntake
from orchestrator.callbacks.verify import callback_uri, mss_signature
from orchestrator.rooms.model import Event
from orchestrator.settings import CallbackSettings
from orchestrator.store.sql import SqlStore

KEY = "cb-key-current"
OLD_KEY = "cb-key-previous"
ROOM_KEY = "cb-key-room-own"
PATH = "/callbacks/metastudio"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Waitable:
    """A list that lets a test wait (with a timeout) until it holds n entries."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def add(self, item: Any) -> None:
        self.items.append(item)
        for n, ev in self._waiters:
            if len(self.items) >= n:
                ev.set()

    async def wait_for(self, n: int, timeout: float = 3.0) -> list[Any]:
        if len(self.items) < n:
            ev = asyncio.Event()
            self._waiters.append((n, ev))
            await asyncio.wait_for(ev.wait(), timeout)
        return self.items


class RecordingSink:
    def __init__(self, rooms: Sequence[str]) -> None:
        self.rooms = set(rooms)
        self.posted = Waitable()

    def post(self, room_id: str, event: Event) -> bool:
        if room_id not in self.rooms:
            return False
        self.posted.add((room_id, event))
        return True


class RecordingMetrics:
    def __init__(self) -> None:
        self.results = Waitable()
        self.lags: list[float] = []

    def callback(self, event_type: str, result: str) -> None:
        self.results.add((event_type, result))

    def lag(self, seconds: float) -> None:
        self.lags.append(seconds)

    def dispatched(self) -> list[tuple[str, str]]:
        return [r for r in self.results.items if not r[1].startswith(("rejected", "store"))]


@dataclass
class Harness:
    store: SqlStore
    sink: RecordingSink
    metrics: RecordingMetrics
    intake: CallbackIntake
    client: httpx.AsyncClient
    base_url: str
    settings: CallbackSettings
    jobs: dict[str, str]
    hooked: Waitable
    now: list[datetime] = field(default_factory=lambda: [T0])

    def sign(
        self,
        *,
        hw_time: int | None = None,
        key: str = KEY,
        path: str = PATH,
        mode: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """(query, headers) for the configured auth type."""
        t = format(hw_time if hw_time is not None else int(self.now[0].timestamp()), "x")
        sig = mss_signature(key, callback_uri(path, "path"), t)
        mode = mode or self.settings.auth_type
        if mode == "MSS_A":
            return f"hwSecret={sig}&hwTime={t}", {}
        if mode == "MSS_A_HEAD":
            return "", {"x-hw-mss-secret": sig, "x-hw-mss-time": t}
        return "", {}

    async def post_raw(
        self, body: bytes, *, query: str = "", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        url = f"{self.base_url}{PATH}" + (f"?{query}" if query else "")
        return await self.client.post(
            url, content=body, headers={"content-type": "application/json", **(headers or {})}
        )

    async def send(
        self,
        state: str = "CONNECTED",
        *,
        job: str = "job-1",
        room: str = "room-1",
        event_type: str = "RTMP_STREAM_STATE_CHANGE",
        hw_time: int | None = None,
        key: str = KEY,
        extra: dict[str, Any] | None = None,
    ) -> httpx.Response:
        message: dict[str, Any] = {"room_id": room, "job_id": job}
        if event_type == "RTMP_STREAM_STATE_CHANGE":
            message.update(
                output_url="rtmp://push.example/live", stream_key="sk-SECRET-1", state=state
            )
        message.update(extra or {})
        body = json.dumps({"event_type": event_type, "message": json.dumps(message)}).encode()
        query, headers = self.sign(hw_time=hw_time, key=key)
        return await self.post_raw(body, query=query, headers=headers)

    def rtmp_posts(self) -> list[tuple[str, str, datetime]]:
        return [
            (room, ev.rtmp_state, ev.at)
            for room, ev in self.sink.posted.items
            if type(ev).__name__ == "RtmpStateReported"
        ]


def rtmp_body(state: str, job: str = "job-1", room: str = "room-1") -> bytes:
    msg = {
        "room_id": room,
        "job_id": job,
        "output_url": "rtmp://x/y",
        "stream_key": "k",
        "state": state,
    }
    return json.dumps(
        {"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)}
    ).encode()
