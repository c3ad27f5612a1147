"""Every log path masks secrets: by key, by registered value, inside exceptions and stdlib logs."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from orchestrator import logging as olog

SECRETS = {
    "ak": "AKEXAMPLE0123456789",
    "sk": "SKexampleSecretValue0000000000000000",
    "stream_key": "live_123456_streamkeyabc",
    "callback_key": "cbKey-0987654321",
    "token": "MIIEXAMPLETOKEN-xyz-0001",
    "mqtt_password": "mqtt-pass-4242",
}


@pytest.fixture
def captured() -> io.StringIO:
    buf = io.StringIO()
    olog.register_secrets(SECRETS.values())
    olog.configure(level="debug", fmt="json", stream=buf)
    return buf


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def _assert_clean(buf: io.StringIO) -> None:
    text = buf.getvalue()
    assert text, "nothing was logged"
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked into the log"


def test_secret_keys_are_masked_at_any_depth(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.info(
        "room_configured",
        sk="whatever-unregistered-sk",
        nested={"stream_key": "unregistered-stream-key", "list": [{"password": "pw-unregistered"}]},
        headers={"X-Hw-Mss-Secret": "deadbeefcafe", "Content-Type": "application/json"},
        hwSecret="abcdef012345",
        dedupe_key="job-1/CONNECTED",
    )
    (line,) = _lines(captured)
    assert line["sk"] == olog.MASK
    assert line["nested"] == {"stream_key": olog.MASK, "list": [{"password": olog.MASK}]}
    assert line["headers"] == {"X-Hw-Mss-Secret": olog.MASK, "Content-Type": "application/json"}
    assert line["hwSecret"] == olog.MASK
    assert line["dedupe_key"] == "job-1/CONNECTED", "non-secret *_key fields stay readable"


def test_registered_values_are_masked_inside_text(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    url = f"rtmp://push.example.com/live/{SECRETS['stream_key']}"
    log.info("output_refreshed", url=url, note=f"ak={SECRETS['ak']} tok {SECRETS['token']}")
    log.warning(f"free text with {SECRETS['callback_key']}")
    _assert_clean(captured)
    assert "rtmp://push.example.com/live/***" in captured.getvalue()


def test_exceptions_are_rendered_then_masked(captured: io.StringIO) -> None:
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"signing failed with {SECRETS['sk']}")
    except RuntimeError:
        log.exception("call_failed")
    _assert_clean(captured)
    assert "RuntimeError" in captured.getvalue()


def test_stdlib_loggers_go_through_redaction(captured: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").error("bad %s", SECRETS["mqtt_password"])
    logging.getLogger("some.lib").warning("token=%s", SECRETS["token"])
    _assert_clean(captured)


def test_a_broker_going_away_is_a_warning_not_an_error(captured: io.StringIO) -> None:
    mqtt = logging.getLogger("mqtt")
    mqtt.error("failed to receive on socket: %s", "[Errno 104] Connection reset by peer")
    mqtt.error("something else broke")
    levels = [(e["event"][:27], e["level"]) for e in _lines(captured)]
    assert levels == [("failed to receive on socket", "warning"), ("something else broke", "error")]


def test_short_values_are_not_registered() -> None:
    olog.register_secret("abc")
    assert olog.mask_text("abcdef") == "abcdef"
