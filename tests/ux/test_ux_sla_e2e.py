"""SLA end to end: real daemon + emulator on a manual clock → store, /metrics, /rooms, report.

Two rooms go LIVE at T0; ``ux-a`` loses its link at T0+100 s and the ladder repairs it when the
grace period ends (T0+110 s); at T0+160 s its order goes OFF. ``ux-b`` stays up. Time moves only
when the test advances the daemon's clock, so the expected seconds are exact. They are split by
UTC day with an independent interval computation (a run near midnight crosses it; the
accumulator's own midnight split is proven in tests/foundation/test_sla_alerts.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from orchestrator.rooms.model import RoomState
from orchestrator.store.sql import SqlStore
from tests.support.ux import per_day, running_stack

pytestmark = pytest.mark.e2e


async def _report(store_url: str, fmt: str, *extra: str) -> str:
    """``liveorch report`` as an operator runs it: a separate process, stdout only."""
    return await _cli("report", "--since", "7d", "--store", store_url, "--format", fmt, *extra)


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_sla_seconds_drops_and_recovery_per_room_and_day(tmp_path: Path) -> None:
    async with running_stack(tmp_path, rooms=("ux-a", "ux-b")) as st:
        t0 = st.clock.now()
        await st.wait_state("ux-a", RoomState.LIVE)
        await st.wait_state("ux-b", RoomState.LIVE)
        st.clock.advance(100)
        await st.drop_link("ux-a")
        await st.wait_state("ux-a", RoomState.DEGRADED)
        st.clock.advance(10)  # the grace period ends: refresh, and the link is back
        await st.wait_state("ux-a", RoomState.LIVE)
        assert st.seen.states("ux-a")[-3:] == ["DEGRADED", "REFRESHING", "LIVE"]
        st.clock.advance(50)
        await st.daemon.sla_book.flush()

        async with httpx.AsyncClient(base_url=st.ops_url) as ops:
            metrics = (await ops.get("/metrics")).text
            rooms = (await ops.get("/rooms")).json()["rooms"]
        for room, kind, value in (
            ("ux-a", "live", "150.0"),
            ("ux-a", "scheduled", "160.0"),
            ("ux-b", "live", "160.0"),
            ("ux-b", "scheduled", "160.0"),
        ):
            line = f'liveorch_sla_{kind}_seconds_total{{room="{room}"}} {value}'
            assert re.search("^" + re.escape(line) + "$", metrics, re.M), line
        today = st.clock.now().date()
        live_a = per_day(t0, [(0, 100), (110, 160)])
        sched_a = per_day(t0, [(0, 160)])
        sla_today = {r["room_id"]: r["sla_today"] for r in rooms}
        assert sla_today["ux-a"] == {
            "scheduled_s": sched_a[today],
            "live_s": live_a[today],
            "percent": round(100 * live_a[today] / sched_a[today], 2),
        }
        assert sla_today["ux-b"]["percent"] == 100.0

        status = await _cli("status", "--url", st.ops_url)
        assert [ln.split()[:3] for ln in status.splitlines()[1:]] == [
            ["ux-a", "LIVE", "ON"],
            ["ux-b", "LIVE", "ON"],
        ]

        # order OFF: time no longer counts as scheduled, and stopping is not a drop
        assert st.daemon.control is not None
        await st.daemon.control.stop("ux-a", cause="test")
        await st.wait_state("ux-a", RoomState.IDLE)
        st.clock.advance(40)
        await st.daemon.sla_book.flush()

        store = SqlStore(st.store_url)
        await store.open()
        try:
            rows = {(r.room_id, r.day): r for r in await store.sla(t0.date())}
        finally:
            await store.close()
        drop_day = (t0 + timedelta(seconds=100)).date()
        fix_day = (t0 + timedelta(seconds=110)).date()
        sched_b = per_day(t0, [(0, 200)])
        assert {d for r, d in rows if r == "ux-a"} == set(sched_a)
        for day, secs in sched_a.items():
            row = rows["ux-a", day]
            assert (row.scheduled_s, row.live_s) == (secs, live_a.get(day, 0.0))
            assert row.drops == (1 if day == drop_day else 0)
            assert row.recoveries == (1 if day == fix_day else 0)
        assert rows["ux-a", fix_day].recovery_s_total == 10.0
        assert rows["ux-a", fix_day].recovery_s_max == 10.0
        for day, secs in sched_b.items():
            row = rows["ux-b", day]
            assert (row.scheduled_s, row.live_s, row.drops, row.recoveries) == (secs, secs, 0, 0)

        data = json.loads(await _report(st.store_url, "json"))
        assert len(data) == len(sched_a) + len(sched_b)
        fix_json = next(r for r in data if r["room_id"] == "ux-a" and r["day"] == str(fix_day))
        assert fix_json["recoveries"] == 1
        assert fix_json["mean_recovery_s"] == fix_json["max_recovery_s"] == 10.0
        if len(sched_a) == 1:  # the usual case: the run did not cross midnight
            assert fix_json == {
                "room_id": "ux-a",
                "day": today.isoformat(),
                "scheduled_s": 160.0,
                "live_s": 150.0,
                "sla_pct": 93.75,
                "drops": 1,
                "recoveries": 1,
                "mean_recovery_s": 10.0,
                "max_recovery_s": 10.0,
            }

        text = await _report(st.store_url, "csv")
        parsed = list(csv.DictReader(io.StringIO(text)))
        assert [(r["room_id"], r["day"]) for r in parsed] == [
            (r["room_id"], r["day"]) for r in data
        ]
        fix_csv = next(r for r in parsed if r["room_id"] == "ux-a" and r["day"] == str(fix_day))
        assert (fix_csv["recoveries"], fix_csv["mean_recovery_s"]) == ("1", "10.0")

        table = await _report(st.store_url, "table", "--room", "ux-b")
        lines = table.strip().splitlines()
        assert lines[0].split() == [
            "room_id",
            "day",
            "scheduled_s",
            "live_s",
            "sla_pct",
            "drops",
            "recoveries",
            "mean_recovery_s",
            "max_recovery_s",
        ]
        assert [ln.split()[0] for ln in lines[1:]] == ["ux-b"] * len(sched_b)
        assert lines[-1].split()[4:] == ["100.0", "0", "0", "-", "-"]
