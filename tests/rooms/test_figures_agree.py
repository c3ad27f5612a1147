"""`liveorch report`, `/metrics`, the status page (`/rooms/{id}` and its timeline) and the SLA
rows tell the same story about one drop whose callbacks were all lost (issue 24).

The real supervisor drives the room against the emulator over real HTTP (see
test_supervisor_emulator.py) with the daemon's own transition listener, SLA flush and ops
routes on top; both clocks are manual and move together. The push dies with every callback
lost: only the job reads show it, one poll interval later. Every figure must count the outage
from when the stream stopped, not from when the daemon noticed.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from orchestrator.app import Daemon
from orchestrator.report import rows_to_dicts
from orchestrator.rooms.model import RoomState
from orchestrator.settings import Settings
from tests.rooms.test_supervisor_emulator import ROOM, RTMP, Env, env, go_live  # noqa: F401

S = RoomState


def _metric(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name}{labels}")


async def test_report_metrics_status_page_and_sla_rows_agree_on_a_dark_drop(
    env: Env,  # noqa: F811
    tmp_path: Path,
) -> None:
    settings = Settings.model_validate(
        {
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"},
            "cloud": {"project_id": "p"},
            "rooms": [{"id": ROOM, "output_url": RTMP, "stream_key": "key-1"}],
        }
    )
    # the supervisor's store: the SLA rows land next to its audit log
    daemon = Daemon(settings, clock=env.clock, store=env.store)
    sup = env.start_supervisor()
    sup.add_listener(daemon.fanout)  # what Daemon.run wires up
    heard: list[RoomState] = []  # what the daemon's listener has been told, in order
    sup.add_listener(lambda t: heard.append(t.after.state))
    daemon.attach_rooms(sup)
    job = await go_live(env)
    await sup.poll_once()
    await env.advance(30)
    await sup.poll_once()  # a whole interval of pushing: the stall check is armed
    await env.admin("POST", "/_emulator/callbacks", {"drop_rate": 1.0})  # every callback lost
    stopped: datetime = env.clock.now()
    await env.admin("POST", f"/_emulator/jobs/{job}/rtmp", {"state": "DISCONNECTED"})
    await env.advance(20)
    assert sup.snapshot(ROOM).state is S.LIVE  # no callback: the daemon does not know yet
    await sup.poll_once()  # the read shows stream_duration 20 s behind: repair at once
    await env.until(lambda: sup.snapshot(ROOM).state is not S.LIVE, "drop found")
    for _ in range(10):  # the refresh reconnects; a read confirms it (its callback is lost)
        if sup.snapshot(ROOM).state is S.LIVE:
            break
        await env.advance(2)
        with contextlib.suppress(AssertionError):
            await env.state(S.LIVE, timeout_s=0.5)
    back = sup.snapshot(ROOM).since
    assert sup.snapshot(ROOM).state is S.LIVE and back is not None
    outage = (back - stopped).total_seconds()
    # listeners hear of a change once it is durable, which may be after the snapshot shows it
    await env.until(lambda: heard[-1:] == [S.LIVE], "the daemon heard of LIVE again")
    assert outage > 20  # the 20 undetected seconds are part of it
    await env.advance(60)
    await daemon.sla_book.flush()

    # the SLA rows, and `liveorch report` reading them
    rows = await env.store.sla(stopped.date(), ROOM)
    assert len(rows) == 1
    row = rows[0]
    assert (row.drops, row.recoveries) == (1, 1)
    assert abs(row.recovery_s_total - outage) < 1e-6
    went_live = row.scheduled_s - row.live_s - outage  # STARTING → LIVE at the start
    assert 0 <= went_live < 5
    (report,) = rows_to_dicts(rows)
    assert report["mean_recovery_s"] == report["max_recovery_s"] == round(outage, 1)
    assert report["live_s"] == round(row.live_s, 1)

    # /metrics (served by the daemon's own ops routes)
    app = Starlette(routes=daemon.ops_routes())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ops"
    ) as ops:
        text = (await ops.get("/metrics")).text
        room = (await ops.get(f"/rooms/{ROOM}")).json()
    assert _metric(text, "liveorch_recoveries_total", rung="refresh", outcome="ok") == 1
    assert _metric(text, "liveorch_recovery_duration_seconds_count", rung="refresh") == 1
    assert (
        abs(_metric(text, "liveorch_recovery_duration_seconds_sum", rung="refresh") - outage) < 1e-6
    )
    live_metric = _metric(text, "liveorch_sla_live_seconds_total", room=ROOM)
    assert abs(live_metric - row.live_s) < 1e-6
    assert (
        abs(_metric(text, "liveorch_sla_scheduled_seconds_total", room=ROOM) - row.scheduled_s)
        < 1e-6
    )

    # the status page: its timeline's fault segment is the outage, from the stop to LIVE again
    faults = [s for s in room["timeline"]["segments"] if s["kind"] == "fault"]
    assert [(s["start"], s["end"]) for s in faults] == [(stopped.isoformat(), back.isoformat())]
    drop = [t for t in room["transitions"] if t["from"] == "LIVE"]
    assert [t["detail"].get("drop_since") for t in drop] == [stopped.isoformat()]
    assert room["sla_today"]["live_s"] == row.live_s
    assert room["sla_today"]["scheduled_s"] == row.scheduled_s
