"""Callbacks are hints (issue 20), against the real daemon over real HTTP.

The emulator and the daemon run as processes (see ``tests.support.e2e``); the test holds the
daemon's callback key, as anyone who captured one signed request effectively does (the
signature covers the path and the time, never the body), and sends signed callbacks whose body
it chose. Nothing waits a fixed time: conditions are polled through ``/rooms``, the emulator's
admin API and the daemon's JSON log, each with a deadline. No assertion is about wall-clock
durations; the "repaired within grace + 20 s" bound is proven in simulated time by
``tests/rooms/test_machine_hints.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchestrator.callbacks.verify import mss_signature
from tests.support.e2e import ALWAYS, Daemon, Emulator, Stack, eventually, room

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PATH = "/callbacks/metastudio"
ROOM = "hostile"


class Forger:
    """Signs callbacks with the daemon's key; the body is whatever the test says."""

    def __init__(self, d: Daemon, key: str) -> None:
        self.http = d.http
        self.key = key

    async def post(self, body: bytes, *, ahead_s: int = 0) -> httpx.Response:
        t = format(int(time.time()) + ahead_s, "x")
        headers = {
            "x-hw-mss-secret": mss_signature(self.key, PATH, t),
            "x-hw-mss-time": t,
            "content-type": "application/json",
        }
        return await self.http.post(PATH, content=body, headers=headers)

    async def rtmp(self, job: str, state: str, *, ahead_s: int = 0) -> httpx.Response:
        # a fresh output URL each time: the receiver suppresses a repeat of the last value
        # per (job, output) as a re-signed retry, so an attacker varies it
        message = {
            "room_id": ROOM, "job_id": job, "state": state,
            "output_url": f"rtmp://forged.example/{uuid.uuid4().hex[:8]}",
        }  # fmt: skip
        return await self.post(
            _body("RTMP_STREAM_STATE_CHANGE", json.dumps(message)), ahead_s=ahead_s
        )


def _body(event_type: str, message: str) -> bytes:
    return json.dumps({"event_type": event_type, "message": message}).encode()


def _events(d: Daemon, event: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in d.proc.log_events()
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
    ]


async def _live(stack: Stack) -> tuple[Emulator, Daemon, Forger, str]:
    """The room LIVE on its first job, read by a few polls (so reads can show its push)."""
    emu = await stack.emulator([ROOM])
    cfg = stack.config([room(ROOM, [ALWAYS])])
    stack.write(cfg)
    d = await stack.daemon()
    snap = await d.wait_room(ROOM, "LIVE")
    job = str(snap["job_id"])
    seen: set[str] = set()

    async def polled() -> bool | None:
        at = (await d.room(ROOM)).get("last_observed_at")
        if at:
            seen.add(at)
        return True if len(seen) >= 3 else None

    await eventually(polled, what="three reads of the live job", diag=stack.diag)
    return emu, d, Forger(d, cfg["callbacks"]["key"]), job


@contextlib.asynccontextmanager
async def forging(forger: Forger, job: str, state: str) -> AsyncIterator[list[int]]:
    """Send a forged ``state`` for ``job`` back to back (every 0.3 s) while the block runs."""
    statuses: list[int] = []

    async def loop() -> None:
        while True:
            statuses.append((await forger.rtmp(job, state)).status_code)
            await asyncio.sleep(0.3)  # the forger's pace, not a synchronisation

    task = asyncio.create_task(loop(), name="forger")
    try:
        yield statuses
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- no destructive action on a callback alone --------------------------------------------------


async def test_forged_end_leaves_a_healthy_job_running_and_never_quarantines(
    stack: Stack,
) -> None:
    emu, d, forger, job = await _live(stack)
    for i in range(5):  # five forged ENDs quarantined the room before
        r = await forger.rtmp(job, "END")
        assert r.status_code == 200, r.text

        async def handled(n: int = i + 1) -> bool | None:
            return True if len(_events(d, "callback_accepted", state="END")) >= n else None

        await eventually(handled, what=f"forged END {i + 1} accepted", diag=stack.diag)
        # the read that follows shows the job pushing: LIVE again on the same job
        await d.wait_room(ROOM, "LIVE", job_id=job)
    snap = await d.room(ROOM)
    assert snap["state"] == "LIVE" and snap["job_id"] == job
    assert snap["restart_failures"] == 0 and snap["alert"] is None
    assert [j["job_id"] for j in await emu.running(ROOM)] == [job]
    assert (await emu.job(job))["state"] == "PROCESSING"
    assert (await emu.stats())["starts"] == 1


