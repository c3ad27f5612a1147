"""Alert fan-out: every alert goes to MQTT (via the bridge) and, optionally, to a webhook.

Rooms raise alerts (``quarantined`` when the ladder is exhausted or a start is refused for good,
``unrecovered`` when a drop is not repaired within ``recovery.unrecovered_alert_s``, ``stray_jobs``)
and clear them (a ``Reset``, or the room being LIVE again). One payload shape serves both paths,
the MQTT event on ``{prefix}/rooms/{room}/events`` and the webhook body::

    {"type": "alert", "room_id": "r1", "at": "2026-11-25T20:00:00+00:00",
     "kind": "quarantined", "status": "SET", "message": "start refused: ..."}

``status`` is ``SET`` or ``CLEARED`` (a ``CLEARED`` message may be empty). The webhook is a
generic JSON POST, so an operator can route it to whatever pager or chat they already use. It is
delivered by one background task, in order, with capped jittered retries on transport errors,
HTTP 408/429 and 5xx (``Retry-After`` honoured, capped); any other answer is final. Sending
never blocks a room: alerts are queued, and the oldest is dropped (and counted) when full.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
import structlog

from orchestrator.backoff import capped, jittered, parse_retry_after
from orchestrator.payloads import alert_event
from orchestrator.redaction import mask_text

__all__ = ["Alert", "WebhookSender"]

log = structlog.get_logger(__name__)

_RETRYABLE = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Alert:
    room_id: str
    kind: str  # quarantined | unrecovered | stray_jobs | …
    status: Literal["SET", "CLEARED"]
    message: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        """The payload for MQTT and the webhook (``payloads.alert_event``); the message may
        quote a cloud error, so it goes through the one redaction policy."""
        return alert_event(
            self.room_id,
            kind=self.kind,
            status=self.status,
            at=self.at,
            message=mask_text(self.message),
        )


class WebhookSender:
    """Queue + worker that POSTs alerts to ``url``; drops the oldest when the queue is full.

    ``sleep`` is the wait between retries (injectable so tests need no real delays). Counters
    ``sent``, ``failed`` and ``dropped`` are for tests and the ops view.
    """

    def __init__(
        self,
        url: str,
        *,
        http: httpx.AsyncClient,
        retries: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 60.0,
        timeout_s: float = 10.0,
        queue_size: int = 1000,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = url
        self._http = http
        self._retries = max(0, retries)
        self._base: float = base_delay_s
        self._max: float = max_delay_s
        self._timeout = timeout_s
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` for delivery; never blocks, never raises."""
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
            log.warning("alert_webhook_queue_full", dropped=self.dropped)
        self._queue.put_nowait(alert)

    async def run(self) -> None:
        """Deliver queued alerts in order, forever (a named task in the daemon's TaskGroup)."""
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            except Exception:  # a bug here must not take the daemon's TaskGroup down
                self.failed += 1
                log.exception("alert_webhook_crashed", room_id=alert.room_id, kind=alert.kind)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued alert has been delivered or given up on."""
        await self._queue.join()

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # The daemon's one formula, scaled to keep this sender's range: [d/2, 3d/2) where
        # d = min(max, base * 2**attempt); Retry-After is a floor, but never beyond max.
        nominal = capped(attempt, base_s=1.5 * self._base, cap_s=1.5 * self._max)
        delay = jittered(nominal, self._rng.random(), spread=2.0 / 3.0)
        if retry_after is not None:
            return min(self._max, max(delay, retry_after))
        return delay

    async def _deliver(self, alert: Alert) -> None:
        for attempt in range(self._retries + 1):
            retry_after: float | None = None
            try:
                resp = await self._http.post(self._url, json=alert.to_json(), timeout=self._timeout)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            except (httpx.InvalidURL, ValueError) as exc:  # a bad URL never gets better
                self._give_up(alert, type(exc).__name__)
                return
            else:
                if resp.status_code < 300:
                    self.sent += 1
                    log.info(
                        "alert_webhook_sent",
                        room_id=alert.room_id,
                        kind=alert.kind,
                        status=alert.status,
                        attempts=attempt + 1,
                    )
                    return
                reason = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in _RETRYABLE:
                    self._give_up(alert, reason)
                    return
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if attempt == self._retries:
                break
            delay = self._delay(attempt, retry_after)
            log.warning(
                "alert_webhook_retry",
                room_id=alert.room_id,
                kind=alert.kind,
                reason=reason,
                attempt=attempt + 1,
                delay_s=round(delay, 2),
            )
            await self._sleep(delay)
        self._give_up(alert, reason)

    def _give_up(self, alert: Alert, reason: str) -> None:
        self.failed += 1
        log.error(
            "alert_webhook_failed",
            room_id=alert.room_id,
            kind=alert.kind,
            status=alert.status,
            reason=reason,
        )
