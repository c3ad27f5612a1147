"""The daemon as a service, end to end: real emulator and daemon processes (``python -m
orchestrator emulate`` / ``run``), the real mosquitto, signals, restarts and ``$NOTIFY_SOCKET``.

Each test starts its own emulator and daemon (a fresh store file, a free HTTP port, its own MQTT
prefix). Conditions are polled through the daemon's ``/rooms/{id}`` and the emulator's
``/_emulator/*`` admin API with a deadline; nothing waits a fixed time.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest

from tests.support.e2e import (
    ALWAYS,
    RUNNING,
    Emulator,
    Stack,
    eventually,
    inject_ghost_start,
    inject_outage,
    mqtt_watch,
    notify_socket,
    room,
    sampling,
)
from tests.support.mqtt import clear_retained

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _window(opens: datetime, hours: float = 1.0) -> dict[str, Any]:
    return {"start": opens.isoformat(), "end": (opens + timedelta(hours=hours)).isoformat()}


def _events(stack: Stack, name: str, event: str) -> list[dict[str, Any]]:
    proc = next(p for p in stack.procs.items if p.name == name)
    return [e for e in proc.log_events() if e.get("event") == event]


async def _command_sent(emu: Emulator, job_id: str, command: str, stack: Stack) -> None:
    async def probe() -> list[dict[str, Any]] | None:
        return (await emu.commands(job_id, command)) or None

    await eventually(probe, what=f"{command} on job {job_id}", diag=stack.diag)


# --- 1. schedule + retained MQTT state ------------------------------------------------------


async def test_rooms_go_live_on_schedule_and_state_is_retained_on_mqtt(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    emu = await stack.emulator(["r247", "rwin"])
    opens = datetime.now(UTC) + timedelta(seconds=8)
    stack.write(
        stack.config([room("r247", [ALWAYS]), room("rwin", [_window(opens)])], mqtt_prefix=prefix)
    )
    state_topics = {f"{prefix}/rooms/{r}/state" for r in ("r247", "rwin")}
    try:
        d = await stack.daemon()  # /readyz includes "MQTT connected"
        early = await d.wait_room("rwin", "IDLE")
        if datetime.now(UTC) < opens:  # only meaningful while the window is still ahead
            assert early["order"] == "OFF" and early["job_id"] is None
            assert await emu.room_jobs("rwin") == []

        r247 = await d.wait_room("r247", "LIVE")
        rwin = await d.wait_room("rwin", "LIVE")
        assert datetime.now(UTC) >= opens
        [win_job] = await emu.room_jobs("rwin")
        assert win_job["job_id"] == rwin["job_id"]
        assert datetime.fromisoformat(win_job["created_at"]) >= opens - timedelta(seconds=1)

        # a fresh subscriber gets the retained snapshots: LIVE with the jobs the emulator runs
        async with mqtt_watch(prefix) as w:
            for snap in (r247, rwin):
                topic = f"{prefix}/rooms/{snap['room_id']}/state"

                def retained_live(m: aiomqtt.Message, topic: str = topic) -> bool:
                    if m.topic.value != topic or not m.retain or not m.payload:
                        return False
                    body = json.loads(m.payload)
                    return bool(body["state"] == "LIVE")

                msg = await w.wait_for(retained_live, what=f"retained LIVE on {topic}")
                body = json.loads(msg.payload)
                assert body["job_id"] == snap["job_id"] and body["order"] == "ON"
            online = await w.wait_for(
                lambda m: m.topic.value == f"{prefix}/bridge/state" and m.retain,
                what="retained bridge/state",
            )
            assert online.payload == b"online"

            # the process dies without a word: the broker publishes the last will
            d.proc.send(signal.SIGKILL)
            await d.proc.wait(10)
            await w.wait_for(
                lambda m: m.topic.value == f"{prefix}/bridge/state" and m.payload == b"offline",
                what="LWT offline on bridge/state",
            )
            state_topics |= w.retained_topics()
    finally:
        await clear_retained(prefix, state_topics)


# --- 2. a held drop is repaired by REFRESH_OUTPUT_URL ----------------------------------------


async def test_held_drop_is_repaired_by_refresh_on_the_same_job(stack: Stack) -> None:
    emu = await stack.emulator(["r247"])
    stack.write(stack.config([room("r247", [ALWAYS])]))
    d = await stack.daemon()
    job_id = (await d.wait_room("r247", "LIVE"))["job_id"]

    async with sampling(emu) as sampler:
        await emu.drop(job_id, hold_s=600)  # the service's own reconnects fail for 10 minutes
        await _command_sent(emu, job_id, "REFRESH_OUTPUT_URL", stack)
        await d.wait_room("r247", "LIVE", job_id=job_id)

    job = await emu.job(job_id)
    assert job["state"] == "PROCESSING" and job["rtmp_state"] == "CONNECTED"
    assert [j["job_id"] for j in await emu.room_jobs("r247")] == [job_id]  # no restart
    transitions = (await d.room("r247"))["transitions"]
    assert {"DEGRADED", "REFRESHING"} <= {t["to"] for t in transitions}
    assert sampler.samples > 0 and sampler.violations == []


# --- 3. a failed job is restarted -----------------------------------------------------------


async def test_failed_job_is_replaced_by_a_new_one_never_two_running(stack: Stack) -> None:
    emu = await stack.emulator(["r247"])
    stack.write(stack.config([room("r247", [ALWAYS])]))
    d = await stack.daemon()
    old = (await d.wait_room("r247", "LIVE"))["job_id"]

    async with sampling(emu) as sampler:
        await emu.fail(old)
        new = (await d.wait_room("r247", "LIVE", not_job=old))["job_id"]

    assert (await emu.job(old))["state"] not in RUNNING
    assert [j["job_id"] for j in await emu.running("r247")] == [new]
    assert sampler.samples > 0 and sampler.violations == [], sampler.violations


# --- 4. SIGKILL + restart adopts the running job --------------------------------------------


async def test_sigkill_then_restart_adopts_the_running_job(stack: Stack) -> None:
    emu = await stack.emulator(["r247"])
    stack.write(stack.config([room("r247", [ALWAYS])]))
    first = await stack.daemon(name="daemon-1")
    job_id = (await first.wait_room("r247", "LIVE"))["job_id"]

    async with sampling(emu) as sampler:
        first.proc.send(signal.SIGKILL)
        assert await first.proc.wait(10) == -signal.SIGKILL
        second = await stack.daemon(name="daemon-2")
        await second.wait_room("r247", "LIVE", job_id=job_id)
        starts_after = (await emu.stats())["starts"]

    assert sampler.samples > 0 and sampler.violations == [], sampler.violations
    assert sampler.job_ids.get("r247") == {job_id}  # no job was ever created next to it
    assert starts_after == 1
    assert [j["state"] for j in await emu.room_jobs("r247")] == ["PROCESSING"]
    [adoption] = _events(stack, "daemon-2", "adoption_done")
    assert adoption["adopted_jobs"] == 1


async def test_sigkill_during_a_held_drop_then_restart_repairs_the_same_job(
    stack: Stack,
) -> None:
    """The crash comes at the worst moment: the link is down and nobody is repairing it."""
    emu = await stack.emulator(["r247"])
    cfg = stack.config([room("r247", [ALWAYS])])
    cfg["recovery"]["grace_s"] = 30.0  # the first daemon must not repair before it dies
    stack.write(cfg)
    first = await stack.daemon(name="daemon-1")
    job_id = (await first.wait_room("r247", "LIVE"))["job_id"]
    await emu.drop(job_id, hold_s=600)
    await first.wait_room("r247", "DEGRADED", job_id=job_id)
    first.proc.send(signal.SIGKILL)
    await first.proc.wait(10)

    cfg["recovery"]["grace_s"] = 1.0
    stack.write(cfg)
    async with sampling(emu) as sampler:
        second = await stack.daemon(name="daemon-2")
        await _command_sent(emu, job_id, "REFRESH_OUTPUT_URL", stack)
        await second.wait_room("r247", "LIVE", job_id=job_id)
    assert sampler.violations == [] and sampler.job_ids.get("r247") == {job_id}
    assert (await emu.job(job_id))["rtmp_state"] == "CONNECTED"


async def test_sigkill_while_a_start_answer_is_lost_then_restart_adopts_the_ghost_job(
    stack: Stack,
) -> None:
    """The start reached the service but its answer did not reach us, and then we died:
    the job exists, our store only knows an intent. The next daemon must adopt, not start."""
    emu = await stack.emulator(["r247"])
    await inject_ghost_start(emu)
    cfg = stack.config([room("r247", [ALWAYS])])
    cfg["cloud"]["read_timeout_s"] = 30.0  # the first daemon is still waiting when it dies
    stack.write(cfg)
    async with sampling(emu) as sampler:
        first = await stack.daemon(name="daemon-1")

        async def ghost() -> list[dict[str, Any]] | None:
            return (await emu.running("r247")) or None

        [job] = await eventually(ghost, what="the ghost job", diag=stack.diag)
        assert (await first.room("r247"))["job_id"] is None  # the answer never came
        first.proc.send(signal.SIGKILL)
        await first.proc.wait(10)

        second = await stack.daemon(name="daemon-2")
        await second.wait_room("r247", "LIVE", job_id=job["job_id"])
    assert sampler.violations == [], sampler.violations
    assert sampler.job_ids.get("r247") == {job["job_id"]}


# --- 5. SIGTERM: jobs keep streaming unless stop_jobs ---------------------------------------


@pytest.mark.parametrize(
    ("sig", "stop_jobs"),
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, False)],
    ids=["sigterm-leave-jobs", "sigterm-stop-jobs", "sigint-leave-jobs"],
)
async def test_sigterm_exits_zero_and_honours_stop_jobs(
    stack: Stack, sig: signal.Signals, stop_jobs: bool
) -> None:
    emu = await stack.emulator(["ra", "rb"])
    cfg = stack.config([room("ra", [ALWAYS]), room("rb", [ALWAYS])], stop_jobs=stop_jobs)
    stack.write(cfg)
    d = await stack.daemon()
    jobs = [(await d.wait_room(r, "LIVE"))["job_id"] for r in ("ra", "rb")]

    d.proc.send(sig)
    assert await d.proc.wait(cfg["shutdown"]["timeout_s"]) == 0

    states = {j: (await emu.job(j))["state"] for j in jobs}
    if stop_jobs:
        assert all(s not in RUNNING for s in states.values()), states
    else:
        assert set(states.values()) == {"PROCESSING"}, states
        assert (await emu.stats())["calls"].get("stop_smart_live_job", 0) == 0
    assert _events(stack, "daemon", "daemon_stopping")
    assert _events(stack, "daemon", "daemon_stopped")


# --- 6. SIGHUP applies a config change without touching unchanged rooms ---------------------


async def test_sighup_applies_config_without_touching_an_unchanged_room(stack: Stack) -> None:
    emu = await stack.emulator(["r247", "radd", "rwin", "rgone"])
    later = datetime.now(UTC) + timedelta(hours=2)
    rooms = [room("r247", [ALWAYS]), room("rwin", [_window(later)]), room("rgone", [ALWAYS])]
    cfg = stack.config(rooms)
    stack.write(cfg)
    async with notify_socket() as ns:
        d = await stack.daemon(env={"NOTIFY_SOCKET": ns.address})
        kept = (await d.wait_room("r247", "LIVE"))["job_id"]
        orphan = (await d.wait_room("rgone", "LIVE"))["job_id"]
        await d.wait_room("rwin", "IDLE")

        # add a room, remove one (reload.stop_removed = false: its job keeps streaming) and
        # move rwin's window so that it is open now
        now = datetime.now(UTC)
        cfg["rooms"] = [cfg["rooms"][0], room("radd", [ALWAYS]), room("rwin", [_window(now)])]
        cfg["rooms"][2]["stream_key"] = rooms[1]["stream_key"]
        stack.write(cfg)
        async with sampling(emu) as sampler:
            d.proc.send(signal.SIGHUP)
            await d.wait_room("radd", "LIVE")
            await d.wait_room("rwin", "LIVE")
            still = await d.room("r247")
        # systemd's reload protocol: RELOADING=1 (+ MONOTONIC_USEC), then READY=1 again
        await ns.wait_count("READY", 2)
    [reloading] = ns.with_key("RELOADING")
    assert reloading[1]["RELOADING"] == "1" and int(reloading[1]["MONOTONIC_USEC"]) > 0
    assert ns.with_key("READY")[1][0] > reloading[0]

    assert still["state"] == "LIVE" and still["job_id"] == kept
    assert [j["job_id"] for j in await emu.room_jobs("r247")] == [kept]
    assert (await emu.job(kept))["state"] == "PROCESSING"
    assert sampler.violations == [], sampler.violations
    [reloaded] = _events(stack, "daemon", "config_reloaded")
    assert reloaded["added"] == ["radd"] and reloaded["removed"] == ["rgone"]
    assert (await d.http.get("/rooms/rgone")).status_code == 404
    assert (await emu.job(orphan))["state"] == "PROCESSING"
    assert d.proc.returncode is None


# --- 7. sd_notify under a fake NOTIFY_SOCKET ------------------------------------------------


async def test_sd_notify_ready_after_adoption_watchdog_status_stopping(stack: Stack) -> None:
    emu = await stack.emulator(["r247"])
    stack.write(stack.config([room("r247", [ALWAYS])]))
    # a first daemon starts the job and leaves it running, so the second one has one to adopt
    first = await stack.daemon(name="daemon-1")
    job_id = (await first.wait_room("r247", "LIVE"))["job_id"]
    first.proc.send(signal.SIGTERM)
    assert await first.proc.wait(10) == 0

    async with notify_socket() as ns:
        env = {"NOTIFY_SOCKET": ns.address, "WATCHDOG_USEC": "1000000"}
        second = await stack.daemon(name="daemon-2", env=env, ready=False)
        await ns.wait_count("READY", 1)
        # READY is sent after adoption: its log line is already written when READY arrives
        [adoption] = _events(stack, "daemon-2", "adoption_done")
        assert adoption["adopted_jobs"] == 1
        await second.wait_room("r247", "LIVE", job_id=job_id)
        ready_at = ns.with_key("READY")[0][0]
        before = len([t for t, _ in ns.with_key("WATCHDOG") if t > ready_at])
        await ns.wait_count("WATCHDOG", len(ns.with_key("WATCHDOG")) + 3)  # keeps coming
        assert len([t for t, _ in ns.with_key("WATCHDOG") if t > ready_at]) >= before + 3
        assert all(m["WATCHDOG"] == "1" for _, m in ns.with_key("WATCHDOG"))
        assert ns.with_key("STATUS"), ns.messages
        assert all(m["STATUS"] for _, m in ns.with_key("STATUS"))

        second.proc.send(signal.SIGTERM)
        await ns.wait_count("STOPPING", 1)
        assert await second.proc.wait(10) == 0
    assert ns.with_key("READY")[0][1]["READY"] == "1"
    assert ns.with_key("STOPPING")[0][1]["STOPPING"] == "1"
    assert ns.with_key("STOPPING")[0][0] > ready_at
    assert (await emu.job(job_id))["state"] == "PROCESSING"


# --- 8. MQTT commands end to end ------------------------------------------------------------


async def test_mqtt_start_stop_with_response_topic_and_idempotent_replay(
    stack: Stack, prefix: str, require_service: Callable[[str], None]
) -> None:
    require_service("mosquitto")
    emu = await stack.emulator(["rcmd"])
    stack.write(stack.config([room("rcmd")], mqtt_prefix=prefix))  # no window: order OFF
    topics = {f"{prefix}/rooms/rcmd/state"}
    try:
        d = await stack.daemon()
        await d.wait_room("rcmd", "IDLE")
        async with mqtt_watch(prefix) as w:
            started = await w.command("rcmd", {"id": "e2e-start-1", "action": "start"})
            assert started["status"] == "ok" and started["id"] == "e2e-start-1", started
            live = await d.wait_room("rcmd", "LIVE")
            await w.state("rcmd", lambda s: s["state"] == "LIVE", what="LIVE on MQTT")
            job_id = live["job_id"]

            stopped = await w.command("rcmd", {"id": "e2e-stop-1", "action": "stop"})
            assert stopped["status"] == "ok", stopped
            await d.wait_room("rcmd", "IDLE")
            await w.state("rcmd", lambda s: s["state"] == "IDLE", what="IDLE on MQTT")
            assert (await emu.job(job_id))["state"] not in RUNNING

            # the same id again: the stored reply, and nothing is done a second time
            replay = await w.command("rcmd", {"id": "e2e-start-1", "action": "start"})
            assert replay == started
            after = await d.room("rcmd")

            # a clean stop says goodbye itself (retained offline; the LWT is not needed)
            d.proc.send(signal.SIGTERM)
            assert await d.proc.wait(10) == 0
            await w.wait_for(
                lambda m: m.topic.value == f"{prefix}/bridge/state" and m.payload == b"offline",
                what="offline on bridge/state after SIGTERM",
            )
            topics |= w.retained_topics()

        replayed = [
            e
            for e in _events(stack, "daemon", "mqtt_command_replayed")
            if e.get("command_id") == "e2e-start-1"
        ]
        acted = [
            e
            for e in _events(stack, "daemon", "mqtt_command_started")
            if e.get("command_id") == "e2e-start-1"
        ]
        assert len(replayed) == 1 and len(acted) == 1
        assert after["order"] == "OFF" and after["state"] == "IDLE"
        assert (await emu.stats())["starts"] == 1
    finally:
        await clear_retained(prefix, topics)


# --- 5b. SIGTERM while startup waits for an unreachable MetaStudio -------------------------


async def test_sigterm_during_a_boot_time_cloud_outage_exits_promptly(stack: Stack) -> None:
    """systemd sends SIGTERM whenever it likes, also while adoption retries a 5xx storm."""
    emu = await stack.emulator(["r247"])
    await inject_outage(emu)
    cfg = stack.config([room("r247", [ALWAYS])])
    stack.write(cfg)
    d = await stack.daemon(ready=False)

    async def retrying() -> bool | None:
        return True if _events(stack, "daemon", "adoption_retry") else None

    await eventually(retrying, what="adoption_retry in the daemon log", diag=stack.diag)
    d.proc.send(signal.SIGTERM)
    assert await d.proc.wait(cfg["shutdown"]["timeout_s"]) == 0


# --- 6b. SIGHUP with a broken config changes nothing --------------------------------------


async def test_sighup_with_a_broken_config_changes_nothing_and_ends_the_reload(
    stack: Stack,
) -> None:
    await stack.emulator(["r247"])
    cfg = stack.config([room("r247", [ALWAYS])])
    stack.write(cfg)
    async with notify_socket() as ns:
        d = await stack.daemon(env={"NOTIFY_SOCKET": ns.address})
        kept = (await d.wait_room("r247", "LIVE"))["job_id"]
        await ns.wait_count("READY", 1)

        stack.config_path.write_text("[cloud\nthis is not toml\n")
        d.proc.send(signal.SIGHUP)

        async def failed() -> bool | None:
            return True if _events(stack, "daemon", "reload_failed") else None

        await eventually(failed, what="reload_failed in the daemon log", diag=stack.diag)
        # a reload that began with RELOADING=1 must end with READY=1, or systemd shows the
        # unit "reloading" until its timeout
        await ns.wait_count("READY", 2, timeout=10)
        assert d.proc.returncode is None
        snap = await d.room("r247")
        assert snap["state"] == "LIVE" and snap["job_id"] == kept

        # the next good config is applied as usual
        cfg["rooms"][0]["name"] = "renamed"
        stack.write(cfg)
        d.proc.send(signal.SIGHUP)
        await ns.wait_count("READY", 3)

        async def reloaded() -> list[dict[str, Any]] | None:
            return _events(stack, "daemon", "config_reloaded") or None

        assert len(await eventually(reloaded, what="config_reloaded", diag=stack.diag)) == 1
    assert (await d.room("r247"))["job_id"] == kept
