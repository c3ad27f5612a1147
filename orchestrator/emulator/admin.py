"""The emulator's admin API (``/_emulator/...``): inspect jobs, inject faults, drive the clock.

Ours, not MetaStudio's: no authentication, but loopback clients only (403 ``EMULATOR.0403``
otherwise). Documented in ``docs/emulator.md``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.httpbits import INTERNAL, error_response, is_loopback, parse_json
from orchestrator.emulator.journal import Journal
from orchestrator.emulator.platform import key_fingerprint
from orchestrator.emulator.service import EmulatorService, Fault
from orchestrator.emulator.validation import ApiError, bad_request

__all__ = ["ADMIN_REFUSED", "admin_routes"]

log = structlog.get_logger(__name__)

ADMIN_REFUSED = "EMULATOR.0403"  # the admin API is ours, not MetaStudio's


def admin_routes(service: EmulatorService, journal: Journal | None = None) -> list[Route]:
    """The ``/_emulator/...`` routes over ``service`` (and the app's ``journal``)."""
    journal = journal if journal is not None else Journal()

    def admin(
        fn: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            if not is_loopback(request):
                return error_response(403, ADMIN_REFUSED, "The emulator admin API is loopback-only")
            try:
                return await fn(request)
            except ApiError as exc:
                return error_response(exc.status, exc.error_code, exc.error_msg)

        return wrapped

    async def admin_body(request: Request) -> dict[str, Any]:
        body = parse_json(await request.body())
        if not isinstance(body, dict):
            raise bad_request("body must be an object")
        return body

    @admin
    async def admin_jobs(request: Request) -> Response:
        return JSONResponse({"jobs": service.admin_jobs()})

    @admin
    async def admin_rtmp(request: Request) -> Response:
        body = await admin_body(request)
        hold = body.get("hold_s")
        if hold is not None and (isinstance(hold, bool) or not isinstance(hold, int | float)):
            raise bad_request("hold_s must be a number")
        service.force_rtmp(
            request.path_params["job_id"],
            str(body.get("state")),
            None if hold is None else float(hold),
        )
        return JSONResponse({"job": _admin_job(service, request.path_params["job_id"])})

    @admin
    async def admin_fail(request: Request) -> Response:
        service.fail_job(request.path_params["job_id"], "Internal error (injected by emulator)")
        return JSONResponse({"job": _admin_job(service, request.path_params["job_id"])})

    @admin
    async def admin_faults(request: Request) -> Response:
        body = await admin_body(request)
        try:
            fault = Fault(
                operation=str(body.get("operation", "any")),
                status=None if body.get("status") is None else int(body["status"]),
                error_code=str(body.get("error_code") or INTERNAL),
                error_msg=str(body.get("error_msg") or "Internal Error"),
                count=int(body.get("count", 1)),
                latency_ms=float(body.get("latency_ms") or 0),
                ghost=bool(body.get("ghost", False)),
                for_s=None if body.get("for_s") is None else float(body["for_s"]),
                probability=float(body.get("probability", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise bad_request("malformed fault") from exc
        service.add_fault(fault)
        return JSONResponse({"faults": len(service.faults)})

    @admin
    async def admin_clear_faults(request: Request) -> Response:
        return JSONResponse({"cleared": service.clear_faults(), "faults": 0})

    @admin
    async def admin_callbacks(request: Request) -> Response:
        body = await admin_body(request)
        knobs = service.callbacks.knobs
        try:
            for key in ("drop_rate", "duplicate_rate"):
                if key in body:
                    value = float(body[key])
                    if not 0.0 <= value <= 1.0:
                        raise bad_request(f"{key} must be within [0, 1]")
                    setattr(knobs, key, value)
            if "reorder" in body:
                knobs.reorder = bool(body["reorder"])
            if "delay_ms" in body:
                knobs.delay_ms = max(0.0, float(body["delay_ms"]))
        except (TypeError, ValueError) as exc:
            raise bad_request("malformed callback knobs") from exc
        return JSONResponse(
            {
                "drop_rate": knobs.drop_rate,
                "duplicate_rate": knobs.duplicate_rate,
                "reorder": knobs.reorder,
                "delay_ms": knobs.delay_ms,
            }
        )

    def _opt_seconds(body: dict[str, Any], key: str) -> float | None:
        value = body.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad_request(f"{key} must be a number")
        return float(value)

    @admin
    async def admin_ingest_fault(request: Request) -> Response:
        body = await admin_body(request)
        fault = service.ingest_fault(
            request.path_params["ingest"],
            str(body.get("kind")),
            for_s=_opt_seconds(body, "for_s"),
            up_s=_opt_seconds(body, "up_s"),
            delay_s=_opt_seconds(body, "delay_s"),
        )
        return JSONResponse({"ingest": request.path_params["ingest"].lower(), "fault": fault})

    @admin
    async def admin_ingest_clear(request: Request) -> Response:
        return JSONResponse({"cleared": service.clear_ingest(request.path_params["ingest"])})

    @admin
    async def admin_key(request: Request) -> Response:
        body = await admin_body(request)
        key = body.get("stream_key")
        if not isinstance(key, str) or not key:
            raise bad_request("stream_key must be a non-empty string")
        if request.path_params["action"] == "revoke":
            service.revoke_key(key)
            return JSONResponse({"revoked": True, "at": service.now()})
        if request.path_params["action"] == "restore":
            return JSONResponse({"restored": service.restore_key(key)})
        raise ApiError(404, "APIGW.0101", "The API does not exist or has not been published")

    @admin
    async def admin_on_publish(request: Request) -> Response:
        """nginx-rtmp's ``on_publish`` hook (form-encoded; ``name`` is the stream key, the last
        segment of the push URL): 403 refuses the publish for a revoked key, as a platform's
        ingest would, so under ``--push-ffmpeg`` a revoked key is a real media fault."""
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("name") or [""])[0]
        if service.platform.key_refused(key):
            log.info("emulator_publish_refused", key=key_fingerprint(key))
            return PlainTextResponse("stream key refused", status_code=403)
        return PlainTextResponse("ok")

    @admin
    async def admin_platform(request: Request) -> Response:
        return JSONResponse(service.platform.view(service.now()))

    @admin
    async def admin_journal(request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            raise bad_request("since must be an integer") from None
        return JSONResponse(journal.since(since))

    @admin
    async def admin_reset(request: Request) -> Response:
        service.reset()
        journal.clear()
        return JSONResponse({"reset": True})

    @admin
    async def admin_credentials(request: Request) -> Response:
        # what `liveorch run --emulator` needs; loopback-only like all of /_emulator
        ak, sk = next(iter(service.credentials.items()))
        return JSONResponse(
            {"project_id": service.project_id, "region": service.region, "ak": ak, "sk": sk}
        )

    @admin
    async def admin_stats(request: Request) -> Response:
        return JSONResponse(service.admin_stats())

    @admin
    async def admin_advance(request: Request) -> Response:
        if not isinstance(service.clock, ManualClock):
            raise ApiError(409, "MSS.00000003", "the emulator runs on a real clock")
        body = await admin_body(request)
        seconds = body.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise bad_request("seconds must be a non-negative number")
        await service.advance(float(seconds))
        return JSONResponse({"now": service.now()})

    return [
        Route("/_emulator/jobs", admin_jobs, methods=["GET"]),
        Route("/_emulator/jobs/{job_id}/rtmp", admin_rtmp, methods=["POST"]),
        Route("/_emulator/jobs/{job_id}/fail", admin_fail, methods=["POST"]),
        Route("/_emulator/faults", admin_faults, methods=["POST"]),
        Route("/_emulator/faults", admin_clear_faults, methods=["DELETE"]),
        Route("/_emulator/callbacks", admin_callbacks, methods=["POST"]),
        Route("/_emulator/reset", admin_reset, methods=["POST"]),
        Route("/_emulator/ingests/{ingest}/faults", admin_ingest_fault, methods=["POST"]),
        Route("/_emulator/ingests/{ingest}/faults", admin_ingest_clear, methods=["DELETE"]),
        Route("/_emulator/stream-keys/{action}", admin_key, methods=["POST"]),
        Route("/_emulator/platform", admin_platform, methods=["GET"]),
        Route("/_emulator/rtmp/on_publish", admin_on_publish, methods=["POST"]),
        Route("/_emulator/stats", admin_stats, methods=["GET"]),
        Route("/_emulator/journal", admin_journal, methods=["GET"]),
        Route("/_emulator/credentials", admin_credentials, methods=["GET"]),
        Route("/_emulator/clock/advance", admin_advance, methods=["POST"]),
    ]


def _admin_job(service: EmulatorService, job_id: str) -> dict[str, Any]:
    for item in service.admin_jobs():
        if item["job_id"] == job_id:
            return item
    raise ApiError(404, "MSS.00000003", f"Smart live job {job_id} does not exist")
