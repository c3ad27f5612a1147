"""Delivers the service's live-event callbacks over HTTP (api doc §6).

Body ``{"event_type", "message"}`` with ``message`` a JSON *string* (double-encoded). Auth
``NONE``, ``MSS_A`` (``hwSecret``/``hwTime`` appended to the query) or ``MSS_A_HEAD``
(``x-hw-mss-secret``/``x-hw-mss-time`` headers). The documented formula
``hmac_sha256(key, URI(url) + hwTime)`` is ambiguous about ``URI``; :func:`mss_signature` takes
the interpretation as an argument (``path``, the default, or ``full``).

Delivery runs in one lane per job: a job's callbacks leave in the order the service produced
them (unless the admin API asks for loss, duplication, reordering or delay, seeded so
reproducible), and a job whose URL is dead delays nobody else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog

__all__ = [
    "CallbackDispatcher",
    "CallbackEvent",
    "CallbackKnobs",
    "UriMode",
    "build_request",
    "hw_time",
    "mss_signature",
]

log = structlog.get_logger(__name__)

UriMode = Literal["path", "full"]


def hw_time(unix_seconds: float) -> str:
    """``hwTime``: Unix seconds as lowercase hex without ``0x``."""
    return format(int(unix_seconds), "x")


def mss_signature(key: str, url: str, hw_time: str, uri_mode: UriMode = "path") -> str:
    """``hwSecret`` = lowercase hex HMAC-SHA256(key, URI + hwTime).

    ``uri_mode="path"``: URI is the path of ``url`` (``/`` when empty); ``"full"``: the whole
    callback URL as configured (without our own ``hwSecret``/``hwTime`` additions).
    """
    uri = (urlsplit(url).path or "/") if uri_mode == "path" else url
    return hmac.new(
        key.encode("utf-8"), (uri + hw_time).encode("utf-8"), hashlib.sha256
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One callback to deliver. ``key`` is the secret: never logged."""

    url: str
    auth_type: str
    key: str
    event_type: str
    message: dict[str, Any]
    lane: str = ""  # the job id: deliveries of one lane keep their order


