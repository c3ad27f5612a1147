"""Callback body parsing: typed events, specific errors, dedupe keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orchestrator.callbacks.parse import (
    CallbackParseError,
    dedupe_key,
    event_time,
    parse_body,
    peek_ids,
)


def body(event_type: object, message: object, **extra: object) -> bytes:
    return json.dumps({"event_type": event_type, "message": message, **extra}).encode()


def msg(**fields: object) -> str:
    return json.dumps(fields)


def test_rtmp_event() -> None:
    ev = parse_body(
        body(
            "RTMP_STREAM_STATE_CHANGE",
            msg(
                room_id="r1",
                job_id="j1",
                output_url="rtmp://x/y",
                stream_key="sk-1",
                state="CONNECTED",
            ),
        )
    )
    assert (ev.event_type, ev.room_id, ev.job_id, ev.state) == (
        "RTMP_STREAM_STATE_CHANGE",
        "r1",
        "j1",
        "CONNECTED",
    )
    assert ev.output_url == "rtmp://x/y"
    assert ev.raw["stream_key"] == "***"
    assert "sk-1" not in repr(ev)
    assert ev.unknown_fields == ()


def test_script_event_sequence_as_string_or_int() -> None:
    for seq in ("2", 2):
        ev = parse_body(
            body(
                "SHOOT_SCRIPT_SWITCH",
                msg(
                    room_id="r",
                    job_id="j",
                    scene_script_name="s",
                    shoot_script_sequence_no=seq,
                    shoot_script_title="t",
                    product_id="p",
                ),
            )
        )
        assert ev.shoot_script_sequence_no == "2"
        assert (ev.scene_script_name, ev.shoot_script_title) == ("s", "t")


def test_reply_event() -> None:
    ev = parse_body(body("REPLY_COMMAND_FINISH", msg(room_id="r", job_id="j", reply_id="rep-9")))
    assert ev.reply_id == "rep-9"


def test_unknown_type_and_fields_kept() -> None:
    ev = parse_body(body("NEW_THING", msg(job_id="j", colour="blue"), trace="t-1"))
    assert ev.event_type == "NEW_THING" and not ev.known_type
    assert ev.raw == {"job_id": "j", "colour": "blue"}
    assert ev.unknown_fields == ("colour",)
    assert ev.extra == {"trace": "t-1"}
    ev2 = parse_body(body("RTMP_STREAM_STATE_CHANGE", msg(job_id="j", state="CONNECTED", new=1)))
    assert ev2.unknown_fields == ("new",)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "body_not_json"),
        (b"\xff\xfe", "body_not_json"),
        (b"[1,2]", "body_not_object"),
        (body(None, msg(job_id="j")), "event_type_missing"),
        (body("", msg(job_id="j")), "event_type_missing"),
        (body(5, msg(job_id="j")), "event_type_not_string"),
        (json.dumps({"event_type": "X"}).encode(), "message_missing"),
        (
            body("RTMP_STREAM_STATE_CHANGE", {"job_id": "j", "state": "CONNECTED"}),
            "message_not_string",
        ),
        (body("RTMP_STREAM_STATE_CHANGE", "{not json"), "message_not_json"),
        (
            body("RTMP_STREAM_STATE_CHANGE", json.dumps(json.dumps({"job_id": "j"}))),
            "message_not_object",
        ),
        (body("RTMP_STREAM_STATE_CHANGE", "[]"), "message_not_object"),
        (body("RTMP_STREAM_STATE_CHANGE", msg(state="CONNECTED")), "job_id_missing"),
        (body("RTMP_STREAM_STATE_CHANGE", msg(job_id="", state="CONNECTED")), "job_id_missing"),
        (body("RTMP_STREAM_STATE_CHANGE", msg(job_id=7, state="CONNECTED")), "job_id_not_string"),
        (body("RTMP_STREAM_STATE_CHANGE", msg(job_id="j")), "state_missing"),
        (body("RTMP_STREAM_STATE_CHANGE", msg(job_id="j", state=1)), "state_not_string"),
        (body("REPLY_COMMAND_FINISH", msg(job_id="j")), "reply_id_missing"),
        (
            body("SHOOT_SCRIPT_SWITCH", msg(job_id="j", shoot_script_sequence_no=[1])),
            "shoot_script_sequence_no_not_string",
        ),
    ],
)
def test_malformed_bodies(raw: bytes, reason: str) -> None:
    with pytest.raises(CallbackParseError) as info:
        parse_body(raw)
    assert info.value.reason == reason


def test_peek_ids_never_raises() -> None:
    assert peek_ids(b"garbage") == (None, None)
    assert peek_ids(b'{"message": 5}') == (None, None)
    assert peek_ids(body("X", msg(room_id="r", job_id="j"))) == ("r", "j")


T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _ev(state: str, url: str = "rtmp://a/b") -> bytes:
    return body("RTMP_STREAM_STATE_CHANGE", msg(job_id="j", output_url=url, state=state))


def test_event_time_prefers_hwtime_else_truncated_receive_time() -> None:
    assert event_time(int(T0.timestamp()), T0.replace(second=30)) == T0
    assert event_time(None, T0.replace(microsecond=999_999)) == T0


def test_dedupe_key_collapses_identical_redelivery() -> None:
    a, b = parse_body(_ev("CONNECTED")), parse_body(_ev("CONNECTED"))
    assert dedupe_key(a, T0) == dedupe_key(b, T0)


def test_dedupe_key_keeps_genuine_flaps_apart() -> None:
    keys = {
        dedupe_key(parse_body(_ev(s)), T0.replace(second=i))
        for i, s in enumerate(["CONNECTED", "DISCONNECTED", "CONNECTED"])
    }
    assert len(keys) == 3
    # two outputs of one job reporting in the same second are different events
    assert dedupe_key(parse_body(_ev("CONNECTED", "rtmp://a")), T0) != dedupe_key(
        parse_body(_ev("CONNECTED", "rtmp://b")), T0
    )


def test_dedupe_key_has_no_secret() -> None:
    ev = parse_body(
        body("RTMP_STREAM_STATE_CHANGE", msg(job_id="j", stream_key="sk-secret", state="END"))
    )
    assert "sk-secret" not in dedupe_key(ev, T0)
