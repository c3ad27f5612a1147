"""The callback route over real HTTP into a real SQLite inbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator.callbacks.receiver import CallbackIntake, IntakeResult, replay_inbox
from orchestrator.rooms.model import Poked, RtmpStateReported
from tests.support.callbacks import KEY, OLD_KEY, PATH, ROOM_KEY, T0, Harness, rtmp_body

T = int(T0.timestamp())


async def assert_nothing_changed(h: Harness) -> None:
    await h.intake.drain()
    assert await h.store.inbox_pending() == []
    assert h.sink.posted.items == []
    assert h.hooked.items == []


def assert_no_secret(logs: list[dict[str, Any]]) -> None:
    text = json.dumps(logs, default=str)
    for secret in (KEY, OLD_KEY, ROOM_KEY, "sk-SECRET-1"):
        assert secret not in text


@pytest.mark.parametrize("auth_type", ["MSS_A", "MSS_A_HEAD"])
async def test_accepted_and_handed_to_room(make_harness: Any, auth_type: str) -> None:
    h: Harness = await make_harness(auth_type=auth_type)
    with capture_logs() as logs:
        r = await h.send("CONNECTED")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        posted = await h.sink.posted.wait_for(1)
    room, ev = posted[0]
    assert room == "room-1"
    assert isinstance(ev, RtmpStateReported)
    assert (ev.job_id, ev.rtmp_state, ev.at) == ("job-1", "CONNECTED", T0)
    await h.intake.drain()
    assert await h.store.inbox_pending() == []  # processed and marked done
    assert h.metrics.lags == [0.0]
    accepted = [e for e in logs if e["event"] == "callback_accepted"]
    assert len(accepted) == 1 and accepted[0]["accept_ms"] >= 0.0
    assert_no_secret(logs)


async def test_previous_key_accepted(make_harness: Any) -> None:
    h: Harness = await make_harness()
    r = await h.send("CONNECTED", key=OLD_KEY)
    assert r.status_code == 200
    await h.sink.posted.wait_for(1)


async def test_room_with_own_key(make_harness: Any) -> None:
    h: Harness = await make_harness()
    r = await h.send("CONNECTED", job="job-own", room="room-own", key=ROOM_KEY)
    assert r.status_code == 200
    await h.sink.posted.wait_for(1)
    r = await h.send("DISCONNECTED", job="job-own", room="room-own", key=KEY, hw_time=T + 1)
    assert r.status_code == 401


async def test_body_is_not_signed(make_harness: Any) -> None:
    """A valid URI+time signature accepts any body: that is the protocol, hence re-reads."""
    h: Harness = await make_harness()
    query, headers = h.sign()
    r = await h.post_raw(rtmp_body("END", job="job-2", room="room-2"), query=query, headers=headers)
    assert r.status_code == 200
    posted = await h.sink.posted.wait_for(1)
    assert posted[0][0] == "room-2"


REJECTIONS = {
    "wrong_key": ({"key": "not-our-key"}, "signature_mismatch"),
    "expired": ({"hw_time": T - 301}, "time_out_of_tolerance"),
    "future": ({"hw_time": T + 301}, "time_out_of_tolerance"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
@pytest.mark.parametrize("auth_type", ["MSS_A", "MSS_A_HEAD"])
async def test_refused_changes_nothing(make_harness: Any, case: str, auth_type: str) -> None:
    h: Harness = await make_harness(auth_type=auth_type)
    kwargs, reason = REJECTIONS[case]
    with capture_logs() as logs:
        r = await h.send("CONNECTED", **kwargs)
    assert r.status_code == 401
    assert r.json() == {"status": "error", "reason": "unauthorized"}
    rejected = [e for e in logs if e["event"] == "callback_rejected"]
    assert [e["reason"] for e in rejected] == [reason]
    assert_no_secret(logs)
    await assert_nothing_changed(h)


async def _asgi(
    h: Harness, headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Call the route's ASGI app directly (what no HTTP server would let through)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 80),
    }
    inbox = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await h.intake.endpoint(scope, receive, send)
    return sent


async def test_unreadable_content_length_is_400(make_harness: Any) -> None:
    h: Harness = await make_harness()
    sent = await _asgi(h, [(b"content-length", b"12x")], [])
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"]) == {"status": "error", "reason": "bad_content_length"}
    await assert_nothing_changed(h)


async def test_caller_gone_mid_body_stores_and_answers_nothing(make_harness: Any) -> None:
    h: Harness = await make_harness()
    body = rtmp_body("CONNECTED")
    sent = await _asgi(h, [], [{"type": "http.request", "body": body[:10], "more_body": True},
                              {"type": "http.disconnect"}])  # fmt: skip
    assert sent == []
    await assert_nothing_changed(h)


@pytest.mark.parametrize(
    ("query", "headers", "reason"),
    [
        ("", {}, "missing_signature"),
        ("", {"x-hw-mss-secret": "", "x-hw-mss-time": ""}, "missing_signature"),
        ("", {"X-HW-MSS-SECRET": "ab" * 32}, "missing_time"),
        ("", {"x-hw-mss-secret": "zz" * 32, "x-hw-mss-time": "1"}, "bad_signature_format"),
    ],
)
async def test_missing_or_bad_headers(
    make_harness: Any, query: str, headers: dict[str, str], reason: str
) -> None:
    h: Harness = await make_harness()
    with capture_logs() as logs:
        r = await h.post_raw(rtmp_body("CONNECTED"), query=query, headers=headers)
    assert r.status_code == 401
    assert [e["reason"] for e in logs if e["event"] == "callback_rejected"] == [reason]
    await assert_nothing_changed(h)


async def test_header_name_case_does_not_matter(make_harness: Any) -> None:
    h: Harness = await make_harness()
    _, headers = h.sign()
    upper = {k.upper(): v.upper() for k, v in headers.items()}  # hex of the time too
    # the time string is signed as sent, so an upper-cased time needs its own signature
    r = await h.post_raw(rtmp_body("CONNECTED"), headers=upper)
    assert r.status_code == 401
    upper["X-HW-MSS-TIME"] = headers["x-hw-mss-time"]
    r = await h.post_raw(rtmp_body("CONNECTED"), headers=upper)
    assert r.status_code == 200


async def test_signature_for_another_url_refused(make_harness: Any) -> None:
    h: Harness = await make_harness(auth_type="MSS_A")
    query, _ = h.sign(path="/callbacks/other")
    r = await h.post_raw(rtmp_body("CONNECTED"), query=query)
    assert r.status_code == 401
    await assert_nothing_changed(h)


async def test_none_refused_unless_allowed(make_harness: Any) -> None:
    h: Harness = await make_harness(auth_type="NONE")
    r = await h.post_raw(rtmp_body("CONNECTED"))
    assert r.status_code == 401
    await assert_nothing_changed(h)
    h2: Harness = await make_harness(auth_type="NONE", allow_none=True)
    r = await h2.post_raw(rtmp_body("CONNECTED"))
    assert r.status_code == 200
    await h2.sink.posted.wait_for(1)


async def test_oversized_by_content_length(make_harness: Any) -> None:
    h: Harness = await make_harness(max_body_bytes=1024)
    query, headers = h.sign()
    big = rtmp_body("CONNECTED")[:-1] + b" " * 2000 + b"}"
    r = await h.post_raw(big, query=query, headers=headers)
    assert r.status_code == 413
    await assert_nothing_changed(h)


async def test_oversized_streamed_without_length(make_harness: Any) -> None:
    h: Harness = await make_harness(max_body_bytes=1024)
    _, headers = h.sign()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 300

    r = await h.client.post(f"{h.base_url}{PATH}", content=chunks(), headers=headers)
    assert r.status_code == 413
    await assert_nothing_changed(h)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body_not_json"),
        (
            json.dumps(
                {"event_type": "RTMP_STREAM_STATE_CHANGE", "message": {"job_id": "x"}}
            ).encode(),
            "message_not_string",
        ),
        (
            json.dumps(
                {
                    "event_type": "RTMP_STREAM_STATE_CHANGE",
                    "message": json.dumps(json.dumps({"job_id": "x"})),
                }
            ).encode(),
            "message_not_object",
        ),
        (
            json.dumps(
                {
                    "event_type": "RTMP_STREAM_STATE_CHANGE",
                    "message": json.dumps({"state": "CONNECTED"}),
                }
            ).encode(),
            "job_id_missing",
        ),
    ],
)
async def test_bad_body_is_400(make_harness: Any, body: bytes, reason: str) -> None:
    h: Harness = await make_harness()
    query, headers = h.sign()
    r = await h.post_raw(body, query=query, headers=headers)
    assert (r.status_code, r.json()) == (400, {"status": "error", "reason": reason})
    await assert_nothing_changed(h)


async def test_unauthenticated_bad_body_is_401_not_400(make_harness: Any) -> None:
    h: Harness = await make_harness()
    r = await h.post_raw(b"{not json")
    assert r.status_code == 401


async def test_identical_redelivery_is_one_room_event(make_harness: Any) -> None:
    h: Harness = await make_harness()
    for _ in range(3):
        assert (await h.send("CONNECTED")).status_code == 200
    await h.sink.posted.wait_for(1)
    await h.intake.drain()
    assert len(h.rtmp_posts()) == 1
    assert [r for r in h.metrics.results.items if r[1] == "duplicate"] == [
        ("RTMP_STREAM_STATE_CHANGE", "duplicate")
    ] * 2


async def test_resigned_retry_is_suppressed(make_harness: Any) -> None:
    h: Harness = await make_harness()
    await h.send("DISCONNECTED", hw_time=T)
    await h.send("DISCONNECTED", hw_time=T + 3)  # the service retried with a fresh hwTime
    await h.metrics.results.wait_for(2)
    assert h.rtmp_posts() == [("room-1", "DISCONNECTED", T0)]
    assert h.metrics.results.items[-1] == ("RTMP_STREAM_STATE_CHANGE", "duplicate")


async def test_genuine_flaps_stay_distinct(make_harness: Any) -> None:
    h: Harness = await make_harness()
    for i, state in enumerate(["CONNECTED", "DISCONNECTED", "CONNECTED"]):
        assert (await h.send(state, hw_time=T + i)).status_code == 200
    await h.sink.posted.wait_for(3)
    assert [s for _, s, _ in h.rtmp_posts()] == ["CONNECTED", "DISCONNECTED", "CONNECTED"]


async def test_late_older_event_never_overrides_newer(make_harness: Any) -> None:
    h: Harness = await make_harness()
    h.now[0] = T0 + timedelta(seconds=10)  # both were signed before they arrived
    await h.send("CONNECTED", hw_time=T + 5)
    await h.send("DISCONNECTED", hw_time=T + 2)  # older, arrives late
    await h.metrics.results.wait_for(2)
    assert [s for _, s, _ in h.rtmp_posts()] == ["CONNECTED"]
    assert h.metrics.results.items[-1] == ("RTMP_STREAM_STATE_CHANGE", "stale")
    await h.intake.drain()
    assert await h.store.inbox_pending() == []  # recorded and done, not applied


async def test_unknown_job_recorded_and_room_poked(make_harness: Any) -> None:
    h: Harness = await make_harness()
    r = await h.send("CONNECTED", job="job-nobody-knows", room="room-orphan")
    assert (r.status_code, r.json()) == (202, {"status": "unknown_job"})
    posted = await h.sink.posted.wait_for(1)
    assert posted[0][0] == "room-orphan" and isinstance(posted[0][1], Poked)
    r = await h.send("CONNECTED", job="job-x", room="room-not-ours", hw_time=T + 1)
    assert r.status_code == 202
    await h.metrics.results.wait_for(2)
    assert len(h.sink.posted.items) == 1


async def test_script_and_reply_events_reach_the_hook(make_harness: Any) -> None:
    h: Harness = await make_harness()
    r = await h.send(
        event_type="SHOOT_SCRIPT_SWITCH",
        extra={
            "scene_script_name": "s1",
            "shoot_script_sequence_no": "2",
            "shoot_script_title": "t",
        },
    )
    assert r.status_code == 200
    r = await h.send(event_type="REPLY_COMMAND_FINISH", extra={"reply_id": "rep-1"})
    assert r.status_code == 200
    hooked = await h.hooked.wait_for(2)
    kinds = {(ev.event_type, room) for ev, room in hooked}
    assert kinds == {("SHOOT_SCRIPT_SWITCH", "room-1"), ("REPLY_COMMAND_FINISH", "room-1")}
    script = next(ev for ev, _ in hooked if ev.event_type == "SHOOT_SCRIPT_SWITCH")
    assert script.shoot_script_sequence_no == "2"
    assert h.sink.posted.items == []  # not room events


class CrashingIntake(CallbackIntake):
    """The process dies right after the commit: the room never hears of the event."""

    def hand_over(self, result: IntakeResult) -> None:
        return None


async def test_crash_after_accept_is_replayed(make_harness: Any) -> None:
    h: Harness = await make_harness(intake_cls=CrashingIntake)
    assert (await h.send("DISCONNECTED")).status_code == 200
    await h.intake.drain()
    assert h.sink.posted.items == []
    pending = await h.store.inbox_pending()
    assert [p.job_id for p in pending] == ["job-1"]
    assert "sk-SECRET-1" not in json.dumps(pending[0].payload)
    # "restart": a fresh sink replays the inbox before serving
    h.sink.posted.items.clear()
    count = await replay_inbox(h.store, h.sink, room_for_job=h.jobs.get)
    assert count == 1
    room, ev = h.sink.posted.items[0]
    assert room == "room-1" and isinstance(ev, RtmpStateReported)
    assert (ev.rtmp_state, ev.at) == ("DISCONNECTED", T0)
    assert await h.store.inbox_pending() == []
    assert await replay_inbox(h.store, h.sink, room_for_job=h.jobs.get) == 0


async def test_replay_orders_by_event_time(make_harness: Any) -> None:
    h: Harness = await make_harness(intake_cls=CrashingIntake)
    await h.send("CONNECTED", hw_time=T + 5)
    await h.send("DISCONNECTED", hw_time=T + 1)
    await h.intake.drain()
    await replay_inbox(h.store, h.sink, room_for_job=h.jobs.get)
    assert [s for _, s, _ in h.rtmp_posts()] == ["DISCONNECTED", "CONNECTED"]
