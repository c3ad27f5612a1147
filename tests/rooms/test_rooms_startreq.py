"""The start request built from room settings."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from orchestrator.errors import InvalidRequest
from orchestrator.metastudio.models import to_wire
from orchestrator.rooms.startreq import CallbackTarget, RoomConfig, build_start_request
from orchestrator.settings import OutputTarget, RoomSettings, Settings


def test_start_request_carries_output_callback_and_template() -> None:
    room = RoomSettings(
        id="r1", output_url="rtmp://a/live", stream_key=SecretStr("sk-1"),
        backup_outputs=[OutputTarget(url="rtmp://b/live", stream_key=SecretStr("sk-2"))],
        start={
            "video_config": {"bitrate": 4000, "width": 1080, "height": 1920},
            "play_policy": {"repeat_count": -1,
                            "live_exit_config": {"max_exception_waiting_duration": 5}},
        },
    )  # fmt: skip
    cfg = RoomConfig(room=room, callback=CallbackTarget("https://cb/x", "MSS_A", SecretStr("k")))
    wire = to_wire(build_start_request(cfg))
    assert wire["output_urls"] == ["rtmp://a/live"]
    assert wire["stream_keys"] == ["sk-1"]
    assert wire["live_event_callback_config"] == {
        "live_event_type_callback_url": "https://cb/x", "auth_type": "MSS_A", "key": "k",
        "callback_event_type": ["RTMP_STREAM_STATE_CHANGE"],
    }  # fmt: skip
    assert wire["play_policy"]["live_exit_config"] == {"max_exception_waiting_duration": 5}
    assert "sk-1" not in repr(build_start_request(cfg))
    assert [o.url for o in cfg.outputs] == ["rtmp://a/live", "rtmp://b/live"]
    assert cfg.policy.outputs == 2


def test_bad_template_is_a_permanent_invalid_request() -> None:
    bad = {"video_config": {"bitrate": 1, "width": 1, "height": 1}}
    room = RoomSettings(id="r1", output_url="rtmp://a", stream_key=SecretStr("k"), start=bad)
    with pytest.raises(InvalidRequest):
        build_start_request(RoomConfig(room=room))


def test_config_from_settings_uses_room_key_and_recovery_override() -> None:
    settings = Settings(
        rooms=[RoomSettings(id="r1", callback_key=SecretStr("room-key"), recovery={"grace_s": 3})],
        http={"public_callback_url": "https://cb/y"},
        callbacks={"key": "global-key"},
    )
    cfg = RoomConfig.from_settings(settings, "r1")
    assert cfg.callback is not None and cfg.callback.key is not None
    assert cfg.callback.key.get_secret_value() == "room-key"
    assert cfg.policy.grace_s == 3
    with pytest.raises(KeyError):
        RoomConfig.from_settings(settings, "nope")
