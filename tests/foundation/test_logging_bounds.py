"""Log output is bounded: long fields are cut (after masking), repeated warnings are summarised."""

from __future__ import annotations

import io
import json
import logging

import structlog

from orchestrator import logging as olog

SECRET = "SKbounds-secret-value-0123456789"


def _lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_long_fields_are_cut_with_a_marker_and_secrets_stay_masked() -> None:
    buf = io.StringIO()
    olog.register_secret(SECRET)
    olog.configure(level="info", fmt="json", stream=buf, field_max_chars=100)
    log = structlog.get_logger("t")
    # the secret straddles the cut: masking must happen before cutting
    body = "x" * 90 + SECRET + "y" * 30_000
    names = [f"field_{i}" for i in range(10_000)]
    log.info("callback_unknown_type", body=body, nested={"deep": ["z" * 5000]}, names=names)
    logging.getLogger("uvicorn.error").warning("w" * 20_000)
    text = buf.getvalue()
    assert SECRET not in text and SECRET[:8] not in text
    assert len(text) < 4000, len(text)  # 150 KB of input, two short lines out
    first, second = _lines(buf)
    assert str(first["body"]).startswith("x" * 90 + "***")
    assert str(first["body"]).endswith("chars]")
    assert str(first["nested"]["deep"][0]).endswith("chars]")  # type: ignore[index]
    assert str(second["event"]).endswith("chars]")
    assert first["names"][-1] == "…[+9900 items]"  # type: ignore[index]


def test_repeated_errors_pass_a_burst_then_one_summary_per_kind() -> None:
    buf = io.StringIO()
    olog.configure(level="info", fmt="json", stream=buf, repeat_interval_s=3600, repeat_burst=5)
    log = structlog.get_logger("t")
    for i in range(1000):
        log.error("cloud_call_failed", attempt=i)
        logging.getLogger("asyncio").error("socket.accept() out of system resource fd=%d", i)
    log.info("callback_accepted", n=1)  # info lines are never limited
    log.warning("other_kind")
    lines = _lines(buf)
    assert sum(1 for e in lines if e["event"] == "cloud_call_failed") == 5
    assert sum(1 for e in lines if str(e["event"]).startswith("socket.accept()")) == 5
    assert any(e["event"] == "callback_accepted" for e in lines)
    assert any(e["event"] == "other_kind" for e in lines)
    assert olog.flush_repeats() == 0  # the window is still open: nothing to report yet


def test_suppressed_counts_are_reported_when_the_window_ends() -> None:
    buf = io.StringIO()
    olog.configure(level="info", fmt="json", stream=buf, repeat_interval_s=60, repeat_burst=2)
    limiter = olog._limiter
    assert limiter is not None
    now = [0.0]
    limiter._clock = lambda: now[0]
    log = structlog.get_logger("t")
    for _ in range(10):
        log.warning("callback_rejected", reason="bad_signature")
    now[0] = 61.0
    log.warning("callback_rejected", reason="bad_signature")  # next window: carries the count
    for _ in range(4):
        log.warning("callback_rejected", reason="bad_signature")
    now[0] = 130.0
    assert olog.flush_repeats() == 1  # the flood stopped: one summary line
    lines = _lines(buf)
    rejected = [e for e in lines if e["event"] == "callback_rejected"]
    assert len(rejected) == 4
    assert rejected[2]["repeats_suppressed"] == 8
    [summary] = [e for e in lines if e["event"] == "log_repeats_suppressed"]
    assert summary["suppressed"] == 3
    assert "callback_rejected" in str(summary["kind"])
