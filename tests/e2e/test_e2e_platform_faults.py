"""The daemon's ladder against the emulator's platform faults (issue 23), end to end.

The daemon (``python -m orchestrator run``) and ``liveorch emulate --time-scale 10`` run as
processes; faults go in through the emulator's admin API. Every wait polls a condition (the
daemon's ``/rooms/{id}``, the emulator's ``/_emulator/*``, retained MQTT) with a deadline;
assertions are on order and counts, never on speed. Repair times are measured on the emulator's
clock (a fault's ``since``/``at`` against the job's ``connected_since``: wall-clock readings, as
only the emulator's waits shrink, so x ``TIME_SCALE`` = simulated seconds) and printed for the
record (``-s``), not asserted: under load they stretch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.e2e import (
    ALWAYS,
    RUNNING,
    TIME_SCALE,
    Daemon,
    Emulator,
    Stack,
    eventually,
    mqtt_watch,
)
from tests.support.e2e import room as make_room
from tests.support.mqtt import clear_retained

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PRIMARY = "push.example.com"
BACKUP_URL = "rtmp://backup.example.net/live"


def _room(room_id: str, *, backup: bool = False, **recovery: Any) -> dict[str, Any]:
    r = make_room(room_id, [ALWAYS])
    if backup:
        r["backup_outputs"] = [{"url": BACKUP_URL, "stream_key": f"e2e-backup-{uuid.uuid4().hex}"}]
    if recovery:
        r["recovery"] = recovery
    return r


async def _live(stack: Stack, room: dict[str, Any]) -> tuple[Emulator, Daemon, str]:
    """The setup every fault test shares: the emulator with this one room, the daemon on it,
    and the room's job once it is LIVE."""
    emu = await stack.emulator([room["id"]])
    stack.write(stack.config([room]))
    d = await stack.daemon()
    job_id = str((await d.wait_room(room["id"], "LIVE"))["job_id"])
    return emu, d, job_id


async def _post(emu: Emulator, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await emu.http.post(path, json=body)
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


async def _connected_since(emu: Emulator, job_id: str, after: float, stack: Stack) -> float:
    """When (simulated) the job's push connected again, at or after ``after``."""

    async def probe() -> float | None:
        job = await emu.job(job_id)
        since = job.get("connected_since")
        ok = job["rtmp_state"] == "CONNECTED" and since is not None and since >= after
        return float(since) if ok else None

    return await eventually(probe, what=f"job {job_id} connected after {after}", diag=stack.diag)


def _record(fault: str, wall_s: float) -> None:
    """The record (``pytest -s``): the daemon runs on wall time, the emulator's waits x10."""
    print(f"\nrepair [{fault}]: {wall_s:.2f} s wall = {wall_s * TIME_SCALE:.1f} simulated s")


def _refreshes(commands: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (c["params"]["output_urls"][0], c["params"]["stream_keys"][0])
        for c in commands
        if c["command"] == "REFRESH_OUTPUT_URL"
    ]


async def _commands(emu: Emulator, job_id: str) -> list[dict[str, Any]]:
    return [c for c in (await emu.stats())["commands"] if c["job_id"] == job_id]


# --- ingest outage ------------------------------------------------------------------------


async def test_ingest_outage_with_a_backup_output_is_repaired_through_the_backup(
    stack: Stack,
) -> None:
    primary = _room("rbk", backup=True, refresh_tries=1)
    emu, d, job_id = await _live(stack, primary)

    fault = await _post(emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "outage"})
    began = float(fault["fault"]["since"])

    async def on_backup() -> dict[str, Any] | None:
        job = await emu.job(job_id)
        return job if job["output_url"] == BACKUP_URL else None

    await eventually(on_backup, what="the job moved to the backup output", diag=stack.diag)
    connected = await _connected_since(emu, job_id, began, stack)
    await d.wait_room("rbk", "LIVE", job_id=job_id)
    _record("ingest outage, backup output", connected - began)

    urls = [url for url, _ in _refreshes(await _commands(emu, job_id))]
    # the read showed the ingest unreachable (error_info): the dead primary is not refreshed
    assert urls == [BACKUP_URL]
    assert (await emu.stats())["starts"] == 1  # the same job: no restart
    assert [j["job_id"] for j in await emu.running("rbk")] == [job_id]


