"""Home Assistant's SLA sensor end to end: the in-process daemon on a manual clock, the
emulator and the real mosquitto. After an SLA flush the daemon publishes each room's SLA of
the day, retained, on ``{prefix}/rooms/{room}/sla`` — the topic the discovered sensor reads —
and only when it changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from orchestrator.rooms.model import RoomState
from tests.support.ux import mqtt_tap, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.external_service]


async def test_sla_of_the_day_is_published_for_the_discovered_sensor(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("mosquitto")
    prefix = f"uxtest-{uuid.uuid4().hex[:10]}"
    ha_prefix = f"{prefix}/homeassistant"  # under the tap's prefix: one subscriber sees both
    sla_topic = f"{prefix}/rooms/ux-s/sla"

    def sla(pred: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
        return lambda m: (
            m["topic"] == sla_topic and isinstance(m["payload"], dict) and pred(m["payload"])
        )

    seen: list[dict[str, Any]] = []
    try:
        async with (
            mqtt_tap(prefix) as tap,
            running_stack(
                tmp_path,
                rooms=("ux-s",),
                mqtt={
                    "enabled": True,
                    "prefix": prefix,
                    "client_id": f"{prefix}-daemon",
                    "ha_discovery": True,
                    "ha_discovery_prefix": ha_prefix,
                },
            ) as st,
        ):
            seen = tap.messages.items  # the tap's own list: filled until the end
            config = await tap.messages.wait(
                lambda m: m["topic"] == f"{ha_prefix}/sensor/{prefix}/ux-s_sla_today/config"
            )
            assert config["payload"]["state_topic"] == sla_topic
            await st.wait_state("ux-s", RoomState.LIVE)
            st.clock.advance(100)
            await st.daemon.sla_book.flush()
            first = await tap.messages.wait(sla(lambda p: p["scheduled_s"] >= 100))
            body = first["payload"]
            assert set(body) == {"day", "scheduled_s", "live_s", "percent"}
            assert body["day"] == st.clock.now().date().isoformat()
            assert 0 < body["live_s"] <= body["scheduled_s"]
            assert body["percent"] == round(100 * body["live_s"] / body["scheduled_s"], 2)

            # nothing changed: no new message; then a minute more LIVE: a new one
            await st.daemon.sla_book.flush()
            st.clock.advance(60)
            await st.daemon.sla_book.flush()
            later = await tap.messages.wait(
                sla(lambda p: p["scheduled_s"] >= body["scheduled_s"] + 60)
            )
            sent = [m for m in tap.messages.items if m["topic"] == sla_topic]
            assert [m["payload"] for m in sent] == [body, later["payload"]]
    finally:  # configs and SLA reach a live subscriber unflagged: clear all it saw, retained
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"{prefix}-clean") as c:
            for t in sorted({m["topic"] for m in seen}):
                await c.publish(t, b"", qos=1, retain=True)