@dataclass(slots=True)
class CallbackKnobs:
    """Fault knobs settable through ``POST /_emulator/callbacks``."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder: bool = False
    delay_ms: float = 0.0


def build_request(
    event: CallbackEvent, *, now: float, uri_mode: UriMode = "path"
) -> tuple[str, dict[str, str], bytes]:
    """URL, headers and body bytes of one delivery (pure; ``now`` in Unix seconds)."""
    body = json.dumps(
        {"event_type": event.event_type, "message": json.dumps(event.message)}
    ).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    url = event.url
    if event.auth_type in ("MSS_A", "MSS_A_HEAD"):
        t = hw_time(now)
        sig = mss_signature(event.key, event.url, t, uri_mode)
        if event.auth_type == "MSS_A":
            sep = "&" if urlsplit(url).query else "?"
            url = f"{url}{sep}hwSecret={sig}&hwTime={t}"
        else:
            headers["x-hw-mss-secret"] = sig
            headers["x-hw-mss-time"] = t
    return url, headers, body


@dataclass(slots=True)
class _Stats:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    duplicated: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class _Lane:
    """One delivery lane: its own queue and worker, so a dead URL holds back only itself."""

    __slots__ = ("arrived", "held", "key", "queue", "task")

    def __init__(self, key: str) -> None:
        self.key = key
        self.queue: collections.deque[CallbackEvent] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.held: CallbackEvent | None = None
        self.arrived = asyncio.Event()


class CallbackDispatcher:
    """Per-lane delivery workers with retries and fault knobs.

    A lane is one job (``CallbackEvent.lane``; the URL when unset): callbacks of one job leave in
    the order the service produced them, and one job's unreachable URL (timeouts, retries)
    delays only that job. A lane's worker ends when its queue is empty, so idle jobs cost
    nothing; at most ``max_lanes`` lanes and ``max_queue`` waiting events per lane exist at
    once (beyond that, events are dropped and counted: the emulator never grows unbounded).

    ``transport`` lets tests route deliveries in-process; ``wallclock`` feeds ``hwTime``;
    ``retry_delays`` are real seconds between attempts (the service's own backoff).
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        uri_mode: UriMode = "path",
        transport: httpx.AsyncBaseTransport | None = None,
        wallclock: Callable[[], float] = time.time,
        retry_delays: Sequence[float] = (0.2, 1.0, 3.0),
        timeout_s: float = 5.0,
        max_lanes: int = 1024,
        max_queue: int = 1000,
    ) -> None:
        self._rng = rng
        self.uri_mode: UriMode = uri_mode
        self._transport = transport
        self._wallclock = wallclock
        self._retry_delays = tuple(retry_delays)
        self._timeout_s = timeout_s
        self.max_lanes = max_lanes
        self.max_queue = max_queue
        self.knobs = CallbackKnobs()
        self.stats = _Stats()
        self._lanes: dict[str, _Lane] = {}
        self._client: httpx.AsyncClient | None = None
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.reorder_window_s = 0.5

    @property
    def lanes(self) -> int:
        """Lanes with events queued or in delivery (idle lanes are discarded)."""
        return len(self._lanes)

    async def start(self) -> None:
        if self._client is not None:
            return
        # one connection per lane: with httpx's default pool (100) hanging URLs would starve
        # the healthy lanes of connections, head-of-line blocking again one level down
        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=self._timeout_s,
            limits=httpx.Limits(max_connections=self.max_lanes, max_keepalive_connections=100),
        )

    async def stop(self) -> None:
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            if lane.task is not None:
                lane.task.cancel()
        for lane in lanes:
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self._outstanding = 0
        self._idle.set()

    def submit(self, event: CallbackEvent) -> None:
        """Queue an event (no-op before :meth:`start`: a service without a loop sends nothing)."""
        if self._client is None:
            return
        key = event.lane or event.url
        lane = self._lanes.get(key)
        if lane is None:
            if len(self._lanes) >= self.max_lanes:
                self.stats.dropped += 1
                log.warning("emulator_callback_lanes_full", lanes=len(self._lanes))
                return
            lane = self._lanes[key] = _Lane(key)
        if len(lane.queue) >= self.max_queue:
            self.stats.dropped += 1
            log.warning("emulator_callback_lane_full", event_type=event.event_type)
            return
        lane.queue.append(event)
        lane.arrived.set()
        self._outstanding += 1
        self._idle.clear()
        if lane.task is None:
            lane.task = asyncio.create_task(self._run(lane), name="emulator-callbacks")

    @property
    def outstanding(self) -> int:
        """Events queued or in delivery (0: every callback so far has been handled)."""
        return self._outstanding

    async def join(self) -> None:
        """Wait until every queued event has been handled (delivered, dropped or given up)."""
        await self._idle.wait()

    def _done(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()

    async def _run(self, lane: _Lane) -> None:
        try:
            while lane.queue:
                event = lane.queue.popleft()
                try:
                    await self._handle(lane, event)
                except Exception:  # one bad delivery must never stop the lane
                    log.exception("emulator_callback_worker_error", event_type=event.event_type)
                finally:
                    self._done()
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]

    async def _handle(self, lane: _Lane, event: CallbackEvent) -> None:
        knobs = self.knobs
        if knobs.reorder:
            if lane.held is None:
                if not lane.queue:
                    # nothing to swap with yet: give the next event a short chance to arrive
                    lane.arrived.clear()
                    try:
                        await asyncio.wait_for(lane.arrived.wait(), self.reorder_window_s)
                    except TimeoutError:
                        await self._deliver_with_faults(event)
                        return
                lane.held = event
                self._outstanding += 1  # still owed: delivered with the next event
                return
            held, lane.held = lane.held, None
            await self._deliver_with_faults(event)
            await self._deliver_with_faults(held)
            self._done()
            return
        if lane.held is not None:
            held, lane.held = lane.held, None
            await self._deliver_with_faults(held)
            self._done()
        await self._deliver_with_faults(event)

    async def _deliver_with_faults(self, event: CallbackEvent) -> None:
        knobs = self.knobs
        if knobs.delay_ms > 0:
            await asyncio.sleep(knobs.delay_ms / 1000.0)
        if knobs.drop_rate > 0 and self._rng.random() < knobs.drop_rate:
            self.stats.dropped += 1
            log.info("emulator_callback_dropped", event_type=event.event_type)
            return
        await self._deliver(event)
        if knobs.duplicate_rate > 0 and self._rng.random() < knobs.duplicate_rate:
            self.stats.duplicated += 1
            await self._deliver(event)

    async def _deliver(self, event: CallbackEvent) -> None:
        assert self._client is not None
        attempts = len(self._retry_delays) + 1
        for attempt in range(attempts):
            url, headers, body = build_request(event, now=self._wallclock(), uri_mode=self.uri_mode)
            try:
                resp = await self._client.post(url, content=body, headers=headers)
                ok = 200 <= resp.status_code < 300
                status: int | None = resp.status_code
            except httpx.HTTPError as exc:
                ok, status = False, None
                log.info(
                    "emulator_callback_error", event_type=event.event_type, error=type(exc).__name__
                )
            if ok:
                self.stats.delivered += 1
                self.stats.by_type[event.event_type] = (
                    self.stats.by_type.get(event.event_type, 0) + 1
                )
                return
            log.info(
                "emulator_callback_retry",
                event_type=event.event_type,
                attempt=attempt + 1,
                status=status,
            )
            if attempt < len(self._retry_delays):
                await asyncio.sleep(self._retry_delays[attempt])
        self.stats.failed += 1
        log.warning("emulator_callback_gave_up", event_type=event.event_type, attempts=attempts)
