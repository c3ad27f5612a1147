"""Fuzz the callback parser and verifier: only CallbackParseError/CallbackAuthError, no forgery.

Bad input must always produce a specific error (a stable reason code) and never be accepted:
whatever bytes, headers and queries arrive, :func:`verify_callback` either returns for a
request that carries the HMAC of one of our keys, or raises :class:`CallbackAuthError`.
"""

# ruff: noqa: PT017  (a fuzzer may or may not get an exception: pytest.raises cannot express it)

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.callbacks.parse import CallbackEvent, CallbackParseError, parse_body, peek_ids
from orchestrator.callbacks.verify import (
    CallbackAuthError,
    callback_uri,
    mss_signature,
    verify_callback,
)
from tests.support.fuzz import FUZZ

KEYS = ["fuzz-key-current", "fuzz-key-previous"]
NOW = 1_800_000_000
PATH = "/callbacks/metastudio"
REASON = re.compile(r"^[a-z_]+$")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["job_id", "room_id", "state", "event_type", "reply_id", "time", "message", "x"]
)
messages = st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=6)
bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda et, msg, extra: json.dumps(
            {"event_type": et, "message": msg if isinstance(msg, str) else json.dumps(msg), **extra}
        ).encode(),
        st.sampled_from(
            ["RTMP_STREAM_STATE_CHANGE", "SHOOT_SCRIPT_SWITCH", "REPLY_COMMAND_FINISH", "", "X"]
        )
        | st.text(max_size=10),
        messages | st.text(max_size=20),
        st.dictionaries(st.text(max_size=6), json_values, max_size=2),
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(bodies)
def test_parse_body_raises_only_parse_errors(body: bytes) -> None:
    try:
        event = parse_body(body)
    except CallbackParseError:
        return
    assert isinstance(event, CallbackEvent)


@FUZZ
@given(bodies)
def test_peek_ids_never_raises(body: bytes) -> None:
    room, job = peek_ids(body)
    assert room is None or isinstance(room, str)
    assert job is None or isinstance(job, str)


hex_time = st.integers(NOW - 1000, NOW + 1000).map(lambda t: format(t, "x"))
header_names = st.sampled_from(
    ["x-hw-mss-secret", "X-HW-MSS-SECRET", "x-hw-mss-time", "X-Hw-Mss-Time", "host", "x"]
)
header_values = st.one_of(
    st.text(max_size=70),
    hex_time,
    st.text(alphabet="0123456789abcdefABCDEF", min_size=63, max_size=65),
)
query_text = st.one_of(
    st.text(max_size=120),
    st.lists(
        st.tuples(st.sampled_from(["hwSecret", "hwTime", "hwsecret", "a"]), header_values),
        max_size=4,
    ).map(lambda kv: "&".join(f"{k}={v}" for k, v in kv)),
)


@FUZZ
@given(
    auth_type=st.sampled_from(["MSS_A", "MSS_A_HEAD", "NONE", "mss_a", "Mss_A_Head", ""]),
    path=st.one_of(st.just(PATH), st.text(max_size=40)),
    raw_query=query_text,
    headers=st.lists(st.tuples(header_names, header_values), max_size=4),
    uri_mode=st.sampled_from(["path", "full"]),
    full_url=st.one_of(st.none(), st.just("https://cb.example.com" + PATH), st.text(max_size=30)),
)
def test_verify_raises_only_auth_errors_and_never_accepts_a_forgery(
    auth_type: str,
    path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    uri_mode: str,
    full_url: str | None,
) -> None:
    try:
        verify_callback(
            auth_type=auth_type,
            path=path,
            raw_query=raw_query,
            headers=headers,
            keys=KEYS,
            uri_mode=uri_mode,  # type: ignore[arg-type]
            full_url=full_url,
            now=float(NOW),
        )
    except CallbackAuthError as exc:
        assert REASON.match(exc.reason)
        for key in KEYS:
            assert key not in str(exc)
        return
    # accepted: it must carry our HMAC (NONE is refused: allow_none defaults to False)
    assert auth_type in ("MSS_A", "MSS_A_HEAD")
    uri = callback_uri(full_url or "", "full") if uri_mode == "full" else callback_uri(path, "path")
    if auth_type == "MSS_A_HEAD":
        got = {k.lower(): v.strip() for k, v in headers}
        secret, hw_time = got["x-hw-mss-secret"], got["x-hw-mss-time"]
    else:
        pairs = dict(p.partition("=")[::2] for p in raw_query.split("&") if p)
        secret, hw_time = pairs["hwSecret"].strip(), pairs["hwTime"].strip()
    assert secret.lower() in {mss_signature(k, uri, hw_time) for k in KEYS}


@FUZZ
@given(
    key=st.sampled_from(KEYS),
    offset=st.integers(-299, 299),
    position=st.integers(0, 63),
    replacement=st.sampled_from("0123456789abcdef"),
    mutate=st.sampled_from(["signature", "path", "time", "none"]),
)
def test_mutated_signed_request_is_refused(
    key: str, offset: int, position: int, replacement: str, mutate: str
) -> None:
    """A valid MSS_A_HEAD request is accepted; any one-character change in what is signed is not."""
    hw_time = format(NOW + offset, "x")
    sig = mss_signature(key, PATH, hw_time)
    path = PATH
    if mutate == "signature":
        if sig[position] == replacement:
            replacement = "f" if replacement != "f" else "e"
        sig = sig[:position] + replacement + sig[position + 1 :]
    elif mutate == "path":
        path = PATH[: position % len(PATH)] + "X" + PATH[position % len(PATH) + 1 :]
    elif mutate == "time":
        hw_time = format(NOW + offset + 1, "x")
    headers = {"x-hw-mss-secret": sig, "x-hw-mss-time": hw_time}
    kw = {
        "auth_type": "MSS_A_HEAD",
        "path": path,
        "raw_query": "",
        "headers": headers,
        "keys": KEYS,
        "uri_mode": "path",
        "full_url": None,
        "now": float(NOW),
    }
    if mutate == "none":
        verify_callback(**kw)  # type: ignore[arg-type]
        return
    with pytest.raises(CallbackAuthError) as info:
        verify_callback(**kw)  # type: ignore[arg-type]
    assert info.value.reason == "signature_mismatch"


# --- regressions found by fuzzing ------------------------------------------------------


def test_regression_deeply_nested_body_is_a_parse_error() -> None:
    """json.loads raised RecursionError (not a CallbackParseError) on ~100 k nested arrays."""
    with pytest.raises(CallbackParseError, match="body_not_json"):
        parse_body(b"[" * 100_000)
    nested_message = json.dumps({"event_type": "X", "message": "[" * 100_000}).encode()
    with pytest.raises(CallbackParseError, match="message_not_json"):
        parse_body(nested_message)


def test_regression_peek_ids_on_deeply_nested_unverified_body() -> None:
    """peek_ids runs *before* authentication: it raised RecursionError for anyone."""
    assert peek_ids(b"[" * 100_000) == (None, None)
    assert peek_ids(json.dumps({"message": "{" * 100_000}).encode()) == (None, None)
