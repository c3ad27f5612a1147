"""Callbacks signed by the emulator's sender are accepted in every auth mode and URI mode."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.emulator.callbacks import CallbackEvent, UriMode, build_request
from orchestrator.rooms.model import RtmpStateReported
from tests.support.callbacks import KEY, PATH, T0, Harness

T = int(T0.timestamp())


@pytest.mark.parametrize("auth_type", ["NONE", "MSS_A", "MSS_A_HEAD"])
@pytest.mark.parametrize("uri_mode", ["path", "full"])
@pytest.mark.parametrize("public", [True, False])
async def test_emulator_sender_accepted(
    make_harness: Any, auth_type: str, uri_mode: str, public: bool
) -> None:
    h: Harness = await make_harness(
        auth_type=auth_type, uri_mode=uri_mode, allow_none=auth_type == "NONE"
    )
    url = f"{h.base_url}{PATH}?tenant=42"
    if public:  # the callback URL as configured; else the request's own URL is used
        h.intake.public_url = url
    mode: UriMode = "full" if uri_mode == "full" else "path"
    event = CallbackEvent(
        url=url,
        auth_type=auth_type,
        key=KEY,
        event_type="RTMP_STREAM_STATE_CHANGE",
        message={
            "room_id": "room-1",
            "job_id": "job-1",
            "output_url": "rtmp://x/y",
            "stream_key": "k",
            "state": "CONNECTED",
        },
    )
    req_url, headers, body = build_request(event, now=float(T), uri_mode=mode)
    r = await h.client.post(req_url, content=body, headers=headers)
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    posted = await h.sink.posted.wait_for(1)
    assert isinstance(posted[0][1], RtmpStateReported)
    # and the emulator's signature does not pass with another key
    if auth_type != "NONE":
        bad = CallbackEvent(
            url=url,
            auth_type=auth_type,
            key="wrong-key",
            event_type=event.event_type,
            message=event.message,
        )
        req_url, headers, body = build_request(bad, now=float(T + 1), uri_mode=mode)
        r = await h.client.post(req_url, content=body, headers=headers)
        assert r.status_code == 401
