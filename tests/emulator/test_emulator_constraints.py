"""Every row of the StartSmartLive document table, through the official SDK and our client.

For each row a valid value and each kind of invalid value is put into an otherwise valid full
body. The stock SDK sends it to the emulator over real HTTP (valid: 202; invalid: 400
``MSS.00000003`` naming the field); our client must agree: it sends the valid bodies (202) and
refuses every invalid one before any network call.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService
from orchestrator.errors import InvalidRequest
from orchestrator.httpserver import ServedApp, serve
from orchestrator.metastudio.auth import AkSkAuth
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.metastudio.constraints import START_SMART_LIVE, Row, check_start_body
from orchestrator.metastudio.models import StartSmartLiveReq, build
from orchestrator.metastudio.ratelimit import RateLimits
from tests.support.emulator import AK, PROJECT, RTMP, SK, make_service

pytest.importorskip("huaweicloudsdkcore")
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkmetastudio.v1 import MetaStudioClient as SdkClient
from huaweicloudsdkmetastudio.v1 import StartSmartLiveRequest

FULL: dict[str, Any] = {
    "video_config": {
        "clip_mode": "RESIZE",
        "codec": "H264",
        "bitrate": 4000,
        "width": 1080,
        "height": 1920,
        "frame_rate": "25",
        "is_subtitle_enable": False,
        "subtitle_config": {"dx": 0, "dy": 0, "font_name": "F", "font_size": 54, "h": 9, "w": 9},
        "dx": 0,
        "dy": 0,
        "is_enable_super_resolution": False,
        "is_end_at_first_frame": False,
        "output_external_url": "https://upload.example.com/v",
    },
    "play_policy": {
        "repeat_count": -1,
        "auto_play_script": True,
        "play_mode": "TEXT",
        "random_play_mode": "NONE",
        "need_independent_capture_client": False,
    },
    "output_urls": [RTMP],
    "stream_keys": ["key"],
    "interaction_callback_url": "https://cb.example.com/i",
    "live_event_callback_config": {
        "live_event_type_callback_url": "http://127.0.0.1:9/cb",
        "auth_type": "MSS_A",
        "key": "k" * 32,
        "callback_event_type": ["SHOOT_SCRIPT_SWITCH"],
    },
    "rtc_callback_config": {"rtc_callback_event_type": ["LIVE_PROGRESS"]},
    "view_mode": "VERTICAL",
    "co_streamer_config": {
        "voice_config": {"voice_asset_id": "voice-1", "speed": 100, "pitch": 100, "volume": 140},
        "streamer_action": "SILENCE",
    },
    "job_run_config": {"single_job_in_room": False},
}

_LIVE_SIZE = ("video_config.width", "video_config.height")
_VALID_STRINGS = {
    "live_event_callback_config.live_event_type_callback_url": "https://" + "c" * 2040,
    "video_config.frame_rate": "30",
    "output_urls": [RTMP + "/other"],
    "stream_keys": ["other-key"],
}


def samples(row: Row) -> tuple[Any, list[Any]]:
    """(a valid value, every kind of invalid value) for one row of the table."""
    current = _get(FULL, row.path)
    if row.kind == "object":
        return current, ["x", [], 1]
    if row.kind == "boolean":
        return False, ["true", 1]
    if row.kind == "integer":
        assert row.lo is not None and row.hi is not None
        # width/height: the live rule (line 679) allows only the fixture's own pair
        good = current if row.path in _LIVE_SIZE else row.hi
        return good, [str(row.lo), True, 1.5, row.lo - 1, row.hi + 1]
    if row.kind == "enum":
        return row.enum[-1], ["NOPE", 1, row.enum[0].lower()]
    if row.kind == "enum_array":
        return list(row.enum), [row.enum[0], ["NOPE"], [1]]
    if row.kind == "string_array":
        return _VALID_STRINGS[row.path], ["x", [*current, *current], [1]]
    valid = _VALID_STRINGS.get(row.path, "v" * (row.hi or 8))
    bad: list[Any] = [1, ["x"]]
    if row.hi is not None:
        bad.append("v" * (row.hi + 1))
    if row.lo:
        bad.append("")
    if row.pattern is not None:
        bad.append("25fps")
    return valid, bad


def _get(body: dict[str, Any], path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        node = node[part]
    return node


def with_value(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(FULL)
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        node = node[part]
    node[leaf] = value
    return body


CASES = [
    pytest.param(row, valid_, idx, id=f"{row.path}-{idx}")
    for row in START_SMART_LIVE
    for valid_ in (True, False)
    for idx in range(1 if valid_ else len(samples(row)[1]))
]


def case_body(row: Row, valid: bool, idx: int) -> dict[str, Any]:
    good, bad = samples(row)
    return with_value(row.path, good if valid else bad[idx])


def test_table_covers_the_document_and_every_row_has_a_source_line() -> None:
    paths = [row.path for row in START_SMART_LIVE]
    assert len(paths) == len(set(paths)) == 44
    assert all(369 < row.line < 1425 for row in START_SMART_LIVE)  # the request-body tables
    check_start_body(FULL)  # the fixture itself is valid


@pytest.fixture
def service() -> EmulatorService:
    return make_service(rate_limits={})


@pytest.fixture
async def served(service: EmulatorService) -> AsyncIterator[ServedApp]:
    async with serve(create_app(service)) as s:
        yield s


def _sdk_start(base_url: str, body: dict[str, Any]) -> tuple[int, str | None, str | None]:
    client = (
        SdkClient.new_builder()
        .with_credentials(BasicCredentials(AK, SK, PROJECT))
        .with_endpoints([base_url])
        .build()
    )
    try:
        resp = client.start_smart_live(StartSmartLiveRequest(room_id="room-1", body=body))
    except ClientRequestException as exc:
        return exc.status_code, exc.error_code, exc.error_msg
    return resp.status_code, None, None


async def test_every_row_through_the_official_sdk(served: ServedApp) -> None:
    def run_all() -> list[tuple[str, bool, Any, tuple[int, str | None, str | None]]]:
        out = []
        for param in CASES:
            row, valid, idx = param.values
            body = case_body(row, valid, idx)
            out.append((row.path, valid, idx, _sdk_start(served.base_url, body)))
        return out

    results = await asyncio.to_thread(run_all)
    wrong = []
    for path, valid, idx, (status, code, msg) in results:
        if valid and status != 202:
            wrong.append((path, "valid", status, msg))
        if not valid and (
            status != 400 or code != "MSS.00000003" or path.split(".")[0] not in (msg or "")
        ):
            wrong.append((path, idx, status, msg))
    assert wrong == []
    assert sum(1 for r in results if not r[1]) > 150


@pytest.fixture
async def ours(served: ServedApp) -> AsyncIterator[MetaStudioClient]:
    async with httpx.AsyncClient() as http:
        yield MetaStudioClient(
            http,
            base_url=served.base_url,
            project_id=PROJECT,
            auth=AkSkAuth(AK, SK, PROJECT),
            limits=RateLimits.unlimited(),
        )


async def test_every_row_through_our_client(
    ours: MetaStudioClient, service: EmulatorService
) -> None:
    wrong = []
    for param in CASES:
        row, valid, idx = param.values
        body = case_body(row, valid, idx)
        calls = service.calls["start"]
        if valid:
            started = await ours.start_job("room-1", build(StartSmartLiveReq, body))
            if started.job_id not in service.jobs:
                wrong.append((row.path, "valid"))
            continue
        try:
            await ours.start_job("room-1", body)  # type: ignore[arg-type]
        except InvalidRequest as exc:
            if row.path.split(".")[0] not in str(exc):
                wrong.append((row.path, idx, str(exc)))
        else:
            wrong.append((row.path, idx, "accepted"))
        if service.calls["start"] != calls:  # refused before any network call
            wrong.append((row.path, idx, "sent"))
    assert wrong == []