async def test_ingest_outage_without_backup_is_live_again_once_the_ingest_returns(
    stack: Stack,
) -> None:
    emu, d, job_id = await _live(stack, _room("rnob"))

    fault = await _post(
        emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "outage", "for_s": 60}
    )
    returns = float(fault["fault"]["until"])
    await d.wait_room("rnob", "REFRESHING")  # the ladder works on it meanwhile
    connected = await _connected_since(emu, job_id, returns, stack)
    snap = await d.wait_room("rnob", "LIVE")
    _record("ingest outage, no backup (after the ingest returned)", connected - returns)

    assert snap["alert"] is None
    assert connected >= returns  # nothing could cure it before the ingest came back
    assert len(await emu.running("rnob")) == 1
    assert (await emu.stats())["starts"] <= 2  # at most the ladder's one restart


async def test_ingest_outage_without_backup_holds_the_restart_and_alerts(stack: Stack) -> None:
    """Every read says the ingest is unreachable and there is no other output: the exhausted
    ladder does not restart into the same outage; it keeps refreshing, says so at once (the
    ``unrecovered`` alert), and the same job is back on air when the ingest returns."""
    emu = await stack.emulator(["rhold"])
    # the ladder (1 s grace, 3 tries of 3 s) ends ~11 s wall into a 300 s (30 s wall) outage
    stack.write(stack.config([_room("rhold", ingest_wait_s=600.0)]))
    d = await stack.daemon()
    job_id = (await d.wait_room("rhold", "LIVE"))["job_id"]

    fault = await _post(
        emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "outage", "for_s": 300}
    )
    returns = float(fault["fault"]["until"])

    async def held() -> dict[str, Any] | None:
        r = await d.http.get("/rooms/rhold")
        snap: dict[str, Any] = r.json()
        return snap if snap["alert"] == "unrecovered" else None

    snap = await eventually(held, what="the unrecovered alert while held", diag=stack.diag)
    assert snap["state"] == "REFRESHING" and snap["job_id"] == job_id
    assert (snap["last_error"] or "").startswith("ingest unreachable")
    assert (await emu.stats())["starts"] == 1  # the ladder ended, and no restart followed

    connected = await _connected_since(emu, job_id, returns, stack)
    snap = await d.wait_room("rhold", "LIVE", job_id=job_id)
    _record("ingest outage 300 s, no backup, restart held (after the return)", connected - returns)
    assert snap["alert"] is None
    assert (await emu.stats())["starts"] == 1
    assert [j["job_id"] for j in await emu.running("rhold")] == [job_id]


# --- revoked stream key -------------------------------------------------------------------


async def test_revoked_key_with_a_backup_output_goes_straight_to_the_backup(stack: Stack) -> None:
    room = _room("rkb", backup=True)
    emu, d, job_id = await _live(stack, room)
    key, backup_key = room["stream_key"], room["backup_outputs"][0]["stream_key"]

    began = float((await _post(emu, "/_emulator/stream-keys/revoke", {"stream_key": key}))["at"])
    connected = await _connected_since(emu, job_id, began, stack)
    await d.wait_room("rkb", "LIVE", job_id=job_id)
    _record("revoked key, backup output", connected - began)

    # the read showed the key refused: the primary (same key) is not refreshed at all
    assert _refreshes(await _commands(emu, job_id)) == [(BACKUP_URL, backup_key)]
    assert (await emu.stats())["starts"] == 1


async def test_a_revoked_backup_key_goes_back_to_the_healthy_primary(stack: Stack) -> None:
    """On its backup after a primary outage that has ended, the backup's key is revoked: the
    ladder goes back to the primary (it used to skip "the primary" and quarantine)."""
    emu = await stack.emulator(["rbb"])
    cfg = stack.config([_room("rbb", backup=True)])
    stack.write(cfg)
    d = await stack.daemon()
    job_id = (await d.wait_room("rbb", "LIVE"))["job_id"]
    primary = cfg["rooms"][0]
    backup_key = primary["backup_outputs"][0]["stream_key"]

    fault = await _post(emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "outage"})
    await _connected_since(emu, job_id, float(fault["fault"]["since"]), stack)
    assert (await emu.job(job_id))["output_url"] == BACKUP_URL
    await d.wait_room("rbb", "LIVE", job_id=job_id)
    (await emu.http.delete(f"/_emulator/ingests/{PRIMARY}/faults")).raise_for_status()

    revoked = await _post(emu, "/_emulator/stream-keys/revoke", {"stream_key": backup_key})
    connected = await _connected_since(emu, job_id, float(revoked["at"]), stack)
    snap = await d.wait_room("rbb", "LIVE", job_id=job_id)
    _record("revoked backup key, back to the primary", connected - float(revoked["at"]))

    job = await emu.job(job_id)
    assert job["output_url"] == primary["output_url"] and job["stream_key"] == primary["stream_key"]
    assert snap["alert"] is None
    assert _refreshes(await _commands(emu, job_id))[-1] == (
        primary["output_url"],
        primary["stream_key"],
    )
    assert (await emu.stats())["starts"] == 1


