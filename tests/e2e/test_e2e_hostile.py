"""Hostile MQTT input and a cloud error quoting a stream key, against the real daemon (issue 20).

The real daemon against the emulator over real HTTP and the real mosquitto: the emulator's
start answer is an error whose text carries the room's stream key and a push URL with another
key; the retained MQTT state, ``/rooms``, the SQLite store and the log must show none of them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.e2e import ALWAYS, MqttWatch, Stack, mqtt_watch, room
from tests.support.mqtt import clear_retained


async def test_a_stream_key_inside_a_cloud_error_is_masked_everywhere(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    emu = await stack.emulator(["rleak"])
    r = room("rleak", [ALWAYS])
    key = str(r["stream_key"])
    other = "unregistered-push-key-7f3a"
    error_msg = (
        f"invalid output rtmp://push.example.com/live/{key}; backup "
        f"rtmp://cdn.example.com/app/{other}?key=qs-leak-91 (stream_key={key})"
    )
    resp = await emu.http.post(
        "/_emulator/faults",
        json={"operation": "start", "status": 400, "error_code": "MSS.00000003",
              "error_msg": error_msg, "count": 100_000},
    )  # fmt: skip
    resp.raise_for_status()
    stack.write(stack.config([r], mqtt_prefix=prefix))
    leaks = (key, other, "qs-leak-91")
    topics = {f"{prefix}/rooms/rleak/state"}
    try:
        d = await stack.daemon()
        async with mqtt_watch(prefix) as w:
            state = await w.state(
                "rleak", lambda s: "MSS.00000003" in (s.get("last_error") or ""), what="error"
            )
            topics |= w.retained_topics()
        rooms = (await d.http.get("/rooms")).text
        detail = (await d.http.get("/rooms/rleak")).text
        assert "MSS.00000003" in rooms
        with sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True) as db:
            stored = "\n".join(db.iterdump())
        assert "MSS.00000003" in stored, "the error reached the store (masked)"
        log = d.proc.text()
        for secret in leaks:
            assert secret not in str(state), f"{secret} in the retained MQTT state"
            assert secret not in rooms and secret not in detail, f"{secret} in /rooms"
            assert secret not in stored, f"{secret} in the store"
            assert secret not in log, f"{secret} in the daemon log"
        assert "rtmp://cdn.example.com/app/***" in str(state)
    finally:
        await clear_retained(prefix, topics)


async def _publish(w: MqttWatch, topic: str, payload: bytes, response: str | None = None) -> None:
    props = None
    if response is not None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = response
    await w.client.publish(topic, payload, qos=1, properties=props)


async def _reply(w: MqttWatch, topic: str, command_id: str | None) -> dict[str, Any]:
    def match(m: aiomqtt.Message) -> bool:
        return m.topic.value == topic and json.loads(m.payload).get("id") == command_id

    m = await w.wait_for(match, what=f"reply {command_id}")
    reply: dict[str, Any] = json.loads(m.payload)
    return reply


async def test_hostile_mqtt_commands_against_the_daemon(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    """Issue 20's MQTT cases, end to end: a reused id, a response topic aimed at bridge/state,
    a far-future sent_at and an oversized payload."""
    require_service("mosquitto")
    emu = await stack.emulator(["ra", "rc"])
    stack.write(stack.config([room("ra", [ALWAYS]), room("rc")], mqtt_prefix=prefix))
    topics = {f"{prefix}/rooms/ra/state", f"{prefix}/rooms/rc/state"}
    command, reply_topic = f"{prefix}/rooms/ra/command", f"{prefix}/rooms/ra/command/reply"
    try:
        d = await stack.daemon()
        live = await d.wait_room("ra", "LIVE")
        async with mqtt_watch(prefix) as w:
            other = await w.command("rc", {"id": "X1", "action": "skip_next_window"})
            restart = await w.command("ra", {"id": "X1", "action": "restart"})
            assert restart["status"] == "ok" and restart != other, restart
            await d.wait_room("ra", "LIVE", not_job=live["job_id"])

            stop = json.dumps({"id": "R1", "action": "stop"}).encode()
            await _publish(w, command, stop, response=f"{prefix}/bridge/state")
            refused = await _reply(w, reply_topic, "R1")

            ahead = (datetime.now(UTC) + timedelta(days=30)).isoformat()
            skewed = await w.command("ra", {"id": "S1", "action": "stop", "sent_at": ahead})

            big = json.dumps({"id": "B1", "action": "stop", "pad": "x" * 1_500_000}).encode()
            await _publish(w, command, big)
            too_large = await _reply(w, reply_topic, None)
            state_payloads = {m.payload for m in w.messages if m.topic.value.endswith("/state")}
            topics |= w.retained_topics()
        assert refused["error"]["code"] == "reply_topic_refused"
        assert skewed["error"]["code"] == "clock_skew"
        assert too_large["error"]["code"] == "payload_too_large"
        after = await d.room("ra")
        assert (after["state"], after["order"]) == ("LIVE", "ON"), "no stop was executed"
        assert not any(b'"R1"' in p for p in state_payloads), "nothing published on a state"
        assert (await emu.stats())["starts"] == 2  # the first start and the restart
    finally:
        await clear_retained(prefix, topics)
