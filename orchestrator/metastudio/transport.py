"""The transport core of the MetaStudio client: one logical call over the injected
``httpx.AsyncClient``, waiting on the shared per-group rate limits, retrying only safe reads on
temporary errors (capped jittered backoff honouring ``Retry-After``), mapping every answer to a
model or an :mod:`orchestrator.errors` error, and logging/reporting each attempt.

:class:`~orchestrator.metastudio.client.MetaStudioClient` adds the typed operations on top.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ValidationError

from orchestrator.backoff import capped, jittered
from orchestrator.errors import CloudError, CloudUnavailable, StartOutcomeUnknown, TemporaryError
from orchestrator.metastudio import signer
from orchestrator.metastudio.errormap import error_from_response
from orchestrator.metastudio.models import describe_errors
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits

log = structlog.get_logger(__name__)

CallHook = Callable[[str, str, float], None]
"""``on_call(operation, status_or_error_code, seconds)``: e.g. feed a Prometheus histogram."""

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=10.0)

# network errors that prove the request never left us: a start can safely be called failed
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)

M = TypeVar("M", bound=BaseModel)


class CloudTransport:
    """Send calls for one tenant/project; the typed operations live in the subclass."""

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