async def test_revoked_key_without_backup_repaired_by_set_output_over_mqtt(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    emu = await stack.emulator(["rkm"])
    # a long grace: the operator's set_output comes well before the ladder could quarantine
    cfg = stack.config([_room("rkm", grace_s=30.0)], mqtt_prefix=prefix)
    stack.write(cfg)
    key = cfg["rooms"][0]["stream_key"]
    new_key = f"e2e-new-{uuid.uuid4().hex}"
    topics = {f"{prefix}/rooms/rkm/state"}
    try:
        d = await stack.daemon()
        job_id = (await d.wait_room("rkm", "LIVE"))["job_id"]
        async with mqtt_watch(prefix) as w:
            revoked = await _post(emu, "/_emulator/stream-keys/revoke", {"stream_key": key})
            began = float(revoked["at"])
            await w.state(
                "rkm",
                lambda s: (
                    s["state"] == "DEGRADED"
                    and (s.get("last_error") or "").startswith("stream key refused")
                ),
                what="DEGRADED, stream key refused, on MQTT",
            )
            reply = await w.command(
                "rkm",
                {"id": "e2e-set-1", "action": "set_output", "url": make_room("x")["output_url"],
                 "stream_key": new_key},
            )  # fmt: skip
            assert reply["status"] == "ok", reply
            connected = await _connected_since(emu, job_id, began, stack)
            await w.state("rkm", lambda s: s["state"] == "LIVE", what="LIVE again on MQTT")
            topics |= w.retained_topics()
        _record("revoked key, no backup, MQTT set_output", connected - began)

        job = await emu.job(job_id)
        assert job["stream_key"] == new_key and job["state"] == "PROCESSING"
        refreshes = _refreshes(await _commands(emu, job_id))
        assert [k for _, k in refreshes] == [new_key]  # at once with the new key, nothing before
        assert (await emu.stats())["starts"] == 1
        assert new_key not in d.proc.text() and key not in d.proc.text()  # keys never logged
    finally:
        await clear_retained(prefix, topics)


async def test_revoked_key_without_backup_quarantines_with_a_stream_key_refused_alert(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    emu = await stack.emulator(["rkq"])
    cfg = stack.config([_room("rkq")], mqtt_prefix=prefix)
    stack.write(cfg)
    key = cfg["rooms"][0]["stream_key"]
    topics = {f"{prefix}/rooms/rkq/state"}
    try:
        d = await stack.daemon()
        job_id = (await d.wait_room("rkq", "LIVE"))["job_id"]
        async with mqtt_watch(prefix) as w:
            await _post(emu, "/_emulator/stream-keys/revoke", {"stream_key": key})
            snap = await d.wait_room("rkq", "QUARANTINED")
            alert = await w.wait_for(
                lambda m: (
                    m.topic.value == f"{prefix}/rooms/rkq/events"
                    and b'"alert"' in bytes(m.payload)  # type: ignore[arg-type]
                    and b'"SET"' in bytes(m.payload)
                ),  # type: ignore[arg-type]
                what="the quarantine alert on MQTT",
            )
            topics |= w.retained_topics()
        body = bytes(alert.payload).decode()  # type: ignore[arg-type]
        assert '"kind": "quarantined"' in body or '"kind":"quarantined"' in body, body
        assert "stream key refused" in body and key not in body
        assert (snap["last_error"] or "").startswith("stream key refused")
        commands = [c["command"] for c in await _commands(emu, job_id)]
        assert commands == ["RESET_EXIT_CONFIG", "REFRESH_OUTPUT_URL"]  # one try, no more
        assert (await emu.stats())["starts"] == 1  # never restarted into the same refusal
        assert await emu.running("rkq") == []  # the broken job was stopped
        assert all(j["state"] not in RUNNING for j in await emu.room_jobs("rkq"))
    finally:
        await clear_retained(prefix, topics)


# --- flapping -----------------------------------------------------------------------------


async def test_flapping_ingest_causes_no_restart_storm(stack: Stack) -> None:
    # a grace shorter than the service's own reconnect (5 s simulated = 0.5 s): every drop
    # reaches the ladder, which must hold its backoff
    emu, d, job_id = await _live(stack, _room("rflap", grace_s=0.2))

    fault = await _post(
        emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "flap", "up_s": 3, "for_s": 90}
    )
    until = float(fault["fault"]["until"])

    async def over() -> bool | None:
        r = await emu.http.get("/_emulator/platform")
        r.raise_for_status()
        faults = r.json()["ingests"].get(PRIMARY, [])
        return True if faults and not any(f["active"] for f in faults) else None

    await eventually(over, what="the flapping to end", timeout=60.0, diag=stack.diag)
    connected = await _connected_since(emu, job_id, until, stack)
    await d.wait_room("rflap", "LIVE", job_id=job_id)
    _record("flapping ingest, settled after it ended", connected - until)

    transitions = (await d.room("rflap"))["transitions"]
    drops = [t for t in transitions if t["from"] == "LIVE" and t["to"] == "DEGRADED"]
    refreshes = _refreshes(await _commands(emu, job_id))
    assert len(drops) >= 5, transitions  # it did flap, and the daemon saw it
    assert len(refreshes) <= len(drops)  # at most one refresh per drop
    assert (await emu.stats())["starts"] == 1  # never restarted: no restart storm
    assert [j["job_id"] for j in await emu.running("rflap")] == [job_id]


# --- slow ingest --------------------------------------------------------------------------


async def test_a_slow_ingest_at_start_is_waited_for_not_restarted(stack: Stack) -> None:
    """The first connection takes 60 simulated seconds longer (6 s wall, inside the e2e
    config's start_confirm_s of 15 s): the room waits in STARTING and goes LIVE on its one job."""
    emu = await stack.emulator(["rslow"])
    fault = await _post(
        emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "slow", "delay_s": 60}
    )
    began = float(fault["fault"]["since"])
    stack.write(stack.config([_room("rslow")]))
    d = await stack.daemon()
    snap = await d.wait_room("rslow", "LIVE")
    job_id = snap["job_id"]
    connected = await _connected_since(emu, job_id, began, stack)
    _record("slow ingest at start (fault posted before the daemon started)", connected - began)
    assert connected - began >= 60 / TIME_SCALE  # the fault took effect (emulator's clock)

    transitions = (await d.room("rslow"))["transitions"]
    assert [t["to"] for t in transitions if t["to"] in ("RESTARTING", "QUARANTINED")] == []
    assert (await emu.stats())["starts"] == 1
    assert [j["job_id"] for j in await emu.running("rslow")] == [job_id]
    assert snap["alert"] is None


