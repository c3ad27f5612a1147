"""Fuzz the MetaStudio response models: random JSON → a parsed model or one clean error.

Every response goes through ``MetaStudioClient._parse``; an unexpected answer must become
``CloudUnavailable`` (or ``StartOutcomeUnknown`` for a start: the outcome is unknown, so the
room lists before retrying), never a pydantic or JSON exception, and the message must not echo
the body (it may hold stream keys).
"""

# ruff: noqa: PT017  (a fuzzer may or may not get an exception: pytest.raises cannot express it)

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from orchestrator.errors import CloudUnavailable, InvalidRequest, StartOutcomeUnknown
from orchestrator.metastudio import models as m
from orchestrator.metastudio.client import MetaStudioClient
from tests.support.fuzz import FUZZ

MODELS: list[type[BaseModel]] = [
    m.SmartLiveJob,
    m.SmartLiveJobList,
    m.StartSmartLiveResp,
    m.CommandResult,
    m.SmartLiveRoom,
    m.SmartLiveRoomList,
    m.CreateSmartLiveRoomResp,
]
SECRET = "sk-do-not-echo-0123456789"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.just(SECRET),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
keys = st.sampled_from(
    [
        "job_id",
        "state",
        "room_id",
        "rtmp_state",
        "create_time",
        "jobs",
        "count",
        "command_id",
        "error_info",
        "live_event_callback_config",
        "stream_keys",
        "output_urls",
        "smart_live_jobs",
        "smart_live_rooms",
        "room_name",
        "result",
        "command",
    ]
)
objects = st.dictionaries(keys | st.text(max_size=6), json_values, max_size=8)
bodies = st.one_of(
    st.binary(max_size=200),
    objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(st.sampled_from(MODELS), bodies, st.booleans())
def test_response_parses_or_fails_cleanly(
    model: type[BaseModel], body: bytes, is_start: bool
) -> None:
    response = httpx.Response(200, content=body, headers={"X-Request-Id": "r1"})
    try:
        result = MetaStudioClient._parse("op", model, response, is_start=is_start)
    except StartOutcomeUnknown as exc:
        assert is_start
        assert SECRET not in str(exc)
        return
    except CloudUnavailable as exc:
        assert not is_start
        assert SECRET not in str(exc)
        return
    assert isinstance(result, model)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda et, msg: json.dumps({"event_type": et, "message": msg}).encode(),
            st.sampled_from(["RTMP_STREAM_STATE_CHANGE", "SHOOT_SCRIPT_SWITCH", "X"]),
            st.one_of(st.text(max_size=20), objects.map(json.dumps)),
        ),
    )
)
def test_callback_model_parses_or_raises_invalid_request(body: bytes) -> None:
    try:
        parsed = m.parse_callback(body)
    except InvalidRequest as exc:
        assert SECRET not in str(exc)
        return
    assert isinstance(parsed, m.LiveEventCallback)


def test_regression_deeply_nested_callback_message() -> None:
    """The message validator's json.loads raised RecursionError through pydantic."""
    with pytest.raises(InvalidRequest):
        m.parse_callback(json.dumps({"event_type": "X", "message": "[" * 100_000}))