async def test_forged_connected_cannot_hide_a_held_drop(stack: Stack) -> None:
    """The link really drops and stays down; forged CONNECTED callbacks arrive all the time.
    The daemon repairs the job (RESET_EXIT_CONFIG, REFRESH_OUTPUT_URL on the same job)."""
    emu, _d, forger, job = await _live(stack)
    async with forging(forger, job, "CONNECTED") as statuses:
        await eventually(lambda: _ready(statuses), what="forged CONNECTED accepted")
        await emu.drop(job, hold_s=3600)  # held: only a refresh brings it back

        async def refreshed() -> list[dict[str, Any]] | None:
            return (await emu.commands(job, "REFRESH_OUTPUT_URL")) or None

        await eventually(refreshed, what="the held drop refreshed", diag=stack.diag)
        forged = len(statuses)
    assert forged > 1 and set(statuses) == {200}
    assert (await emu.commands(job, "RESET_EXIT_CONFIG")) != []
    assert (await emu.stats())["starts"] == 1  # repaired, not restarted


async def _ready(statuses: list[int]) -> bool | None:
    return True if statuses else None


# --- time sanity -----------------------------------------------------------------------------


async def test_a_time_ahead_is_refused_and_a_forged_one_cannot_silence_genuine_callbacks(
    stack: Stack,
) -> None:
    emu, d, forger, job = await _live(stack)
    r = await forger.rtmp(job, "CONNECTED", ahead_s=120)  # inside tolerance_s, beyond the skew
    assert r.status_code == 401
    assert _events(d, "callback_rejected", reason="time_in_future")
    r = await forger.rtmp(job, "CONNECTED", ahead_s=25)  # within the skew: accepted...
    assert r.status_code == 200
    await emu.drop(job, hold_s=3600)  # ...but the genuine DISCONNECTED is not "stale"

    async def reported() -> bool | None:
        return True if _events(d, "callback_accepted", state="DISCONNECTED") else None

    await eventually(reported, what="the genuine DISCONNECTED accepted", diag=stack.diag)
    snap = await d.room(ROOM)
    if snap["state"] == "LIVE":  # the room's queue may not have run it yet
        await eventually(
            lambda: _left_live(d), what="the room leaving LIVE on the drop", diag=stack.diag
        )
    assert not _events(d, "callback_stale")


async def _left_live(d: Daemon) -> bool | None:
    return True if (await d.room(ROOM))["state"] != "LIVE" else None


# --- encoding -------------------------------------------------------------------------------


def _poisoned_state() -> bytes:
    # a JSON escape of a lone surrogate inside the double-encoded message: valid JSON, no UTF-8
    message = (
        '{"room_id": "hostile", "job_id": "j", "output_url": "rtmp://x/y", "state": "\\ud800"}'
    )
    return _body("RTMP_STREAM_STATE_CHANGE", message)


async def test_a_poisoned_callback_is_refused_alone_and_metrics_keep_answering(
    stack: Stack,
) -> None:
    _emu, d, forger, job = await _live(stack)

    async def genuine(i: int) -> int:
        message = {
            "room_id": ROOM, "job_id": job, "scene_script_name": "s",
            "shoot_script_sequence_no": str(i), "shoot_script_title": "t",
        }  # fmt: skip
        return (await forger.post(_body("SHOOT_SCRIPT_SWITCH", json.dumps(message)))).status_code

    async def poisoned() -> int:
        return (await forger.post(_poisoned_state())).status_code

    statuses = await asyncio.gather(poisoned(), *(genuine(i) for i in range(28)))
    assert statuses[0] == 400
    assert statuses[1:] == [200] * 28
    # a poisoned event type would have become a metric label
    r = await forger.post(b'{"event_type": "\\ud800", "message": "{}"}')
    assert r.status_code == 400
    for _ in range(2):
        m = await d.http.get("/metrics")
        assert m.status_code == 200 and "liveorch_callbacks_total" in m.text
    assert (await d.room(ROOM))["state"] == "LIVE"
