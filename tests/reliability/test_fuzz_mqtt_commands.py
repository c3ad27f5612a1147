"""Fuzz the MQTT command parser: any payload → a Command or CommandRejected with a known code.

Nothing else may escape :func:`parse_command` (a stray exception in the bridge's lane would lose
the reply), and a rejection carries a stable code and, for payload errors, the field path.
"""

# ruff: noqa: PT017  (a fuzzer may or may not get an exception: pytest.raises cannot express it)

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.mqtt.commands import (
    BRIDGE_ACTIONS,
    ROOM_ACTIONS,
    Command,
    CommandRejected,
    check_acl,
    check_fresh,
    parse_command,
    peek_id,
)
from orchestrator.mqtt.topics import CommandTarget
from tests.support.fuzz import FUZZ

CODES = {"bad_json", "bad_payload", "unknown_action"}
ACTIONS = sorted({*ROOM_ACTIONS, *BRIDGE_ACTIONS, "", "START", "drop_tables"})

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "id",
        "client",
        "expires_at",
        "sent_at",
        "until",
        "url",
        "stream_key",
        "text",
        "play_type",
        "start",
        "end",
        "room_id",
        "extra",
    ]
)
field_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "rtmp://h/live",
            "rtmps://h/a b",
            "PLAY_NOW",
            "a" * 129,
            "id with space",
            "\u00e9",
        ]
    ),
)
commands = st.builds(
    lambda action, body: {"action": action, **body},
    st.sampled_from(ACTIONS) | st.text(max_size=10),
    st.dictionaries(fields, field_values, max_size=6),
)
payloads = st.one_of(
    st.binary(max_size=200),
    commands.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)
targets = st.sampled_from([CommandTarget(None), CommandTarget("room-1")])


@FUZZ
@given(payloads, targets)
def test_parse_command_returns_a_command_or_a_coded_rejection(
    payload: bytes, target: CommandTarget
) -> None:
    try:
        cmd = parse_command(payload, target)
    except CommandRejected as exc:
        assert exc.code in CODES
        if exc.code == "bad_payload":
            assert exc.field
        assert exc.command_id is None or exc.command_id == peek_id(payload)
        return
    assert isinstance(cmd, Command)
    assert cmd.room_id == target.room_id
    table = BRIDGE_ACTIONS if target.room_id is None else ROOM_ACTIONS
    assert type(cmd) is table[cmd.action]


@FUZZ
@given(payloads)
def test_peek_id_never_raises(payload: bytes) -> None:
    cid = peek_id(payload)
    assert cid is None or (isinstance(cid, str) and 1 <= len(cid) <= 128)


@FUZZ
@given(commands, st.dictionaries(st.text(max_size=6), st.lists(st.sampled_from([*ACTIONS, "*"]))))
def test_acl_and_freshness_raise_only_coded_rejections(
    body: dict[str, object], acl: dict[str, list[str]]
) -> None:
    from datetime import UTC, datetime

    try:
        cmd = parse_command(json.dumps(body).encode(), CommandTarget("room-1"))
    except CommandRejected:
        return
    try:
        check_acl(cmd, acl)
    except CommandRejected as exc:
        assert exc.code == "forbidden"
    try:
        check_fresh(cmd, now=datetime(2026, 6, 1, tzinfo=UTC), max_age_s=300)
    except CommandRejected as exc:
        assert exc.code == "expired"


def test_regression_deeply_nested_payload_is_bad_json() -> None:
    """json.loads raised RecursionError on ~100 k nested arrays: the bridge lane would crash."""
    with pytest.raises(CommandRejected) as info:
        parse_command(b"[" * 100_000, CommandTarget("room-1"))
    assert info.value.code == "bad_json"
    assert peek_id(b"{" * 100_000) is None
