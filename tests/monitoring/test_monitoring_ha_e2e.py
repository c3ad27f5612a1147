"""Home Assistant discovery with the real daemon process: every configured room announced
(device named after the room's ``name``), and a room removed by ``systemctl reload`` (SIGHUP)
cleared from Home Assistant with empty retained configs; ``bridge/info`` follows too."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import pytest

from tests.support.e2e import ALWAYS, Stack, mqtt_watch, room
from tests.support.mqtt import clear_retained

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ENTITIES = (
    ("switch", "order"),
    ("sensor", "state"),
    ("binary_sensor", "on_air"),
    ("binary_sensor", "off_air_scheduled"),
    ("sensor", "sla_today"),
)


async def test_rooms_are_announced_and_a_room_removed_by_sighup_is_cleared(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    ha = f"{prefix}/homeassistant"  # under the test prefix: one watcher sees everything

    def topics(room_id: str) -> set[str]:
        return {f"{ha}/{c}/{prefix}/{room_id}_{e}/config" for c, e in ENTITIES}

    await stack.emulator(["ha1", "ha2"])
    cfg = stack.config([room("ha1", [ALWAYS]), room("ha2", [ALWAYS])], mqtt_prefix=prefix)
    cfg["mqtt"].update(ha_discovery=True, ha_discovery_prefix=ha)
    stack.write(cfg)
    seen: set[str] = set()
    try:
        async with mqtt_watch(prefix) as w:
            d = await stack.daemon()
            for t in sorted(topics("ha1") | topics("ha2")):
                m = await w.wait_for(lambda m, t=t: m.topic.value == t and bool(m.payload), what=t)
                body = json.loads(m.payload)
                assert body["device"]["name"] == ("e2e ha1" if "/ha1_" in t else "e2e ha2")
                assert body["availability_topic"] == f"{prefix}/bridge/state"
            await d.wait_room("ha2", "LIVE")

            cfg["rooms"] = [r for r in cfg["rooms"] if r["id"] == "ha1"]
            stack.write(cfg)
            d.proc.send(signal.SIGHUP)
            for t in sorted(topics("ha2")):
                await w.wait_for(lambda m, t=t: m.topic.value == t and m.payload == b"", what=t)
            info = await w.wait_for(
                lambda m: (
                    m.topic.value == f"{prefix}/bridge/info"
                    and json.loads(m.payload)["rooms"] == ["ha1"]
                ),
                what="bridge/info without ha2",
            )
            assert info is not None
            # ha1 is still announced: nothing cleared its configs
            assert not [m for m in w.messages if m.topic.value in topics("ha1") and not m.payload]
            seen = {m.topic.value for m in w.messages} | w.retained_topics()
    finally:
        for p in stack.procs.items:  # first: a dying daemon's last will would come after
            p.send(signal.SIGTERM)
            await p.wait(30)
        await clear_retained(prefix, seen | topics("ha1") | topics("ha2"))
