"""Small HTTP pieces shared by the emulator's API and admin routes."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from orchestrator.emulator.validation import bad_request

__all__ = ["INTERNAL", "error_response", "is_loopback", "parse_json"]

# the StartSmartLive page's 500 body (seed lines 1797-1816)
INTERNAL = "MSS.00000004"


def error_response(status: int, code: str, msg: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "error_msg": msg}, status_code=status)


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request("request body is not valid JSON") from exc