async def test_a_drop_on_a_slow_ingest_is_repaired_without_a_second_job(stack: Stack) -> None:
    """A drop while every connection to the ingest takes 20 simulated seconds longer (2 s wall,
    more than the 1 s grace): the ladder works on a link that reconnects slowly. Whatever rung
    cures it, the room ends LIVE with exactly one running job and no alert."""
    emu, d, job_id = await _live(stack, _room("rslow2"))

    await _post(emu, f"/_emulator/ingests/{PRIMARY}/faults", {"kind": "slow", "delay_s": 20})
    await _post(emu, f"/_emulator/jobs/{job_id}/rtmp", {"state": "DISCONNECTED", "hold_s": 0})

    async def dropped() -> bool | None:  # the transition, not the state: it may be brief
        ts = (await d.room("rslow2"))["transitions"]
        return True if any(t["from"] == "LIVE" and t["to"] == "DEGRADED" for t in ts) else None

    await eventually(dropped, what="the daemon saw the drop", diag=stack.diag)
    snap = await d.wait_room("rslow2", "LIVE")

    running = await emu.running("rslow2")
    assert [j["job_id"] for j in running] == [snap["job_id"]]  # never two jobs on one key
    assert snap["alert"] is None
    assert (await emu.stats())["starts"] <= 2  # at most the ladder's one restart
    if snap["job_id"] == job_id:
        assert (await emu.stats())["starts"] == 1
