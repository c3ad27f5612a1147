"""Async MetaStudio smart-live client over an injected ``httpx.AsyncClient`` (api doc §2).

The boundary of the cloud: requests are validated before sending, each call waits on the shared
per-group rate limits, every answer is mapped to a model or to an error from
:mod:`orchestrator.errors` (status + ``error_code``, chained with ``raise ... from``), and every
result and error carries the ``X-Request-Id``.

Retries: only safe reads (show/list) are retried automatically, on temporary errors, with capped
jittered backoff that honours ``Retry-After``. Writes are never retried here; a start whose answer
was lost raises :class:`~orchestrator.errors.StartOutcomeUnknown` so the caller lists the room's
jobs before trying again (never a duplicate push).

Each attempt is logged as ``metastudio_call`` and reported to the optional ``on_call`` hook
(operation, status or error code, seconds) for Prometheus; neither ever contains a secret.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ValidationError

from orchestrator.backoff import capped, jittered
from orchestrator.errors import (
    CloudError,
    CloudUnavailable,
    InvalidRequest,
    StartOutcomeUnknown,
    TemporaryError,
)
from orchestrator.metastudio import signer
from orchestrator.metastudio.errormap import error_from_response, parse_retry_after
from orchestrator.metastudio.models import (
    Command,
    CommandResult,
    ControlSmartLiveReq,
    CreateSmartLiveRoomReq,
    CreateSmartLiveRoomResp,
    LiveExitConfig,
    PlayTextInfo,
    RefreshOutputUrlConfig,
    SmartLiveJob,
    SmartLiveJobBrief,
    SmartLiveJobBriefList,
    SmartLiveJobList,
    SmartLiveRoom,
    SmartLiveRoomList,
    StartSmartLiveReq,
    StartSmartLiveResp,
    build,
    describe_errors,
    to_wire,
)
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits

__all__ = [
    "DEFAULT_TIMEOUT",
    "CallHook",
    "MetaStudioClient",
    "error_from_response",
    "parse_retry_after",
]

log = structlog.get_logger(__name__)

CallHook = Callable[[str, str, float], None]
"""``on_call(operation, status_or_error_code, seconds)``: e.g. feed a Prometheus histogram."""

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)

# network errors that prove the request never left us: a start can safely be called failed
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

M = TypeVar("M", bound=BaseModel)
J = TypeVar("J", covariant=True)


class _Paged(Protocol[J]):
    """A page of a job listing (full or brief)."""

    @property
    def count(self) -> int: ...
    @property
    def smart_live_jobs(self) -> Sequence[J]: ...


# ------------------------------------------------------------------------- error mapping


def _q(segment: str, what: str) -> str:
    if not segment:
        raise InvalidRequest(f"{what} must not be empty")
    return quote(segment, safe="")


def _rfc3339(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------- client


class MetaStudioClient:
    """One tenant/project. Share one instance (and one :class:`RateLimits`) across all rooms."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        project_id: str,
        auth: httpx.Auth | None = None,
        limits: RateLimits | None = None,
        app_user_id: str | None = None,
        read_retries: int = 2,
        on_call: CallHook | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not project_id:
            raise ValueError("project_id is required")
        if app_user_id is not None and any(ord(c) > 127 for c in app_user_id):
            raise ValueError("X-App-UserId must not contain non-ASCII (e.g. Chinese) characters")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._project_id = project_id
        self._auth = auth
        self._limits = limits if limits is not None else RateLimits()
        self._app_user_id = app_user_id
        self._read_retries = max(0, read_retries)
        self._on_call = on_call
        self._timeout = timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._jitter = jitter

    def set_auth(self, auth: httpx.Auth | None) -> None:
        """Swap the credentials (AK/SK rotation on reload); calls in flight keep their own."""
        self._auth = auth

    def __repr__(self) -> str:
        return f"MetaStudioClient(base_url={self._base_url!r}, project_id={self._project_id!r})"

    @classmethod
    def endpoint_for_region(cls, region: str) -> str:
        """``https://metastudio.{region}.myhuaweicloud.com`` (§12)."""
        if not region or not all(c.isalnum() or c == "-" for c in region):
            raise ValueError(f"not a region id: {region!r}")
        return f"https://metastudio.{region}.myhuaweicloud.com"

    @property
    def limits(self) -> RateLimits:
        return self._limits

    # ------------------------------------------------------------------ plumbing

    def _path(self, *parts: str) -> str:
        return "/v1/" + quote(self._project_id, safe="") + "/" + "/".join(parts)

    def _report(
        self,
        operation: str,
        outcome: str,
        started: float,
        *,
        status: int | None,
        error_code: str | None,
        request_id: str | None,
        attempt: int,
        waited: float,
        failed: bool,
    ) -> None:
        seconds = time.monotonic() - started
        fields: dict[str, Any] = {
            "operation": operation,
            "status": status,
            "error_code": error_code,
            "request_id": request_id,
            "duration_s": round(seconds, 4),
            "attempt": attempt,
            "rate_wait_s": round(waited, 4),
            "outcome": outcome,
        }
        if failed:
            log.warning("metastudio_call", **fields)
        else:
            log.info("metastudio_call", **fields)
        if self._on_call is not None:
            try:
                self._on_call(operation, outcome, seconds)
            except Exception:  # a metrics hook must never break a cloud call
                log.exception("metastudio_on_call_hook_failed", operation=operation)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        nominal = capped(attempt, base_s=self._backoff_base, cap_s=self._backoff_cap)
        delay = jittered(nominal, self._jitter())  # equal jitter: [d/2, d)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _call(
        self,
        operation: str,
        group: ApiGroup,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        retry: bool = False,
        is_start: bool = False,
    ) -> httpx.Response:
        """Send one logical call (with retries for safe reads); return a 2xx response."""
        url = self._base_url + path
        wire_query = signer.canonical_query(list(query))
        if wire_query:
            url += "?" + wire_query
        headers = {"Content-Type": "application/json"}
        if self._app_user_id:
            headers["X-App-UserId"] = self._app_user_id
        content = json.dumps(body).encode("ascii") if body is not None else None
        attempts = 1 + (self._read_retries if retry else 0)
        for attempt in range(attempts):
            waited = await self._limits.acquire(group)
            started = time.monotonic()
            last = attempt == attempts - 1
            try:
                response = await self._http.request(
                    method,
                    url,
                    content=content,
                    headers=headers,
                    auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                    timeout=self._timeout,
                )
            except httpx.HTTPError as exc:
                kind = type(exc).__name__
                self._report(
                    operation, kind, started, status=None, error_code=None, request_id=None,
                    attempt=attempt, waited=waited, failed=True,
                )  # fmt: skip
                if is_start and not isinstance(exc, _NOT_SENT):
                    raise StartOutcomeUnknown(
                        f"MetaStudio {operation}: request sent but no answer ({kind}); "
                        "list the room's jobs before starting again",
                        operation=operation,
                    ) from exc
                error: CloudError = CloudUnavailable(
                    f"MetaStudio {operation}: network error ({kind})", operation=operation
                )
                if last:
                    raise error from exc
                await self._sleep(self._backoff(attempt, None))
                continue
            except CloudError as exc:  # raised by an auth flow (e.g. IAM token fetch)
                self._report(
                    operation, exc.error_code or type(exc).__name__, started, status=exc.status,
                    error_code=exc.error_code, request_id=exc.request_id, attempt=attempt,
                    waited=waited, failed=True,
                )  # fmt: skip
                raise
            request_id = response.headers.get("X-Request-Id")
            if response.is_success:
                self._report(
                    operation, str(response.status_code), started, status=response.status_code,
                    error_code=None, request_id=request_id, attempt=attempt, waited=waited,
                    failed=False,
                )  # fmt: skip
                return response
            error = error_from_response(operation, response)
            self._report(
                operation, error.error_code or str(response.status_code), started,
                status=response.status_code, error_code=error.error_code,
                request_id=error.request_id, attempt=attempt, waited=waited, failed=True,
            )  # fmt: skip
            retry_after = error.retry_after if isinstance(error, TemporaryError) else None
            too_long = retry_after is not None and retry_after > self._max_retry_after
            if last or not isinstance(error, TemporaryError) or too_long:
                raise error
            await self._sleep(self._backoff(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _parse(
        operation: str, model: type[M], response: httpx.Response, *, is_start: bool = False
    ) -> M:
        request_id = response.headers.get("X-Request-Id")
        try:
            result = model.model_validate_json(response.content or b"{}")
        except ValidationError as exc:
            message = f"MetaStudio {operation}: unexpected answer ({describe_errors(exc)})"
            kw: dict[str, Any] = {
                "operation": operation,
                "status": response.status_code,
                "request_id": request_id,
            }
            if is_start:
                raise StartOutcomeUnknown(message, **kw) from exc
            raise CloudUnavailable(message, **kw) from exc
        if hasattr(result, "request_id"):
            result.request_id = request_id
        return result

    # ------------------------------------------------------------------ jobs

    async def start_job(self, room_id: str, req: StartSmartLiveReq) -> StartSmartLiveResp:
        """Start a job (202). Never retried; a lost answer raises StartOutcomeUnknown."""
        checked = build(StartSmartLiveReq, req)
        path = self._path("smart-live-rooms", _q(room_id, "room_id"), "smart-live-jobs")
        response = await self._call(
            "start_smart_live", ApiGroup.START, "POST", path, body=to_wire(checked), is_start=True
        )
        return self._parse("start_smart_live", StartSmartLiveResp, response, is_start=True)

    async def stop_job(self, room_id: str, job_id: str) -> None:
        """Stop a job (200, empty body). Not retried: the caller re-reads the job instead."""
        path = self._path(
            "smart-live-rooms", _q(room_id, "room_id"),
            "smart-live-jobs", _q(job_id, "job_id"), "stop",
        )  # fmt: skip
        await self._call("stop_smart_live", ApiGroup.STOP, "POST", path)

    async def show_job(self, room_id: str, job_id: str) -> SmartLiveJob:
        path = self._path(
            "smart-live-rooms", _q(room_id, "room_id"), "smart-live-jobs", _q(job_id, "job_id")
        )
        response = await self._call("show_smart_live", ApiGroup.JOB_QUERY, "GET", path, retry=True)
        return self._parse("show_smart_live", SmartLiveJob, response)

    @staticmethod
    def _job_query(
        *,
        offset: int,
        limit: int,
        states: Sequence[str] | None,
        sort_key: str | None,
        sort_dir: str | None,
        create_since: datetime | str | None,
        create_until: datetime | str | None,
        room_name: str | None = None,
    ) -> list[tuple[str, str]]:
        if not 0 <= offset <= 2147483647:
            raise InvalidRequest("offset must be within 0..2147483647")
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit (page_size) must be within 1..100")
        if sort_key is not None and sort_key not in ("create_time", "update_time", "asset_order"):
            raise InvalidRequest("sort_key must be create_time, update_time or asset_order")
        if sort_dir is not None and sort_dir not in ("asc", "desc"):
            raise InvalidRequest("sort_dir must be asc or desc")
        query = [("offset", str(offset)), ("limit", str(limit))]
        if states:
            query.append(("state", ",".join(str(s) for s in states)))
        optional = {
            "sort_key": sort_key,
            "sort_dir": sort_dir,
            "create_since": _rfc3339(create_since),
            "create_until": _rfc3339(create_until),
            "room_name": room_name,
        }
        query += [(k, v) for k, v in optional.items() if v is not None]
        return query

    async def list_room_jobs_page(
        self,
        room_id: str,
        *,
        offset: int = 0,
        limit: int = 100,
        states: Sequence[str] | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
    ) -> SmartLiveJobList:
        """One page of a room's jobs, with the total ``count``."""
        query = self._job_query(
            offset=offset, limit=limit, states=states, sort_key=sort_key, sort_dir=sort_dir,
            create_since=create_since, create_until=create_until,
        )  # fmt: skip
        path = self._path("smart-live-rooms", _q(room_id, "room_id"), "smart-live-jobs")
        response = await self._call(
            "list_smart_live", ApiGroup.JOB_QUERY, "GET", path, query=query, retry=True
        )
        return self._parse("list_smart_live", SmartLiveJobList, response)

    async def list_tenant_jobs_page(
        self,
        *,
        offset: int = 0,
        limit: int = 100,
        states: Sequence[str] | None = None,
        room_name: str | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
    ) -> SmartLiveJobList:
        """One page of all the tenant's jobs (``room_name`` is a fuzzy filter)."""
        query = self._job_query(
            offset=offset, limit=limit, states=states, sort_key=sort_key, sort_dir=sort_dir,
            create_since=create_since, create_until=create_until, room_name=room_name,
        )  # fmt: skip
        return await self._tenant_page(query, SmartLiveJobList)

    async def _tenant_page(self, query: list[tuple[str, str]], model: type[M]) -> M:
        response = await self._call(
            "list_smart_live_jobs",
            ApiGroup.JOB_QUERY,
            "GET",
            self._path("smart-live-jobs"),
            query=query,
            retry=True,
        )
        return self._parse("list_smart_live_jobs", model, response)

    @staticmethod
    async def _exhaust(fetch: Callable[[int], Awaitable[_Paged[J]]]) -> AsyncIterator[J]:
        offset = 0
        while True:
            page = await fetch(offset)
            for job in page.smart_live_jobs:
                yield job
            offset += len(page.smart_live_jobs)
            if not page.smart_live_jobs or offset >= page.count:
                return

    def iter_room_jobs(
        self,
        room_id: str,
        *,
        states: Sequence[str] | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SmartLiveJob]:
        """All of a room's jobs, page by page until ``count`` is reached."""

        def fetch(offset: int) -> Awaitable[SmartLiveJobList]:
            return self.list_room_jobs_page(
                room_id, offset=offset, limit=page_size, states=states, sort_key=sort_key,
                sort_dir=sort_dir, create_since=create_since, create_until=create_until,
            )  # fmt: skip

        return self._exhaust(fetch)

    def iter_tenant_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        room_name: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SmartLiveJob]:
        """All of the tenant's jobs, page by page until ``count`` is reached."""

        def fetch(offset: int) -> Awaitable[SmartLiveJobList]:
            return self.list_tenant_jobs_page(
                offset=offset, limit=page_size, states=states, room_name=room_name
            )

        return self._exhaust(fetch)

    def iter_tenant_job_briefs(
        self, *, states: Sequence[str] | None = None, page_size: int = 100
    ) -> AsyncIterator[SmartLiveJobBrief]:
        """Like :meth:`iter_tenant_jobs`, but each job is only its id, room, state (and the
        emulator's RTMP state): what a poll of thousands of rooms needs, parsed cheaply."""

        def fetch(offset: int) -> Awaitable[SmartLiveJobBriefList]:
            query = self._job_query(
                offset=offset, limit=page_size, states=states, sort_key=None, sort_dir=None,
                create_since=None, create_until=None,
            )  # fmt: skip
            return self._tenant_page(query, SmartLiveJobBriefList)

        return self._exhaust(fetch)

    # ------------------------------------------------------------------ commands

    async def execute_command(
        self,
        room_id: str,
        job_id: str,
        command: str,
        params: BaseModel | Mapping[str, Any] | None = None,
    ) -> CommandResult:
        """Run a runtime command (§5). Params are checked against the command's typed model."""
        raw_params: Any = params
        if isinstance(params, BaseModel):
            raw_params = to_wire(params)
        elif params is not None:
            raw_params = dict(params)
        req = build(ControlSmartLiveReq, {"command": command, "params": raw_params})
        path = self._path(
            "smart-live-rooms", _q(room_id, "room_id"),
            "smart-live-jobs", _q(job_id, "job_id"), "command",
        )  # fmt: skip
        response = await self._call(
            "execute_smart_live_command", ApiGroup.COMMAND, "POST", path, body=to_wire(req)
        )
        return self._parse("execute_smart_live_command", CommandResult, response)

    async def refresh_output_url(
        self, room_id: str, job_id: str, *, output_url: str, stream_key: str
    ) -> CommandResult:
        """``REFRESH_OUTPUT_URL`` with one target (params field names unconfirmed, §5.3)."""
        params = build(
            RefreshOutputUrlConfig, {"output_urls": [output_url], "stream_keys": [stream_key]}
        )
        return await self.execute_command(room_id, job_id, Command.REFRESH_OUTPUT_URL, params)

    async def reset_exit_config(
        self, room_id: str, job_id: str, config: LiveExitConfig
    ) -> CommandResult:
        """``RESET_EXIT_CONFIG``: e.g. widen ``max_exception_waiting_duration`` before repairs."""
        return await self.execute_command(room_id, job_id, Command.RESET_EXIT_CONFIG, config)

    async def insert_play_script(
        self, room_id: str, job_id: str, text: str, *, play_type: str = "PLAY_NOW"
    ) -> CommandResult:
        """``INSERT_PLAY_SCRIPT``: speak ``text`` (plain or SSML)."""
        params = build(
            PlayTextInfo,
            {"text_config": {"text": text}, "play_type": play_type},
        )
        return await self.execute_command(room_id, job_id, Command.INSERT_PLAY_SCRIPT, params)

    # ------------------------------------------------------------------ rooms

    async def list_rooms(
        self,
        *,
        offset: int = 0,
        limit: int = 10,
        room_name: str | None = None,
        live_state: Sequence[str] | None = None,
        room_type: str | None = None,
    ) -> SmartLiveRoomList:
        """One page of rooms (§8.4)."""
        if not 0 <= offset <= 2147483647 or not 1 <= limit <= 100:
            raise InvalidRequest("offset must be 0..2147483647 and limit 1..100")
        query = [("offset", str(offset)), ("limit", str(limit))]
        if room_name is not None:
            query.append(("room_name", room_name))
        if live_state:
            query.append(("live_state", ",".join(live_state)))
        if room_type is not None:
            query.append(("room_type", room_type))
        response = await self._call(
            "list_smart_live_rooms",
            ApiGroup.ROOM_QUERY,
            "GET",
            self._path("smart-live-rooms"),
            query=query,
            retry=True,
        )
        return self._parse("list_smart_live_rooms", SmartLiveRoomList, response)

    async def show_room(self, room_id: str) -> SmartLiveRoom:
        response = await self._call(
            "show_smart_live_room",
            ApiGroup.ROOM_QUERY,
            "GET",
            self._path("smart-live-rooms", _q(room_id, "room_id")),
            retry=True,
        )
        return self._parse("show_smart_live_room", SmartLiveRoom, response)

    async def create_room(self, req: CreateSmartLiveRoomReq | Mapping[str, Any]) -> str:
        """Create a room; return its id. Not retried (a retry could create a second room)."""
        checked = build(CreateSmartLiveRoomReq, req)
        response = await self._call(
            "create_smart_live_room",
            ApiGroup.ROOM_CREATE,
            "POST",
            self._path("smart-live-rooms"),
            body=to_wire(checked),
        )
        return self._parse("create_smart_live_room", CreateSmartLiveRoomResp, response).room_id
