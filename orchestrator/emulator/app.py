"""Starlette front of the emulator: the MetaStudio REST API, IAM token/projects, admin API.

Every response carries ``X-Request-Id``; errors use the documented ``{"error_code",
"error_msg"}`` body. Requests are handled in the gateway's order: authentication
(``SDK-HMAC-SHA256`` verified by :func:`orchestrator.metastudio.signer.verify`, or an
``X-Auth-Token`` issued by ``POST /v3/auth/tokens``) → throttling (429 ``APIGW.0308``) →
injected faults → the service. ``/_emulator/*`` needs no auth but refuses non-loopback clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.emulator.admin import admin_routes
from orchestrator.emulator.httpbits import INTERNAL, error_response, parse_json
from orchestrator.emulator.journal import Journal
from orchestrator.emulator.service import EmulatorService, Fault
from orchestrator.emulator.validation import ApiError, bad_request
from orchestrator.metastudio.constraints import ConstraintViolation, check_app_user_id
from orchestrator.metastudio.signer import SignatureError, verify

__all__ = ["create_app"]

log = structlog.get_logger(__name__)

_P = "/v1/{project_id}"
_JOB = _P + "/smart-live-rooms/{room_id}/smart-live-jobs/{job_id}"
_AUTH_PREFIX = "Incorrect IAM authentication information: "
# error codes of the StartSmartLive page's examples (seed lines 1797-1816)
UNAUTHORIZED = "MSS.00000001"


class _RequestIdMiddleware:
    """Adds ``X-Request-Id`` to every response, including errors and unknown routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _utf8_headers(request: Request) -> dict[str, str]:
    """Header values as the SDK meant them: it signs the Unicode value and sends its UTF-8 bytes.

    Starlette decodes values as latin-1, which turns a non-ASCII ``X-App-UserId`` into mojibake
    and breaks the signature; bytes that are not UTF-8 keep the latin-1 reading.
    """
    out: dict[str, str] = {}
    for raw_name, raw_value in request.scope.get("headers", []):
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        name = raw_name.decode("latin-1").lower()
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def create_app(service: EmulatorService) -> Starlette:
    """Build the ASGI app; its lifespan starts/stops the service's background tasks."""
    journal = Journal()
    service.rtmp_listeners.append(
        lambda job, state: journal.rtmp(job.job_id, job.room_id, job.stream_key, state)
    )

    def authenticate(request: Request, body: bytes, *, project_scoped: bool = True) -> None:
        token = request.headers.get("x-auth-token")
        if token:
            if not service.token_valid(token):
                raise ApiError(401, "APIGW.0301", _AUTH_PREFIX + "The token must be updated.")
            return
        authorization = request.headers.get("authorization")
        if not authorization:
            raise ApiError(401, "APIGW.0301", _AUTH_PREFIX + "no Authorization or X-Auth-Token")
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        try:
            verify(
                authorization=authorization,
                method=request.method,
                path=raw_path.decode("latin-1"),
                raw_query=request.scope.get("query_string", b"").decode("latin-1"),
                headers=_utf8_headers(request),
                body=body,
                secret_for=service.credentials.get,
                now=datetime.fromtimestamp(service.wallclock(), UTC),
            )
        except SignatureError as exc:
            log.info("emulator_auth_rejected", reason=exc.reason, path=request.url.path)
            raise ApiError(401, "APIGW.0301", _AUTH_PREFIX + exc.reason) from None

    async def api(
        request: Request,
        operation: str,
        handler: Callable[[Any], Any],
        *,
        status: int = 200,
    ) -> Response:
        body = await request.body()
        room_id = request.path_params.get("room_id")
        fault: Fault | None = None
        cause = "service"  # what the journal blames for an error answer
        try:
            authenticate(request, body)
            if request.path_params.get("project_id") != service.project_id:
                raise ApiError(401, "APIGW.0301", _AUTH_PREFIX + "project mismatch")
            app_user_id = _utf8_headers(request).get("x-app-userid")
            if app_user_id:
                try:
                    check_app_user_id(app_user_id)
                except ConstraintViolation as exc:
                    raise bad_request(str(exc)) from None
            service.record_call(operation)
            cause = "throttled"
            service.check_rate(operation)
            cause = "service"
            fault = service.take_fault(operation)
            if fault is not None:
                cause = "fault"
                if fault.latency_ms > 0:
                    await asyncio.sleep(fault.latency_ms / 1000.0)
                if fault.ghost and operation == "start":
                    handler(parse_json(body))
                    log.info("emulator_ghost_start", room_id=room_id)
                    journal.call(operation, room_id, 504, cause)
                    await _hold_until_disconnect(request)
                    return error_response(504, "APIGW.0201", "Backend timeout")
                if fault.status is not None:
                    raise ApiError(fault.status, fault.error_code, fault.error_msg)
            result = handler(parse_json(body))
        except ApiError as exc:
            journal.call(operation, room_id, exc.status, cause)
            return error_response(exc.status, exc.error_code, exc.error_msg)
        if fault is not None:  # delayed by an injected latency, answered all the same
            journal.call(operation, room_id, status, cause)
        if result is None:
            return Response(status_code=status, media_type="application/json")
        return JSONResponse(result, status_code=status)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # ------------------------------------------------------------- MetaStudio API

    async def start(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        return await api(
            request,
            "start",
            lambda b: service.start_job(room_id, b, base_url=base_url(request)),
            status=202,
        )

    async def list_room_jobs(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        return await api(
            request, "list", lambda _: service.list_jobs(room_id, request.query_params)
        )

    async def list_tenant_jobs(request: Request) -> Response:
        return await api(
            request, "list_tenant", lambda _: service.list_jobs(None, request.query_params)
        )

    async def show(request: Request) -> Response:
        p = request.path_params
        return await api(request, "show", lambda _: service.show_job(p["room_id"], p["job_id"]))

    async def stop(request: Request) -> Response:
        p = request.path_params
        return await api(request, "stop", lambda _: service.stop_job(p["room_id"], p["job_id"]))

    async def command(request: Request) -> Response:
        p = request.path_params
        return await api(
            request, "command", lambda b: service.command(p["room_id"], p["job_id"], b)
        )

    async def insert_commands(request: Request) -> Response:
        p = request.path_params
        return await api(
            request,
            "insert_commands",
            lambda _: service.list_insert_commands(p["room_id"], p["job_id"], request.query_params),
        )

    async def report(request: Request) -> Response:
        p = request.path_params
        auth_key = request.query_params.get("auth_key") or request.headers.get("x-mss-auth-key")
        if auth_key:
            expires = request.query_params.get("expires_time") or request.headers.get(
                "x-mss-expires-time", ""
            )
            body = await request.body()
            ok = (
                expires.isdigit()
                and int(expires) / 1000.0 > service.now()
                and service.report_auth_key(p["job_id"], int(expires)) == auth_key
            )
            if not ok:
                # the service's own check (no gateway in front of the report URL's key)
                return error_response(401, UNAUTHORIZED, "Unauthorized")
            try:
                service.record_call("report")
                service.check_rate("report")
                service.report_events(p["room_id"], p["job_id"], parse_json(body))
            except ApiError as exc:
                return error_response(exc.status, exc.error_code, exc.error_msg)
            return JSONResponse(
                {"live_event_report_url": service.jobs[p["job_id"]].live_event_report_url}
            )

        def handle(b: Any) -> dict[str, Any]:
            service.report_events(p["room_id"], p["job_id"], b)
            return {"live_event_report_url": service.jobs[p["job_id"]].live_event_report_url}

        return await api(request, "report", handle)

    async def warning_info(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        return await api(request, "show_warning", lambda _: service.show_live_warning_info(room_id))

    async def confirm_room(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        return await api(request, "confirm_room", lambda b: service.confirm_room(room_id, b))

    async def batch_confirm(request: Request) -> Response:
        p = request.path_params
        return await api(
            request,
            "batch_confirm",
            lambda b: service.batch_confirm_commands(p["room_id"], p["job_id"], b),
        )

    async def rule_commands(request: Request) -> Response:
        return await api(
            request,
            "list_rule_commands",
            lambda _: service.list_pending_commands(
                "REWRITE_INTERACTION_RULES", request.query_params
            ),
        )

    async def script_commands(request: Request) -> Response:
        return await api(
            request,
            "list_script_commands",
            lambda _: service.list_pending_commands("REWRITE_PLAY_SCRIPT", request.query_params),
        )

    async def rooms(request: Request) -> Response:
        if request.method == "POST":
            return await api(request, "create_room", service.create_room)
        return await api(request, "list_rooms", lambda _: service.list_rooms(request.query_params))

    async def room(request: Request) -> Response:
        room_id = request.path_params["room_id"]
        if request.method == "PUT":
            return await api(request, "update_room", lambda b: service.update_room(room_id, b))
        if request.method == "DELETE":
            return await api(request, "delete_room", lambda _: service.delete_room(room_id))
        return await api(request, "show_room", lambda _: service.show_room(room_id))

    # ------------------------------------------------------------- IAM

    async def tokens(request: Request) -> Response:
        try:
            token, body = service.issue_token(
                parse_json(await request.body()),
                nocatalog=bool(request.query_params.get("nocatalog")),
            )
        except ApiError as exc:
            return error_response(exc.status, exc.error_code, exc.error_msg)
        return JSONResponse(body, status_code=201, headers={"X-Subject-Token": token})

    async def projects(request: Request) -> Response:
        try:
            authenticate(request, await request.body())
        except ApiError as exc:
            return error_response(exc.status, exc.error_code, exc.error_msg)
        return JSONResponse(service.list_projects(request.query_params.get("name")))

    # ------------------------------------------------------------- errors + wiring

    async def internal_error(request: Request, exc: Exception) -> Response:
        # the page's 500 body; the traceback goes to the log, never to the caller
        log.error("emulator_internal_error", path=request.url.path, error=type(exc).__name__)
        return error_response(500, INTERNAL, "Internal Error")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return error_response(405, "APIGW.0101", "The API does not support this method")
        return error_response(404, "APIGW.0101", "The API does not exist or has not been published")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with service:
            yield

    routes = [
        Route(_P + "/smart-live-rooms/{room_id}/smart-live-jobs", start, methods=["POST"]),
        Route(_P + "/smart-live-rooms/{room_id}/smart-live-jobs", list_room_jobs, methods=["GET"]),
        Route(_P + "/smart-live-jobs", list_tenant_jobs, methods=["GET"]),
        Route(_JOB, show, methods=["GET"]),
        Route(_JOB + "/stop", stop, methods=["POST"]),
        Route(_JOB + "/command", command, methods=["POST"]),
        Route(_JOB + "/command/insert-commands", insert_commands, methods=["GET"]),
        Route(_JOB + "/live-event-report", report, methods=["POST"]),
        Route(_JOB + "/batch-commands-confirm", batch_confirm, methods=["POST"]),
        Route(_P + "/smart-live-command/rule-commands", rule_commands, methods=["GET"]),
        Route(_P + "/smart-live-command/script-commands", script_commands, methods=["GET"]),
        Route(_P + "/smart-live-rooms/{room_id}/live-warning-info", warning_info, methods=["GET"]),
        Route(_P + "/smart-live-rooms/{room_id}/confirm", confirm_room, methods=["POST"]),
        Route(_P + "/smart-live-rooms", rooms, methods=["GET", "POST"]),
        Route(_P + "/smart-live-rooms/{room_id}", room, methods=["GET", "PUT", "DELETE"]),
        Route("/v3/auth/tokens", tokens, methods=["POST"]),
        Route("/v3/projects", projects, methods=["GET"]),
        *admin_routes(service, journal),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found, Exception: internal_error},
    )
    app.add_middleware(_RequestIdMiddleware)
    return app


async def _hold_until_disconnect(request: Request) -> None:
    """A ghost start: keep the response back until the client gives up (or shutdown)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
