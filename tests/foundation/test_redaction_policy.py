"""The one redaction policy (orchestrator.redaction) and its use by every exit."""

from __future__ import annotations

import io
import json
import uuid

import structlog
from pydantic import SecretStr

import orchestrator.logging as olog
from orchestrator.mqtt.commands import error_reply, ok_reply
from orchestrator.ops.http import _Json
from orchestrator.ops.http import redact as http_redact
from orchestrator.redaction import MASK, is_secret_key, mask_text, redact, register_secret


def test_secret_keys_are_one_list_everywhere() -> None:
    for key in ("authorization", "Authorization", "signature", "X-Sdk-Signature", "cookie",
                "streamKey", "stream_key", "callbackKey", "hwSecret", "sk", "AK", "password",
                "x-auth-token", "credentials"):  # fmt: skip
        assert is_secret_key(key), key
    for key in ("dedupe_key", "window_key", "room_id", "state", "skip", "ask", "monkey"):
        assert not is_secret_key(key), key


def test_free_text_secrets_are_masked() -> None:
    registered = f"live-{uuid.uuid4().hex}"
    register_secret(registered)
    text = (
        f"APIGW.0308 bad output: rtmp://push.example.com/live/{registered} refused; "
        "backup rtmp://b.example.com/app/unregistered-key-42?key=qs-secret&x=1; "
        'echo {"stream_key": "json-secret-1", "room_id": "room-a"} '
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig "
        "db postgresql://liveorch:pg-pass-9@db/liveorch signature=abcdef0123 token: tok-77"
    )
    out = mask_text(text)
    for secret in (registered, "unregistered-key-42", "qs-secret", "json-secret-1",
                   "eyJhbGciOiJIUzI1NiJ9", "pg-pass-9", "abcdef0123", "tok-77"):  # fmt: skip
        assert secret not in out, (secret, out)
    assert "rtmp://push.example.com/live/***" in out
    assert '"room_id": "room-a"' in out and "APIGW.0308" in out, "the rest stays readable"
    assert mask_text(out) == out, "masking is idempotent"


def test_every_exit_applies_the_same_policy() -> None:
    registered = f"sk-{uuid.uuid4().hex}"
    register_secret(registered)
    value = {
        "last_error": f"MetaStudioError: stream key {registered} invalid",
        "authorization": "SDK-HMAC-SHA256 Access=x, Signature=y",
        "url": "rtmp://h/app/other-key",
    }
    expected = {
        "last_error": f"MetaStudioError: stream key {MASK} invalid",
        "authorization": MASK,
        "url": f"rtmp://h/app/{MASK}",
    }
    assert redact(value) == expected
    assert http_redact(value) == expected
    assert ok_reply("c1", value)["data"] == expected
    assert registered not in json.dumps(error_reply("c1", "x", value["last_error"]))
    out = io.StringIO()
    olog.configure(fmt="json", stream=out)
    structlog.get_logger("t").warning("room_failed", **value)
    line = json.loads(out.getvalue().splitlines()[-1])
    assert {k: line[k] for k in expected} == expected


NESTED = {
    "room_id": "room-a",
    "headers": [{"Authorization": "SDK-HMAC-SHA256 Access=ak1, Signature=s1"}],
    "request": {"signature": "deadbeef", "X-Sdk-Signature": "cafe", "callbackKey": "ck"},
    "key": SecretStr("pydantic-secret"),
    "empty_token": None,
}
NESTED_MASKED = {
    "room_id": "room-a",
    "headers": [{"Authorization": MASK}],
    "request": {"signature": MASK, "X-Sdk-Signature": MASK, "callbackKey": MASK},
    "key": MASK,
    "empty_token": None,  # nothing to hide: kept as null, not dropped
}


def test_mqtt_replies_mask_authorization_and_signature_at_any_depth() -> None:
    assert ok_reply("c1", NESTED)["data"] == NESTED_MASKED


def test_http_keeps_every_key_and_masks_the_same_ones() -> None:
    # every JSON answer of the ops API is rendered by this response class
    body = json.loads(_Json(NESTED).body)
    assert body == NESTED_MASKED
    assert set(body) == set(NESTED), "no key is dropped"


def test_logs_mask_the_same_keys() -> None:
    out = io.StringIO()
    olog.configure(fmt="json", stream=out)
    structlog.get_logger("t").warning("nested", **NESTED)
    line = json.loads(out.getvalue().splitlines()[-1])
    assert {k: line[k] for k in NESTED} == NESTED_MASKED
    assert olog.redact(NESTED) == NESTED_MASKED  # the log renderer's entry point
