"""The ops HTTP surface: ``/healthz``, ``/readyz``, ``/metrics``, ``/rooms`` JSON, status page.

:func:`ops_routes` returns Starlette routes; ``orchestrator.app`` mounts them next to the
callback receiver in one server. The seams are small on purpose:

* ``rooms`` is anything with ``room_ids()`` and ``room_state(room_id)`` — the application's
  :class:`~orchestrator.control.Control` fits as is; :class:`SnapshotRooms` adapts a plain
  ``() -> Iterable[Snapshot]`` provider (tests, tools).
* ``store`` is read for the audit log, today's SLA and ``ping`` (readiness).
* :class:`Readiness` is told by the application what happened (``api_ok``, ``mqtt``) and
  decides; the HTTP layer never reaches into the cloud client or the MQTT link.

Authentication: when a token is configured everything except ``/healthz`` and ``/readyz``
(probes from systemd, load balancers and orchestrators that hold no token) requires
``Authorization: Bearer <token>``. Browsers cannot attach a bearer header to a page load, so
HTTP Basic with the token as password is accepted too and HTML requests get a Basic challenge.
Comparison is constant-time. Nothing secret is ever rendered: secret-looking keys are dropped
from every JSON body and RTMP URLs lose their stream-key segment and query.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, Protocol

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.control import CommandError
from orchestrator.ops.metrics import Metrics
from orchestrator.ops.status_page import AsgiEndpoint, status_routes, timeline
from orchestrator.payloads import snapshot_json
from orchestrator.redaction import redact
from orchestrator.rooms.explain import describe_record
from orchestrator.rooms.model import Snapshot
from orchestrator.store.base import SlaRow, Store, TransitionRecord

__all__ = [
    "Readiness",
    "RoomsView",
    "SnapshotRooms",
    "ops_routes",
    "redact",
    "snapshot_json",
]

log = structlog.get_logger(__name__)

_HISTORY = timedelta(hours=24)


# --- what the routes read ------------------------------------------------------------------


class RoomsView(Protocol):
    """The read side of :class:`~orchestrator.control.Control` that the ops API needs."""

    def room_ids(self) -> Sequence[str]: ...

    def room_state(self, room_id: str) -> Mapping[str, Any]: ...


class RoomActions(Protocol):
    """The one write the ops API offers: leaving QUARANTINED needs no MQTT broker."""

    async def reset(self, room_id: str, *, cause: str) -> Mapping[str, Any]: ...


class SnapshotRooms:
    """Adapts ``() -> Iterable[Snapshot]`` to :class:`RoomsView` (read once per call)."""

    def __init__(self, provider: Callable[[], Iterable[Snapshot]]) -> None:
        self._provider = provider

    def _all(self) -> dict[str, Snapshot]:
        return {s.room_id: s for s in self._provider()}

    def room_ids(self) -> Sequence[str]:
        return list(self._all())

    def room_state(self, room_id: str) -> Mapping[str, Any]:
        snap = self._all().get(room_id)
        if snap is None:
            raise CommandError("unknown_room", f"no room {room_id!r}")
        return snapshot_json(snap)


# --- redaction -----------------------------------------------------------------------------
# Every JSON answer goes through the daemon's one policy (orchestrator.redaction): secret
# keys masked, push URLs' stream keys and URL passwords masked, registered secrets masked
# inside any text (a cloud error quoting a stream key in last_error).


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, SecretStr):
        return None
    return str(value)


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(
            redact(content), default=_json_default, ensure_ascii=False, separators=(",", ":")
        ).encode()


def _error(status: int, code: str, message: str) -> Response:
    return _Json({"error": {"code": code, "message": message}}, status_code=status)


# --- readiness -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    detail: str


class Readiness:
    """Decides ``/readyz`` from what the application reports.

    * MetaStudio: ``api_ok()`` is called after every successful API call; ready while the
      last one is at most ``api_reachable_s`` old (``OpsSettings.api_reachable_s``).
    * MQTT: only checked when ``mqtt_required`` (MQTT enabled); ``mqtt(connected)`` on changes.
    * Store: ``ping()`` at request time, bounded by ``store_timeout_s``.

    ``clock`` is monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        *,
        api_reachable_s: float = 120.0,
        mqtt_required: bool = False,
        store_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_reachable_s = api_reachable_s
        self.mqtt_required = mqtt_required
        self.store_timeout_s = store_timeout_s
        self._clock = clock
        self._api_ok_at: float | None = None
        self._mqtt = False

    def api_ok(self, at: float | None = None) -> None:
        """A MetaStudio call succeeded at monotonic time ``at`` (default: now)."""
        when = self._clock() if at is None else at
        if self._api_ok_at is None or when > self._api_ok_at:
            self._api_ok_at = when

    def mqtt(self, connected: bool) -> None:
        """The MQTT link connected or dropped."""
        self._mqtt = connected

    def _api_check(self) -> Check:
        if self._api_ok_at is None:
            return Check(False, "no successful MetaStudio call yet")
        age = self._clock() - self._api_ok_at
        if age > self.api_reachable_s:
            return Check(
                False, f"last successful call {age:.0f}s ago (> {self.api_reachable_s:g}s)"
            )
        return Check(True, f"last successful call {age:.0f}s ago")

    async def _store_check(self, store: Store) -> Check:
        try:
            await asyncio.wait_for(store.ping(), timeout=self.store_timeout_s)
        except TimeoutError:
            return Check(False, f"ping timed out after {self.store_timeout_s:g}s")
        except Exception as exc:  # any failure means not ready; report the class name only
            log.warning("readyz_store_failed", error_type=type(exc).__name__)
            return Check(False, f"ping failed: {type(exc).__name__}")
        return Check(True, "ping ok")

    async def check(self, store: Store) -> tuple[bool, dict[str, Check]]:
        checks = {"store": await self._store_check(store), "metastudio": self._api_check()}
        if self.mqtt_required:
            checks["mqtt"] = Check(self._mqtt, "connected" if self._mqtt else "disconnected")
        return all(c.ok for c in checks.values()), checks


