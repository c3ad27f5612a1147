"""A cloud error that quotes a stream key never leaves the daemon unmasked (issue 20).

The real daemon against the emulator over real HTTP and the real mosquitto: the emulator's
start answer is an error whose text carries the room's stream key and a push URL with another
key; the retained MQTT state, ``/rooms``, the SQLite store and the log must show none of them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from e2e_support import ALWAYS, Stack, clear_retained, mqtt_watch, room


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
