"""Pure parts: topic names/parsing, command validation, freshness, ACL, redaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import orchestrator.mqtt as mqtt_pkg
from orchestrator.mqtt.commands import (
    BRIDGE_ACTIONS,
    ROOM_ACTIONS,
    CommandRejected,
    InsertScript,
    SetOutput,
    Start,
    check_acl,
    check_fresh,
    error_reply,
    ok_reply,
    parse_command,
    peek_id,
    redact,
)
from orchestrator.mqtt.topics import CommandTarget, TopicError, Topics

T = Topics.for_prefix("liveorch")
ROOM = CommandTarget("room-a")
BRIDGE = CommandTarget(None)


def test_topic_names() -> None:
    assert T.bridge_state == "liveorch/bridge/state"
    assert T.bridge_info == "liveorch/bridge/info"
    assert T.room_state("r.1") == "liveorch/rooms/r.1/state"
    assert T.room_events("r_1") == "liveorch/rooms/r_1/events"
    assert T.command_filters() == ("liveorch/rooms/+/command", "liveorch/bridge/command")
    assert Topics.default_reply("liveorch/bridge/command") == "liveorch/bridge/command/reply"
    assert Topics.for_prefix("site/a").room_command("x") == "site/a/rooms/x/command"
    with pytest.raises(TopicError):
        T.room_state("bad/room")


@pytest.mark.parametrize("prefix", ["", "a//b", "a/+", "#", "$SYS", "a b", "/lead"])
def test_bad_prefixes_refused(prefix: str) -> None:
    with pytest.raises(TopicError):
        Topics.for_prefix(prefix)


def test_parse_command_topic() -> None:
    assert T.parse_command_topic("liveorch/bridge/command") == BRIDGE
    assert T.parse_command_topic("liveorch/rooms/room-a/command") == ROOM
    assert ROOM.lane == "room:room-a" and BRIDGE.lane == "bridge"


@pytest.mark.parametrize(
    "topic",
    [
        "liveorch/rooms/+/command",
        "liveorch/rooms/#",
        "liveorch/rooms/a/b/command",
        "liveorch/rooms//command",
        "liveorch/rooms/-x/command",
        "liveorch/rooms/a/state",
        "other/rooms/a/command",
        "liveorch/bridge/command/reply",
        "liveorch/rooms/a/command/reply",
    ],
)
def test_odd_command_topics_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        T.parse_command_topic(topic)


@given(st.text(max_size=40))
def test_parse_command_topic_never_crashes_otherwise(room: str) -> None:
    try:
        target = T.parse_command_topic(f"liveorch/rooms/{room}/command")
    except TopicError:
        return
    assert target.room_id == room


def test_action_tables_cover_the_api() -> None:
    assert set(ROOM_ACTIONS) == {
        "start", "stop", "restart", "refresh_output", "set_output", "reset", "pause_schedule",
        "resume_schedule", "add_window", "skip_next_window", "insert_script", "get",
    }  # fmt: skip
    assert set(BRIDGE_ACTIONS) == {"list_rooms", "reload"}


def test_parse_typed_and_frozen() -> None:
    cmd = parse_command(b'{"id":"c1","action":"start","until":"2026-11-25T20:00:00+08:00"}', ROOM)
    assert isinstance(cmd, Start)
    assert cmd.until == datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert cmd.room_id == "room-a" and cmd.cause == "mqtt:c1"
    with pytest.raises(ValueError, match="frozen"):
        cmd.id = "other"  # type: ignore[misc]
    ins = parse_command(b'{"id":"c2","action":"insert_script","text":"hi"}', ROOM)
    assert isinstance(ins, InsertScript) and ins.play_type == "PLAY_NOW"


def test_set_output_secret_is_masked_everywhere() -> None:
    cmd = parse_command(
        b'{"id":"s","action":"set_output","url":"rtmp://h/app/","stream_key":"K3Y"}', ROOM
    )
    assert isinstance(cmd, SetOutput)
    assert cmd.stream_key.get_secret_value() == "K3Y"
    assert "K3Y" not in repr(cmd) and "K3Y" not in str(cmd.log_fields())
    assert "K3Y" not in str(cmd.model_dump())


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b"", "bad_json", None),
        (b'"str"', "bad_payload", "(payload)"),
        (b'{"id":"x"}', "bad_payload", "action"),
        (b'{"id":"x y","action":"stop"}', "bad_payload", "id"),
        (b'{"id":"' + b"x" * 129 + b'","action":"stop"}', "bad_payload", "id"),
        (b'{"id":"x","action":"stop","client":""}', "bad_payload", "client"),
        (b'{"id":"x","action":"stop","client":"a\\nb"}', "bad_payload", "client"),
        (b'{"id":"x","action":"stop","expires_at":"2026-01-01T00:00:00"}', "bad_payload",
         "expires_at"),
        (b'{"id":"x","action":"insert_script","text":""}', "bad_payload", "text"),
        (b'{"id":"x","action":"insert_script","text":"a","play_type":"LOUD"}', "bad_payload",
         "play_type"),
        (b'{"id":"x","action":"add_window","start":"2026-12-01T10:00Z"}', "bad_payload", "end"),
        (b'{"id":"x","action":"set_output","url":"rtmp://h/a/"}', "bad_payload", "stream_key"),
        (b'{"id":"x","action":"reload"}', "unknown_action", None),
    ],
)  # fmt: skip
def test_rejections(payload: bytes, code: str, field: str | None) -> None:
    with pytest.raises(CommandRejected) as info:
        parse_command(payload, ROOM)
    assert (info.value.code, info.value.field) == (code, field)


def test_bridge_topic_refuses_room_actions() -> None:
    with pytest.raises(CommandRejected) as info:
        parse_command(b'{"id":"x","action":"stop"}', BRIDGE)
    assert info.value.code == "unknown_action" and info.value.command_id == "x"


@given(st.binary(max_size=200))
def test_parse_never_raises_anything_else(payload: bytes) -> None:
    code = "parsed"
    try:
        parse_command(payload, ROOM)
    except CommandRejected as exc:
        code = exc.code
    assert code in {"bad_json", "bad_payload", "unknown_action"}


def test_freshness() -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    ok = parse_command(b'{"id":"a","action":"stop"}', ROOM)
    check_fresh(ok, now=now, max_age_s=1)
    exp = ok.model_copy(update={"expires_at": now})
    with pytest.raises(CommandRejected, match="expired"):
        check_fresh(exp, now=now, max_age_s=300)
    check_fresh(exp, now=now - timedelta(seconds=1), max_age_s=300)
    sent = ok.model_copy(update={"sent_at": now - timedelta(seconds=301)})
    with pytest.raises(CommandRejected, match="sent more than 300 s ago"):
        check_fresh(sent, now=now, max_age_s=300)
    check_fresh(sent, now=now, max_age_s=302)


def test_acl() -> None:
    cmd = parse_command(b'{"id":"a","action":"stop","client":"panel"}', ROOM)
    check_acl(cmd, {})
    check_acl(cmd, {"panel": ["stop"]})
    check_acl(cmd, {"panel": ["*"]})
    for acl in ({"panel": ["get"]}, {"other": ["*"]}):
        with pytest.raises(CommandRejected) as info:
            check_acl(cmd, acl)
        assert info.value.code == "forbidden"
    anon = parse_command(b'{"id":"a","action":"stop"}', ROOM)
    with pytest.raises(CommandRejected):
        check_acl(anon, {"panel": ["*"]})


def test_replies_and_redaction() -> None:
    data = {"url": "u", "stream_key": "K", "nested": [{"password": "p", "sk": "s", "ok": 1}]}
    assert ok_reply("a", data) == {
        "id": "a",
        "status": "ok",
        "data": {"url": "u", "stream_key": "***", "nested": [{"password": "***", "sk": "***",
                                                              "ok": 1}]},
        "error": None,
    }  # fmt: skip
    assert redact({"callbackKey": "x", "token": "t", "window_key": "w"})["token"] == "***"
    assert error_reply(None, "bad_json", "m") == {
        "id": None,
        "status": "error",
        "data": {},
        "error": {"code": "bad_json", "message": "m"},
    }
    assert peek_id(b'{"id":"abc"}') == "abc"
    assert peek_id(b'{"id":5}') is None and peek_id(b"\xff") is None


def test_package_exports() -> None:
    assert sorted(mqtt_pkg.__all__) == sorted(
        ["BridgeStats", "MqttBridge", "RelayHandler", "ReplyStore", "Topics", "snapshot_json"]
    )
    for name in mqtt_pkg.__all__:
        assert hasattr(mqtt_pkg, name)
