"""Request models refuse bad input with clear, value-free messages; responses stay lenient."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.errors import InvalidRequest
from orchestrator.metastudio import models as m

KEY = "very-secret-stream-key"
VIDEO = {"bitrate": 4000, "width": 1920, "height": 1080}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"video_config": {**VIDEO, "bitrate": 999}}, "video_config.bitrate"),
        ({"video_config": {**VIDEO, "bitrate": 8001}}, "must be within [1000, 8000]"),
        ({"video_config": {**VIDEO, "width": 1280, "height": 720}}, "1080x1920 or 1920x1080"),
        ({"video_config": {"bitrate": 4000}}, "video_config.width: Field required"),
        ({"video_config": {**VIDEO, "codec": "H265"}}, "video_config.codec"),
        ({"output_urls": ["rtmp://a", "rtmp://b"], "stream_keys": [KEY, KEY]}, "item count"),
        ({"output_urls": ["rtmp://a"]}, "stream_key"),
        ({"stream_keys": [KEY]}, "output_url"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        (
            {"live_event_callback_config": {"key": "k" * 33, "auth_type": "MSS_A"}},
            "key length must be within [0, 32]",
        ),
        ({"live_event_callback_config": {"auth_type": "HMAC"}}, "auth_type"),
        ({"play_policy": {"live_exit_config": {"max_live_duration": 169}}}, "max_live_duration"),
        (
            {"play_policy": {"live_exit_config": {"max_exception_waiting_duration": 61}}},
            "max_exception_waiting_duration",
        ),
        ({"play_policy": {"repeat_count": -2}}, "repeat_count"),
        ({"view_mode": "SQUARE"}, "view_mode"),
        ({"job_run_config": {"allow_resource_type": "FREE"}}, "allow_resource_type"),
        ({"co_streamer_config": {"voice_config": {}}}, "voice_asset_id"),
    ],
)
def test_invalid_start_requests_have_clear_messages(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        m.build(m.StartSmartLiveReq, data)
    assert fragment in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in str(info.value.__cause__)  # hide_input_in_errors
    assert info.value.__cause__ is not None


def test_valid_start_request_round_trips_to_wire_with_secret_revealed_only_there() -> None:
    req = m.build(
        m.StartSmartLiveReq,
        {
            "video_config": VIDEO,
            "output_urls": ["rtmp://push/live"],
            "stream_keys": [KEY],
            "live_event_callback_config": {
                "live_event_type_callback_url": "https://cb.example.com/x",
                "auth_type": "MSS_A_HEAD",
                "key": "k3yExample",
                "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
            },
            "play_policy": {"live_exit_config": {"max_exception_waiting_duration": 10}},
        },
    )
    assert KEY not in repr(req) and "k3yExample" not in repr(req)
    assert KEY not in req.model_dump_json()
    wire = m.to_wire(req)
    assert wire["stream_keys"] == [KEY]
    assert wire["live_event_callback_config"]["key"] == "k3yExample"
    assert "rtc_callback_config" not in wire  # unset fields are not sent
    assert m.build(m.StartSmartLiveReq, req) == req  # re-validation of a model instance


def test_assignment_is_validated() -> None:
    cfg = m.LiveExitConfig(max_live_duration=1)
    with pytest.raises(ValueError, match="max_live_duration"):
        cfg.max_live_duration = 500


def test_command_enum_has_all_ten() -> None:
    assert len(m.Command) == 10
    assert m.params_model_for(m.Command.REFRESH_OUTPUT_URL) is m.RefreshOutputUrlConfig
    assert m.params_model_for(m.Command.SHOW_LAYER) is None


def test_control_request_types_params() -> None:
    req = m.build(
        m.ControlSmartLiveReq,
        {"command": "CLEAN_UP_INSERT_COMMAND", "params": {"command_ids": ["a"]}},
    )
    assert isinstance(req.params, m.CleanUpInsertCommand)
    req = m.build(
        m.ControlSmartLiveReq,
        {"command": "INSERT_PLAY_AUDIO", "params": {"audio_url": "https://a/x.mp3"}},
    )
    assert m.to_wire(req) == {
        "command": "INSERT_PLAY_AUDIO",
        "params": {"audio_url": "https://a/x.mp3"},
    }


def test_responses_keep_unknown_fields_and_unknown_enum_values() -> None:
    job = m.SmartLiveJob.model_validate(
        {"job_id": "j", "state": "HIBERNATING", "brand_new_field": {"x": 1}, "duration": 12.5}
    )
    assert job.state == "HIBERNATING"
    assert job.model_extra == {"brand_new_field": {"x": 1}}
    page = m.SmartLiveJobList.model_validate({"count": 1, "smart_live_jobs": [{"job_id": "a"}]})
    assert page.smart_live_jobs[0].state is None
    rtc = m.RTCRoomInfoList.model_validate(
        {"users": [{"user_type": "PLAYER", "signature": "rtc-sig-XYZ"}]}
    )
    assert "rtc-sig-XYZ" not in repr(rtc)


def _callback(event_type: str, message: dict[str, Any]) -> bytes:
    return json.dumps({"event_type": event_type, "message": json.dumps(message)}).encode()


def test_callback_rtmp_state_change_is_decoded_and_key_hidden() -> None:
    cb = m.parse_callback(
        _callback(
            "RTMP_STREAM_STATE_CHANGE",
            {
                "room_id": "r",
                "job_id": "j",
                "output_url": "rtmp://x",
                "stream_key": KEY,
                "state": "DISCONNECTED",
            },
        )
    )
    assert isinstance(cb.event, m.RtmpStreamStateChange)
    assert cb.event.state is m.RtmpState.DISCONNECTED
    assert KEY not in repr(cb)


def test_callback_other_types() -> None:
    cb = m.parse_callback(
        _callback("SHOOT_SCRIPT_SWITCH", {"job_id": "j", "shoot_script_sequence_no": 2})
    )
    assert isinstance(cb.event, m.ShootScriptSwitch)
    assert cb.event.shoot_script_sequence_no == "2"
    cb = m.parse_callback(_callback("REPLY_COMMAND_FINISH", {"job_id": "j", "reply_id": "c1"}))
    assert isinstance(cb.event, m.ReplyCommandFinish) and cb.event.reply_id == "c1"
    cb = m.parse_callback(_callback("FUTURE_EVENT", {"a": 1}))
    assert cb.event == {"a": 1}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"event_type": "X", "message": "not json"}', "JSON-encoded"),
        (b'{"event_type": "X", "message": "[1]"}', "JSON object"),
        (b'{"message": "{}"}', "event_type"),
        (b"garbage", "invalid callback"),
    ],
)
def test_malformed_callbacks(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        m.parse_callback(body)


def test_public_surface() -> None:
    import orchestrator.metastudio as pkg

    for mod in (pkg, m):
        for name in mod.__all__:
            assert hasattr(mod, name), name
