"""Alert fan-out: every alert goes to MQTT (via the bridge) and, optionally, to a webhook.

The webhook is a generic JSON POST ``{"room_id","kind","status":"SET"|"CLEARED","message","at"}``
delivered by a background task with capped, jittered retries, so an operator can route it to
whatever pager or chat they already use. Sending never blocks a room: alerts are queued.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime

import httpx
import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Alert:
    room_id: str
    kind: str  # quarantined | unrecovered_drop | …
    status: str  # SET | CLEARED
    message: str
    at: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "room_id": self.room_id,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "at": self.at.isoformat(),
        }


class WebhookSender:
    """Queue + worker that POSTs alerts to ``url``; drops the oldest when the queue is full."""

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient,
        retries: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        queue_size: int = 1000,
        rng: random.Random | None = None,
    ) -> None:
        self._url = url
        self._http = http
        self._retries = retries
        self._base = base_delay_s
        self._max = max_delay_s
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._rng = rng or random.Random()
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, alert: Alert) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            log.warning("alert_webhook_queue_full", dropped=self.dropped)
        self._queue.put_nowait(alert)

    async def run(self) -> None:
        while True:
            alert = await self._queue.get()
            await self._deliver(alert)
            self._queue.task_done()

    async def _deliver(self, alert: Alert) -> None:
        for attempt in range(self._retries + 1):
            try:
                resp = await self._http.post(self._url, json=alert.to_json(), timeout=10.0)
                if resp.status_code < 300:
                    self.sent += 1
                    log.info(
                        "alert_webhook_sent",
                        room_id=alert.room_id,
                        kind=alert.kind,
                        status=alert.status,
                    )
                    return
                reason = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt == self._retries:
                break
            delay = min(self._max, self._base * 2**attempt) * (0.5 + self._rng.random())
            log.warning(
                "alert_webhook_retry",
                room_id=alert.room_id,
                reason=reason,
                attempt=attempt + 1,
                delay_s=round(delay, 2),
            )
            await asyncio.sleep(delay)
        self.failed += 1
        log.error("alert_webhook_failed", room_id=alert.room_id, kind=alert.kind)
