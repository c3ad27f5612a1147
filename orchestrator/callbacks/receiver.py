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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import structlog
from starlette.background import BackgroundTask
from starlette.datastructures import URL
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from orchestrator.callbacks.parse import (
    EVENT_REPLY,
    EVENT_RTMP,
    EVENT_SCRIPT,
    RTMP_STATES,
    CallbackEvent,
    CallbackParseError,
    dedupe_key,
    discriminator,
    event_from_message,
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
from orchestrator.rooms.model import Poked, RoomSink, RtmpStateReported
from orchestrator.settings import CallbackSettings
from orchestrator.store.base import InboxItem, InboxStore, StoreError
from orchestrator.store.groupcommit import GroupCommit

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

OnEvent = Callable[[CallbackEvent, str | None], Awaitable[None]]
"""Hook for applied events: (event, room id or None). The MQTT bridge publishes from it."""

Outcome = Literal["applied", "duplicate", "stale", "unknown_job", "unknown_room"]


# --- metrics ---------------------------------------------------------------------------------


class CallbackMetrics(Protocol):
    """Counters by event type/result and the signing→receive lag."""

    def callback(self, event_type: str, result: str) -> None: ...

    def lag(self, seconds: float) -> None: ...


class NullMetrics:
    def callback(self, event_type: str, result: str) -> None:
        return None

    def lag(self, seconds: float) -> None:
        return None


class CallbackRoute(Protocol):
    """Several instances: which callbacks this instance hands to a room itself."""

    channel: str | None
    """Where the store announces items left for their owner (None: no in-transaction signal)."""

    def here(self, event: CallbackEvent) -> bool:
        """True when a room here takes the event (or no instance's room would)."""

    def elsewhere(self, item: InboxItem) -> None:
        """A stored item left pending for its room's owner (announce it if the store did not)."""


# --- group-committing inbox writer -----------------------------------------------------------


class InboxWriter:
    """Group commit for ``store.inbox_append``: one transaction for all requests waiting.

    Each :meth:`append` awaits its own item's commit (:mod:`orchestrator.store.groupcommit`).
    While a commit runs, new items queue up and go together in the next one; under load,
    ``linger_s`` waits a little for company, while a lone callback on an idle daemon is
    committed at once, since its room's reaction waits for that commit (the react bench: 2 ms
    of every drop). Done-marking is batched too, without waiters.
    """

    def __init__(
        self,
        store: InboxStore,
        *,
        linger_s: float = 0.002,
        max_batch: int = 500,
        notify_channel: str | None = None,
    ) -> None:
        self._store = store
        self._notify_channel = notify_channel
        self._linger_s = linger_s
        self._group: GroupCommit[InboxItem, bool] = GroupCommit(
            self._commit, name="callback-inbox-writer", max_batch=max_batch, linger_s=linger_s
        )
        self._done_keys: dict[str, None] = {}  # insertion-ordered set
        self._done_ids: list[int] = []
        self._doner: asyncio.Task[None] | None = None
        self.batches = 0
        """Number of commits so far (observability for tests and the bench)."""

    async def append(self, item: InboxItem) -> bool:
        """True when stored, False when an item with the same dedupe key already exists."""
        return await self._group.submit(item)

    async def _commit(self, items: list[InboxItem]) -> list[bool]:
        first: dict[str, int] = {}  # dedupe key -> position of its first item in the batch
        for pos, it in enumerate(items):
            first.setdefault(it.dedupe_key, pos)
        batch = [items[pos] for pos in first.values()]
        if self._notify_channel is None:
            flags = await self._store.inbox_append(batch)
        else:
            flags = await self._store.inbox_append(batch, notify_channel=self._notify_channel)
        if len(flags) != len(first):
            raise StoreError("inbox_append returned a wrong number of flags")
        self.batches += 1
        flag = dict(zip(first, flags, strict=True))
        # a key repeated within the batch is new at most for its first item
        return [flag[it.dedupe_key] and first[it.dedupe_key] == pos for pos, it in enumerate(items)]

    def mark_done(self, *, item_id: int | None = None, key: str | None = None) -> None:
        """Queue a processed item for ``inbox_done`` (by id) or ``inbox_done_keys`` (by key)."""
        if item_id is not None:
            self._done_ids.append(item_id)
        elif key is not None:
            self._done_keys[key] = None
        else:
            return
        if self._doner is None or self._doner.done():
            self._doner = asyncio.create_task(self._done_loop(), name="callback-inbox-done")

    async def _done_loop(self) -> None:
        while self._done_ids or self._done_keys:
            if self._linger_s > 0:
                await asyncio.sleep(self._linger_s)
            try:
                await self._flush_done()
            except Exception:  # the items stay pending; replay at startup re-posts them
                log.exception("callback_inbox_done_failed")
                return

    async def _flush_done(self) -> None:
        ids, self._done_ids = self._done_ids, []
        keys, self._done_keys = list(self._done_keys), {}
        if keys:
            await self._store.inbox_done_keys(keys)
        if ids:
            await self._store.inbox_done(ids)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for queued commits and done-marks (graceful shutdown, tests)."""
        tasks = [t for t in (self._group.flusher, self._doner) if t is not None and not t.done()]
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout_s)


# --- ordering + retry suppression ------------------------------------------------------------


class StreamTracker:
    """Per-job ordering and re-signed-retry suppression (in memory, bounded LRU)."""

    def __init__(self, *, retry_window_s: float = 120.0, max_entries: int = 100_000) -> None:
        self._retry_window_s = retry_window_s
        self._max = max_entries
        self._last_at: OrderedDict[tuple[str, str], datetime] = OrderedDict()
        self._last_value: OrderedDict[tuple[str, ...], tuple[str, datetime]] = OrderedDict()

    def _remember(self, d: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > self._max:
            d.popitem(last=False)

    def check(self, event: CallbackEvent, at: datetime) -> Literal["apply", "duplicate", "stale"]:
        """Classify and, when "apply", remember the event."""
        if event.job_id is None:
            return "apply"
        ordered = event.event_type in (EVENT_RTMP, EVENT_SCRIPT)
        order_key = (event.job_id, event.event_type)
        if ordered:
            last = self._last_at.get(order_key)
            if last is not None and at < last:
                return "stale"
        value = discriminator(event)
        if event.event_type == EVENT_RTMP:
            stream: tuple[str, ...] = (event.job_id, event.event_type, event.output_url or "")
        elif event.event_type == EVENT_SCRIPT:
            stream = (event.job_id, event.event_type)
        else:
            stream = (event.job_id, event.event_type, value)
        prev = self._last_value.get(stream)
        if (
            prev is not None
            and prev[0] == value
            and abs((at - prev[1]).total_seconds()) <= self._retry_window_s
        ):
            return "duplicate"
        self._remember(self._last_value, stream, (value, at))
        if ordered:
            self._remember(self._last_at, order_key, at)
        return "apply"


def order_time(item: InboxItem) -> datetime:
    """When an item counts as having happened, for ordering a job's events: its signed time,
    but never later than its receipt (whole seconds, as signed times are). The body is not
    signed and a time ahead within the skew is still accepted: ordered by it, one forged
    callback would make the job's genuine ones "stale" until then."""
    received = item.received_at.replace(microsecond=0)
    return received if item.event_time is None else min(item.event_time, received)


# --- dispatch (shared by live intake and replay) ---------------------------------------------


class Dispatcher:
    """Hands a committed event to its room and the ``on_event`` hook. Synchronous up to the hook."""

    def __init__(
        self,
        *,
        sink: RoomSink,
        room_for_job: Callable[[str], str | None],
        on_event: OnEvent | None = None,
        tracker: StreamTracker | None = None,
        metrics: CallbackMetrics | None = None,
    ) -> None:
        self.sink = sink
        self.room_for_job = room_for_job
        self.on_event = on_event
        self.tracker = tracker or StreamTracker()
        self.metrics: CallbackMetrics = metrics or NullMetrics()

    def post(self, event: CallbackEvent, at: datetime, key: str) -> tuple[Outcome, str | None]:
        """Classify (ordering, retries) and post to the room. Never blocks; returns the room."""
        verdict = self.tracker.check(event, at)
        fields = {"event_type": event.event_type, "job_id": event.job_id, "dedupe_key": key}
        if verdict != "apply":
            log.info(
                "callback_stale" if verdict == "stale" else "callback_retry_suppressed", **fields
            )
            self.metrics.callback(event.event_type, verdict)
            return verdict, None
        room = self.room_for_job(event.job_id) if event.job_id else None
        outcome: Outcome = "applied"
        if room is not None:
            if event.event_type == EVENT_RTMP and event.state in RTMP_STATES:
                assert event.job_id is not None and event.state is not None
                self.sink.post(
                    room,
                    RtmpStateReported(
                        job_id=event.job_id, rtmp_state=event.state, at=at, cause="callback"
                    ),
                )
            elif event.event_type == EVENT_RTMP:
                log.warning("callback_unknown_rtmp_state", room_id=room, **fields)
                self.sink.post(room, Poked(cause="callback:unknown_rtmp_state"))
        elif event.job_id is not None:
            outcome = "unknown_job"
            if event.room_id and self.sink.post(event.room_id, Poked(cause="callback:unknown_job")):
                room = event.room_id
            poked = room is not None
            log.info("callback_unknown_job", room_id=event.room_id, poked=poked, **fields)
        else:
            room = event.room_id
        if event.event_type not in (EVENT_RTMP, EVENT_SCRIPT, EVENT_REPLY):
            log.info("callback_unknown_type", unknown_fields=list(event.unknown_fields), **fields)
        self.metrics.callback(event.event_type, outcome)
        return outcome, room

    async def notify(self, outcome: Outcome, event: CallbackEvent, room: str | None) -> None:
        """Run the ``on_event`` hook for an applied event (failures are logged, not raised)."""
        if self.on_event is None or outcome not in ("applied", "unknown_job"):
            return
        try:
            await self.on_event(event, room)
        except Exception:  # a failing hook must not lose the room's event
            log.exception("callback_hook_failed", event_type=event.event_type, job_id=event.job_id)

    async def dispatch(self, event: CallbackEvent, at: datetime, key: str) -> Outcome:
        outcome, room = self.post(event, at, key)
        await self.notify(outcome, event, room)
        return outcome


# --- intake ----------------------------------------------------------------------------------


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


@dataclass(slots=True)
class _ReplayStats:
    seen: set[int] = field(default_factory=set)
    posted: int = 0


async def replay_inbox(
    store: InboxStore,
    sink: RoomSink,
    *,
    room_for_job: Callable[[str], str | None],
    on_event: OnEvent | None = None,
    dispatcher: Dispatcher | None = None,
    limit: int = 500,
) -> int:
    """Dispatch every pending inbox item (oldest event first) and mark it done; returns the count.

    Run once at startup before serving callbacks: it is what makes "200 sent, then crashed"
    lose nothing. Unreadable rows are logged and marked done (they can never succeed).
    """
    disp = dispatcher or Dispatcher(sink=sink, room_for_job=room_for_job, on_event=on_event)
    stats = _ReplayStats()
    while True:
        batch = [
            it
            for it in await store.inbox_pending(limit)
            if it.id is not None and it.id not in stats.seen
        ]
        if not batch:
            break
        batch.sort(key=lambda it: (it.event_time or it.received_at, it.id or 0))
        done: list[int] = []
        for it in batch:
            assert it.id is not None
            stats.seen.add(it.id)
            done.append(it.id)
            try:
                payload = it.payload
                event = event_from_message(
                    str(payload.get("event_type", it.event_type)),
                    payload.get("message") or {},
                    payload.get("extra") or {},
                )
            except (CallbackParseError, TypeError, AttributeError) as exc:
                reason = exc.reason if isinstance(exc, CallbackParseError) else "bad_payload"
                log.error("callback_replay_unreadable", item_id=it.id, reason=reason)
                continue
            await disp.dispatch(event, order_time(it), it.dedupe_key)
            stats.posted += 1
        await store.inbox_done(done)
        log.info("callback_replayed", count=len(done))
    return stats.posted