# --- authentication ------------------------------------------------------------------------


class _TokenGuard:
    """ASGI wrapper: 401 unless the request carries the ops token (Bearer or Basic password)."""

    def __init__(self, app: ASGIApp, token: bytes) -> None:
        self._app = app
        self._token = token

    def _authorized(self, header: str) -> bool:
        scheme, _, cred = header.partition(" ")
        cred = cred.strip()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(cred, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            cred = decoded.partition(":")[2]
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(cred.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        if self._authorized(request.headers.get("authorization", "")):
            await self._app(scope, receive, send)
            return
        log.info("ops_unauthorized", path=request.url.path, client=_client(request))
        wants_html = "text/html" in request.headers.get("accept", "")
        challenge = 'Basic realm="liveorch"' if wants_html else 'Bearer realm="liveorch"'
        response = _error(401, "unauthorized", "missing or wrong ops token")
        response.headers["WWW-Authenticate"] = challenge
        await response(scope, receive, send)


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


# --- routes --------------------------------------------------------------------------------


def _command_error(room_id: str, exc: CommandError) -> Response:
    if exc.code == "unknown_room":
        return _error(404, "unknown_room", f"no room {room_id!r}")
    if exc.code in ("not_owner", "owned_elsewhere"):
        return _error(409, exc.code, exc.message)
    raise exc


def _today_sla(rows: Iterable[SlaRow], day: date) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for row in rows:
        if row.day != day:
            continue
        pct = 100.0 * row.live_s / row.scheduled_s if row.scheduled_s > 0 else None
        out[row.room_id] = {
            "scheduled_s": row.scheduled_s,
            "live_s": row.live_s,
            "percent": None if pct is None else round(min(pct, 100.0), 2),
        }
    return out


def _transition_json(rec: TransitionRecord) -> dict[str, Any]:
    return {
        "at": rec.at.isoformat(),
        "from": rec.from_state,
        "to": rec.to_state,
        "event": rec.event,
        "cause": rec.cause,
        "why": describe_record(rec.event, rec.cause, rec.from_state, rec.to_state, rec.detail),
        "detail": dict(rec.detail),
    }


def ops_routes(
    *,
    rooms: RoomsView,
    store: Store,
    metrics: Metrics,
    readiness: Readiness,
    token: SecretStr | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    names: Callable[[str], str | None] | None = None,
    actions: RoomActions | None = None,
) -> list[BaseRoute]:
    """All ops routes. ``now`` (aware UTC) decides "today" for SLA and the 24 h history.

    ``names`` gives a room's configured name (shown next to its id); with ``actions``,
    ``POST /rooms/{id}/reset`` takes a room out of QUARANTINED (``liveorch reset``).
    """

    def _named(state: dict[str, Any]) -> dict[str, Any]:
        if names is not None:
            state["name"] = names(str(state.get("room_id", "")))
        return state

    def _states() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for room_id in rooms.room_ids():
            try:
                out.append(_named(dict(rooms.room_state(room_id))))
            except CommandError:
                continue  # removed between the two calls (reload)
        return out

    async def _sla(room_id: str | None = None) -> dict[str, dict[str, float | None]] | None:
        today = now().date()
        try:
            return _today_sla(await store.sla(today, room_id), today)
        except Exception as exc:  # the page must render without the store
            log.warning("ops_sla_unavailable", error_type=type(exc).__name__)
            return None

    async def healthz(request: Request) -> Response:
        return _Json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, checks = await readiness.check(store)
        body = {
            "ready": ok,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in checks.items()},
        }
        return _Json(body, status_code=200 if ok else 503)

    async def metrics_endpoint(request: Request) -> Response:
        states = _states()
        metrics.rooms(
            (str(s.get("state", "UNKNOWN")) for s in states),
            alerting=sum(1 for s in states if s.get("alert")),
        )
        _, checks = await readiness.check(store)
        metrics.ready_checks({name: c.ok for name, c in checks.items()})
        body, content_type = metrics.render()
        return Response(body, headers={"Content-Type": content_type})

    async def rooms_list(request: Request) -> Response:
        states = _states()
        sla = await _sla()
        for s in states:
            s["sla_today"] = None if sla is None else sla.get(str(s.get("room_id")))
        states.sort(key=lambda s: str(s.get("room_id", "")))
        return _Json({"generated_at": now().isoformat(), "rooms": states})

    async def room_detail(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        try:
            state = _named(dict(rooms.room_state(room_id)))
        except CommandError as exc:
            return _command_error(room_id, exc)
        end = now()
        start = end - _HISTORY
        sla = await _sla(room_id)
        state["sla_today"] = None if sla is None else sla.get(room_id)
        try:
            recs = await store.transitions(room_id, since=start, limit=1000)
            # the latest len+1 rows: one more than the window holds means the daemon kept
            # records before it, otherwise the time before its first record has no data
            earlier = len(await store.transitions(room_id, limit=len(recs) + 1)) > len(recs)
        except Exception as exc:  # show the live state even without history
            log.warning(
                "ops_transitions_unavailable", room_id=room_id, error_type=type(exc).__name__
            )
            recs = None
        if recs is not None:
            recs = sorted(recs, key=lambda r: r.at)
            state["transitions"] = [_transition_json(r) for r in reversed(recs)]
            state["timeline"] = {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "segments": timeline(
                    recs,
                    start=start,
                    end=end,
                    current=str(state.get("state", "UNKNOWN")),
                    earlier=earlier,
                ),
            }
        else:
            state["transitions"] = None
            state["timeline"] = None
        return _Json(state)

    async def room_reset(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            # a page of another origin must not make a browser on this host post here (CSRF)
            return _error(403, "cross_origin", "cross-origin requests are refused")
        if actions is None:
            return _error(404, "not_available", "no room actions on this server")
        try:
            result = dict(await actions.reset(room_id, cause="ops:reset"))
        except CommandError as exc:
            return _command_error(room_id, exc)
        log.info("ops_room_reset", room_id=room_id, client=_client(request))
        return _Json({"room_id": room_id, **result}, status_code=202)

    secret = token.get_secret_value().encode() if token is not None else b""

    def _guard(app: ASGIApp) -> ASGIApp:
        return _TokenGuard(app, secret) if secret else app

    def _route(
        path: str,
        endpoint: Callable[[Request], Any],
        name: str,
        methods: Sequence[str] = ("GET", "HEAD"),
    ) -> Route:
        # an ASGI-callable object (not a function) is mounted by Starlette as is
        return Route(
            path,
            AsgiEndpoint(_guard(request_response(endpoint))),
            methods=list(methods),
            name=name,
        )

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"], name="healthz"),
        Route("/readyz", readyz, methods=["GET", "HEAD"], name="readyz"),
        _route("/metrics", metrics_endpoint, "metrics"),
        _route("/rooms", rooms_list, "rooms"),
        _route("/rooms/{room_id}", room_detail, "room"),
        _route("/rooms/{room_id}/reset", room_reset, "room_reset", methods=("POST",)),
    ]
    routes.extend(status_routes(guard=_guard))
    return routes
