"""Alert hooks end to end: real daemon + emulator + mosquitto + a webhook receiver.

Every alert reaches both paths with one shape (``orchestrator.alerts``): the room's MQTT
``events`` topic and the optional webhook (generic JSON POST, retried on 5xx).

* QUARANTINED: the emulator refuses the first start with a permanent error; the room
  quarantines and alerts ``SET``; an MQTT ``reset`` command clears it (``CLEARED`` on both) and
  the room goes LIVE.
* A drop not recovered within ``recovery.unrecovered_alert_s``: ``unrecovered`` is ``SET`` while
  the ladder works and ``CLEARED`` once the room is LIVE again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.emulator.service import Fault
from orchestrator.rooms.model import RoomState
from tests.support.ux import mqtt_tap, running_stack, webhook_receiver

pytestmark = [pytest.mark.e2e, pytest.mark.external_service]

ALERT_KEYS = {"type", "room_id", "at", "kind", "status", "message"}


def _is(room: str, kind: str, status: str) -> Callable[[dict[str, Any]], bool]:
    def pred(body: dict[str, Any]) -> bool:
        return (body.get("room_id"), body.get("kind"), body.get("status")) == (room, kind, status)

    return pred


def _mqtt_alert(prefix: str, room: str, kind: str, status: str) -> Callable[[dict[str, Any]], bool]:
    match = _is(room, kind, status)

    def pred(m: dict[str, Any]) -> bool:
        p = m["payload"]
        return (
            m["topic"] == f"{prefix}/rooms/{room}/events"
            and isinstance(p, dict)
            and p.get("type") == "alert"
            and match(p)
        )

    return pred


async def test_quarantine_alert_set_then_cleared_by_mqtt_reset(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("mosquitto")
    prefix = f"uxtest-{uuid.uuid4().hex[:10]}"
    refuse = Fault(operation="start", status=400, error_code="MSS.00000003", count=1)
    async with (
        webhook_receiver(fail_first=1) as hook,
        mqtt_tap(prefix) as tap,
        running_stack(
            tmp_path,
            rooms=("ux-q",),
            mqtt={"enabled": True, "prefix": prefix, "client_id": f"{prefix}-daemon"},
            alerts={"webhook_url": hook.url, "webhook_retries": 3},
            faults=[refuse],
        ) as st,
    ):
        await st.wait_state("ux-q", RoomState.QUARANTINED)
        set_hook = await hook.posts.wait(_is("ux-q", "quarantined", "SET"))
        set_mqtt = await tap.messages.wait(_mqtt_alert(prefix, "ux-q", "quarantined", "SET"))
        assert set(set_hook) == ALERT_KEYS
        assert set_hook == set_mqtt["payload"], "one shape on both paths"
        assert set_hook["message"].startswith("start refused")
        assert st.daemon.webhook is not None and st.daemon.webhook.sent == 1  # after one 503

        reply = await tap.command("ux-q", {"id": "ux-reset-1", "action": "reset"})
        assert reply["status"] == "ok", reply
        cleared = await hook.posts.wait(_is("ux-q", "quarantined", "CLEARED"))
        await tap.messages.wait(_mqtt_alert(prefix, "ux-q", "quarantined", "CLEARED"))
        await st.wait_state("ux-q", RoomState.LIVE)  # the refused start was a one-off

    assert cleared["at"] >= set_hook["at"]
    assert [(b["kind"], b["status"]) for b in hook.posts.items] == [
        ("quarantined", "SET"),
        ("quarantined", "CLEARED"),
    ]
    assert [(a["kind"], a["status"]) for a in tap.alerts("ux-q")] == [
        ("quarantined", "SET"),
        ("quarantined", "CLEARED"),
    ]


async def test_unrecovered_drop_alert_set_then_cleared_when_live(
    require_service: Callable[[str], None], tmp_path: Path
) -> None:
    require_service("mosquitto")
    prefix = f"uxtest-{uuid.uuid4().hex[:10]}"
    async with (
        webhook_receiver() as hook,
        mqtt_tap(prefix) as tap,
        running_stack(
            tmp_path,
            rooms=("ux-u",),
            recovery={"grace_s": 10.0, "unrecovered_alert_s": 5.0},
            mqtt={"enabled": True, "prefix": prefix, "client_id": f"{prefix}-daemon"},
            alerts={"webhook_url": hook.url},
        ) as st,
    ):
        await st.wait_state("ux-u", RoomState.LIVE)
        await st.drop_link("ux-u")
        await st.wait_state("ux-u", RoomState.DEGRADED)
        st.clock.advance(10)  # past unrecovered_alert_s: alert, and the grace ends (refresh)
        raised = await hook.posts.wait(_is("ux-u", "unrecovered", "SET"))
        await st.wait_state("ux-u", RoomState.LIVE)
        await hook.posts.wait(_is("ux-u", "unrecovered", "CLEARED"))
        await tap.messages.wait(_mqtt_alert(prefix, "ux-u", "unrecovered", "SET"))
        await tap.messages.wait(_mqtt_alert(prefix, "ux-u", "unrecovered", "CLEARED"))
    assert "not live for 10s" in raised["message"]
    assert [(a["kind"], a["status"]) for a in tap.alerts("ux-u")] == [
        ("unrecovered", "SET"),
        ("unrecovered", "CLEARED"),
    ]
