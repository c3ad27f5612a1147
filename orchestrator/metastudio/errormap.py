"""MetaStudio's error answers mapped to our error tree (status + ``error_code``, api doc §11).

Its own module so that the auth providers (which call the IAM endpoint and map its refusals
the same way) need not import the client.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from orchestrator.backoff import parse_retry_after
from orchestrator.errors import (
    AuthError,
    CloudError,
    CloudUnavailable,
    Conflict,
    InvalidRequest,
    NotFound,
    PermanentError,
    Throttled,
)

__all__ = ["error_from_response", "parse_retry_after"]

# MSS.00000004 is "Internal Error" with 500 on the StartSmartLive page (an older table spelled it
# as an auth code): a 401/403 status still makes any code an AuthError
_AUTH_CODES = frozenset({"APIGW.0301", "APIGW.0303"})
_UNAVAILABLE_CODES = frozenset({"APIGW.0201", "MSS.00000002", "MSS.00000004"})
_THROTTLE_CODES = frozenset({"APIGW.0308"})
_INVALID_CODES = frozenset({"MSS.00000003"})
_CODE_KEYS = (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message"))
_MAX_MSG = 300


def _error_fields(body: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) from any of the SDK-accepted error body shapes (§11.1)."""
    if not isinstance(body, dict):
        return None, None, None
    request_id = body.get("request_id") if isinstance(body.get("request_id"), str) else None
    candidates: list[dict[str, Any]] = [body]
    candidates += [v for v in body.values() if isinstance(v, dict)]
    for candidate in candidates:
        for code_key, msg_key in _CODE_KEYS:
            code = candidate.get(code_key)
            if code is not None:
                msg = candidate.get(msg_key)
                return str(code), (str(msg) if msg is not None else None), request_id
    return None, None, request_id


def error_from_response(operation: str, response: httpx.Response) -> CloudError:
    """Map a non-2xx answer to our error tree (status + ``error_code``)."""
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    code, msg, body_request_id = _error_fields(body)
    status = response.status_code
    request_id = response.headers.get("X-Request-Id") or body_request_id
    text = (msg or response.reason_phrase or "error")[:_MAX_MSG]
    kw: dict[str, Any] = {
        "operation": operation,
        "status": status,
        "error_code": code,
        "request_id": request_id,
    }
    message = f"MetaStudio {operation} failed: {text}"
    if status == 429 or code in _THROTTLE_CODES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return Throttled(message, retry_after=retry_after, **kw)
    if code in _AUTH_CODES or status in (401, 403):
        return AuthError(message, **kw)
    if status >= 500 or code in _UNAVAILABLE_CODES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return CloudUnavailable(message, retry_after=retry_after, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status == 409:
        return Conflict(message, **kw)
    if status == 400 or code in _INVALID_CODES:
        return InvalidRequest(message, **kw)
    return PermanentError(message, **kw)
