"""Shared helpers of the emulator tests (imported by conftest and test modules)."""

from __future__ import annotations

from collections.abc import Generator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.service import EmulatorService
from orchestrator.metastudio.signer import parse_query, sdk_date, sign_headers

AK = "EMULATORAK000000000"
SK = "EMULATORSKemulatorsk000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
ROOMS = ("room-1", "room-2")
RTMP = "rtmp://push.example.com/live"


class SdkSigner(httpx.Auth):
    """Signs like huaweicloudsdkcore (test-side use of our shared signer)."""

    requires_request_body = True

    def __init__(self, ak: str = AK, sk: str = SK, *, date: datetime | None = None) -> None:
        self.ak, self.sk, self.date = ak, sk, date

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-Sdk-Date"] = sdk_date(self.date or datetime.now(UTC))
        request.headers["X-Project-Id"] = PROJECT
        request.headers.setdefault("Content-Type", "application/json")
        url = urlsplit(str(request.url))
        signed = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "host", "x-project-id", "x-sdk-date", "x-app-userid")
        }
        request.headers["Authorization"] = sign_headers(
            ak=self.ak,
            sk=self.sk,
            method=request.method,
            path=url.path,
            query=parse_query(url.query),
            headers=signed,
            body=request.content,
        )
        yield request


def make_service(**kwargs: object) -> EmulatorService:
    opts: dict[str, object] = {"seed": 7, "clock": ManualClock()}
    opts.update(kwargs)
    svc = EmulatorService(PROJECT, {AK: SK}, **opts)  # type: ignore[arg-type]
    for room_id in ROOMS:
        svc.add_room(
            room_id,
            {
                "room_name": f"Shop {room_id}",
                "output_urls": [RTMP],
                "stream_keys": ["key-" + room_id],
            },
        )
    return svc


def jobs_path(room_id: str = "room-1") -> str:
    return f"/v1/{PROJECT}/smart-live-rooms/{room_id}/smart-live-jobs"
