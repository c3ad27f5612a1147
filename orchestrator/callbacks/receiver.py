"""Live-event intake: HTTP route → size limit → auth → parse → durable inbox → 200 → room.

Order of checks (each failure changes nothing: no inbox row, no room event):

1. size: ``Content-Length`` and the streamed body against ``max_body_bytes`` → 413;
2. auth (:mod:`.verify`) → 401, logged ``callback_rejected`` with a reason, never a secret.
   The HMAC key is chosen from an *unverified* peek at the body (room of the job, else the
   message's ``room_id``; unknown → the global keys), so an unauthenticated caller learns nothing
   about the body's validity;
3. parse (:mod:`.parse`) → 400 with a reason;
4. append to the durable inbox through :class:`InboxWriter` (group commit: concurrent requests
   share one transaction; each awaits its own commit) → 503 if the store fails (the service
   retries);
5. hand to the room (``RtmpStateReported`` with ``at`` = event time; a ``Poked`` to the
   message's room for unknown jobs) and mark done — a queue put, before the answer is written;
6. answer 200 ``{"status":"ok"}`` (202 ``{"status":"unknown_job"}`` for a job id no room owns),
   then call the ``on_event`` hook.

Several instances (a ``route``): a callback whose room another instance owns is stored
``for_owner`` (announced to the owner in the inbox's own transaction) and neither posted here
nor marked done: its owner claims it (``orchestrator.fleet.callbacks``).

A crash between 4 and 5 loses nothing: :func:`replay_inbox` re-posts pending items at startup
(run it before serving). Callbacks are hints only — the body is not covered by the signature — so
rooms re-read the job before acting on anything that matters.

Ordering: :class:`StreamTracker` keeps the last event time per (job, type) and drops (but
records) an older RTMP/script event, and suppresses a re-signed retry (same value as the last one
applied for the job within ``retry_window_s``). Replies and unknown types are deduplicated but not
ordered (two different replies are both real).

This module holds the intake and its HTTP route; the inbox writer and replay are in
:mod:`.inbox`, the ordering and hand-over to rooms in :mod:`.dispatch` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog
from starlette.background import BackgroundTask
from starlette.datastructures import URL
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from orchestrator.callbacks.dispatch import (
    CallbackMetrics,
    CallbackRoute,
    Dispatcher,
    NullMetrics,
    OnEvent,
    Outcome,
    StreamTracker,
    order_time,
)
from orchestrator.callbacks.inbox import InboxWriter, replay_inbox
from orchestrator.callbacks.parse import (
    CallbackEvent,
    CallbackParseError,
    dedupe_key,
    event_time,
    parse_body,
    peek_ids,
)
from orchestrator.callbacks.verify import (
    CallbackAuthError,
    auth_values,
    parse_hw_time,
    verify_callback,
)
from orchestrator.rooms.model import RoomSink
from orchestrator.settings import CallbackSettings
from orchestrator.store.base import InboxItem, InboxStore

__all__ = [
    "CallbackIntake",
    "CallbackMetrics",
    "CallbackRoute",
    "Dispatcher",
    "InboxWriter",
    "IntakeResult",
    "NullMetrics",
    "OnEvent",
    "RawCallback",
    "StreamTracker",
    "callback_routes",
    "order_time",
    "replay_inbox",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RawCallback:
    """A callback as it arrived (directly over HTTP or inside a relay envelope)."""

    path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    received_at: datetime
    via: Literal["http", "relay"] = "http"
    request_url: str | None = None
    """The URL as this server saw it (fallback for uri_mode=full without a public URL)."""


@dataclass(frozen=True, slots=True)
class IntakeResult:
    status: int
    body: Mapping[str, Any]
    reason: str | None = None
    event: CallbackEvent | None = None
    item: InboxItem | None = None
    new: bool = False

    @property
    def accepted(self) -> bool:
        return self.status in (200, 202)


def _error(status: int, reason: str, *, public_reason: str | None = None) -> IntakeResult:
    return IntakeResult(
        status=status,
        body={"status": "error", "reason": public_reason or reason},
        reason=reason,
    )


class CallbackIntake:
    """Verify → parse → inbox → dispatch, shared by the HTTP route and the relay consumer."""

    def __init__(
        self,
        settings: CallbackSettings,
        *,
        store: InboxStore,
        sink: RoomSink,
        room_for_job: Callable[[str], str | None],
        key_for_room: Callable[[str], Sequence[str]],
        clock: Callable[[], datetime],
        on_event: OnEvent | None = None,
        metrics: CallbackMetrics | None = None,
        public_url: str | None = None,
        retry_window_s: float = 120.0,
        writer: InboxWriter | None = None,
        route: CallbackRoute | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.room_for_job = room_for_job
        self.key_for_room = key_for_room
        self.public_url = public_url
        self.metrics: CallbackMetrics = metrics or NullMetrics()
        self.route = route
        self.writer = writer or InboxWriter(
            store, notify_channel=route.channel if route is not None else None
        )
        self.dispatcher = Dispatcher(
            sink=sink,
            room_for_job=room_for_job,
            on_event=on_event,
            tracker=StreamTracker(retry_window_s=retry_window_s),
            metrics=self.metrics,
        )

    # keys ------------------------------------------------------------------------------------

    def _global_keys(self) -> list[str]:
        s = self.settings
        return [k.get_secret_value() for k in (s.key, s.previous_key) if k is not None]

    def _keys_for(self, body: bytes) -> list[str]:
        room, job = peek_ids(body)
        hint = (self.room_for_job(job) if job else None) or room
        if hint:
            keys = [k for k in self.key_for_room(hint) if k]
            if keys:
                return keys
        return self._global_keys()

    # stages ----------------------------------------------------------------------------------

    def _reject(self, raw: RawCallback, result: IntakeResult) -> IntakeResult:
        log.warning(
            "callback_rejected",
            reason=result.reason,
            status=result.status,
            via=raw.via,
            path=raw.path,
        )
        self.metrics.callback("-", f"rejected_{result.status}")
        return result

    def too_large(self, raw_via: Literal["http", "relay"], path: str) -> IntakeResult:
        res = _error(413, "body_too_large")
        log.warning("callback_rejected", reason=res.reason, status=413, via=raw_via, path=path)
        self.metrics.callback("-", "rejected_413")
        return res

    async def accept(self, raw: RawCallback) -> IntakeResult:
        """Run steps 2-4 (auth, parse, durable append); :meth:`finish` runs the rest."""
        s = self.settings
        if len(raw.body) > s.max_body_bytes:
            return self.too_large(raw.via, raw.path)
        full_url = self.public_url or raw.request_url
        signed_path = urlsplit(self.public_url).path if self.public_url else raw.path
        try:
            verify_callback(
                auth_type=s.auth_type,
                path=signed_path,
                raw_query=raw.raw_query,
                headers=raw.headers,
                keys=self._keys_for(raw.body) if s.auth_type != "NONE" else (),
                uri_mode=s.uri_mode,
                full_url=full_url,
                now=raw.received_at,
                tolerance_s=s.tolerance_s,
                allow_none=s.allow_none,
                max_future_s=s.max_future_skew_s,
            )
        except CallbackAuthError as exc:
            return self._reject(raw, _error(401, exc.reason, public_reason="unauthorized"))
        try:
            event = parse_body(raw.body)
        except CallbackParseError as exc:
            return self._reject(raw, _error(400, exc.reason))
        hw_time: str | None = None
        hw_s: int | None = None
        if s.auth_type != "NONE":
            hw_time = auth_values(s.auth_type, raw.raw_query, raw.headers)[1]
            hw_s = parse_hw_time(hw_time)
        at = event_time(hw_s, raw.received_at)
        if hw_s is not None:
            self.metrics.lag((raw.received_at - at).total_seconds())
        key = dedupe_key(event, at)
        known_room = self.room_for_job(event.job_id) if event.job_id else None
        for_owner = self.route is not None and not self.route.here(event)
        item = InboxItem(
            dedupe_key=key,
            room_id=known_room or event.room_id,
            job_id=event.job_id,
            event_type=event.event_type,
            payload={
                "event_type": event.event_type,
                "message": dict(event.raw),
                "extra": dict(event.extra),
                "hw_time": hw_time,
                "auth_type": s.auth_type,
                "via": raw.via,
            },
            received_at=raw.received_at,
            event_time=at,
            for_owner=for_owner,
        )
        try:
            new = await self.writer.append(item)
        except Exception as exc:  # StoreError or a driver error: the service will retry
            log.error(
                "callback_store_failed", error=type(exc).__name__, dedupe_key=key, via=raw.via
            )
            self.metrics.callback(event.event_type, "store_failed")
            return IntakeResult(
                status=503, body={"status": "error", "reason": "store_unavailable"}, reason="store"
            )
        unknown = event.job_id is not None and known_room is None and not for_owner
        body = {"status": "unknown_job"} if unknown else {"status": "ok"}
        log.info(
            "callback_accepted" if new else "callback_duplicate",
            event_type=event.event_type,
            job_id=event.job_id,
            room_id=item.room_id,
            state=event.state,
            dedupe_key=key,
            via=raw.via,
            for_owner=for_owner,
            # receipt → durable (auth, parse, inbox commit): what the service's retry timer sees
            accept_ms=round((self.clock() - raw.received_at).total_seconds() * 1000.0, 2),
        )
        if not new:
            self.metrics.callback(event.event_type, "duplicate")
        return IntakeResult(
            status=202 if unknown else 200, body=body, event=event, item=item, new=new
        )

    def hand_over(self, result: IntakeResult) -> tuple[Outcome, str | None] | None:
        """Step 6: hand a newly stored item to its room and mark it done in the inbox
        (synchronous: the room has it before the response goes out). None: nothing to hand."""
        if not result.new or result.event is None or result.item is None:
            return None
        item = result.item
        if self.route is not None and (item.for_owner or not self.route.here(result.event)):
            self.metrics.callback(result.event.event_type, "for_owner")
            self.route.elsewhere(item)  # its owner claims it; decided once, so never both
            return None
        outcome, room = self.dispatcher.post(result.event, order_time(item), item.dedupe_key)
        self.writer.mark_done(key=item.dedupe_key)
        return outcome, room

    async def finish(self, result: IntakeResult) -> None:
        """:meth:`hand_over`, then the ``on_event`` hook."""
        handed = self.hand_over(result)
        if handed is not None and result.event is not None:
            await self.dispatcher.notify(handed[0], result.event, handed[1])

    async def handle(self, raw: RawCallback) -> IntakeResult:
        """accept + finish in one go (the relay consumer path)."""
        result = await self.accept(raw)
        if result.accepted:
            await self.finish(result)
        return result

    # HTTP ------------------------------------------------------------------------------------

    async def endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app of the callback route. Raw ASGI, not a Starlette endpoint: the
        ``Request`` object, its URL and the exception wrapper were a third of the receiver's
        event-loop time per callback (py-spy, intake bench), and nothing here needs them."""
        limit = self.settings.max_body_bytes
        path: str = scope["path"]
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _json(_error(400, "bad_content_length"))(scope, receive, send)
                return
            if too_big:
                await _json(self.too_large("http", path))(scope, receive, send)
                return
        buf = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the caller gave up: nothing stored, nothing to answer
            buf += message.get("body", b"")
            if len(buf) > limit:
                await _json(self.too_large("http", path))(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        raw = RawCallback(
            path=path,
            raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            body=bytes(buf),
            received_at=self.clock(),
            via="http",
            # building the full URL costs ~0.2 ms a request: only uri_mode=full needs it
            request_url=(
                str(URL(scope=scope))
                if self.settings.uri_mode == "full" and not self.public_url
                else None
            ),
        )
        result = await self.accept(raw)
        # The room gets the event now, not after the response is written (as a background
        # task did): a drop's reaction starts while the 200 goes out.
        handed = self.hand_over(result)
        background = None
        if handed is not None and result.event is not None:
            background = BackgroundTask(self.dispatcher.notify, handed[0], result.event, handed[1])
        await _json(result, background=background)(scope, receive, send)

    def routes(self) -> list[Route]:
        return [Route(self.settings.path, _Asgi(self.endpoint), methods=["POST"], name="callbacks")]

    async def replay(self, *, limit: int = 500) -> int:
        """Re-post pending inbox items through this intake's dispatcher (startup)."""
        return await replay_inbox(
            self.store,
            self.dispatcher.sink,
            room_for_job=self.room_for_job,
            dispatcher=self.dispatcher,
            limit=limit,
        )

    async def drain(self, timeout_s: float = 5.0) -> None:
        await self.writer.drain(timeout_s)


class _Asgi:
    """Starlette routes a plain function or method through ``request_response`` (building a
    ``Request``); any other callable is mounted as a raw ASGI app."""

    __slots__ = ("_app",)

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def _json(result: IntakeResult, background: BackgroundTask | None = None) -> JSONResponse:
    return JSONResponse(dict(result.body), status_code=result.status, background=background)


def callback_routes(
    settings: CallbackSettings,
    *,
    store: InboxStore,
    sink: RoomSink,
    room_for_job: Callable[[str], str | None],
    key_for_room: Callable[[str], Sequence[str]],
    clock: Callable[[], datetime],
    on_event: OnEvent | None = None,
    metrics: CallbackMetrics | None = None,
    public_url: str | None = None,
) -> list[Route]:
    """Starlette routes (POST ``settings.path``). Build a :class:`CallbackIntake` yourself when
    the relay consumer must share its ordering state."""
    return CallbackIntake(
        settings,
        store=store,
        sink=sink,
        room_for_job=room_for_job,
        key_for_room=key_for_room,
        clock=clock,
        on_event=on_event,
        metrics=metrics,
        public_url=public_url,
    ).routes()
