"""Callbacks to any instance: real daemons on one PostgreSQL, the emulator over HTTP.

A signed RTMP ``DISCONNECTED`` callback is POSTed to an instance that does not own the job's
room; the owner must act on it (``REFRESH_OUTPUT_URL`` reaches the emulator for that job,
exactly once), also for rooms that just moved because their owner was SIGKILLed.

Why the callback alone can cause the repair here: the emulator's own callbacks are dropped
(``drop_rate`` 1) and the rooms are read only every 60 s (polls, the stale watchdog; no
push-stall reads), longer than any wait of these tests. Without the hand-off nothing would
notice the forced drop in time, so a missing hand-off fails on a timeout and a double one on
the counts. Likewise the refresh is confirmed by a ``CONNECTED`` callback, also POSTed to a
non-owner (the refresh waits 60 s for proof before trying again).
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.multi import Cluster, DuplicateWatch, Emulator, eventually

pytestmark = pytest.mark.timeout(120)

SLOW_READS_S = 60.0


def _cluster(tmp_path: Path, rooms: list[str]) -> Cluster:
    c = Cluster(tmp_path, rooms)
    c.poll_s = SLOW_READS_S
    c.stale_after_s = SLOW_READS_S
    c.recovery_extra = (
        f"\npoll_min_interval_s = {SLOW_READS_S}\nstall_after_s = 0"
        f"\nrefresh_confirm_s = {SLOW_READS_S}"
    )
    return c


@pytest.fixture
async def cluster4(
    tmp_path: Path, require_service: Callable[[str], None]
) -> AsyncIterator[Cluster]:
    require_service("postgres")
    c = _cluster(tmp_path, [f"room-{i}" for i in range(1, 5)])
    try:
        await c.start_emulator()
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def cluster6(
    tmp_path: Path, require_service: Callable[[str], None]
) -> AsyncIterator[Cluster]:
    require_service("postgres")
    c = _cluster(tmp_path, [f"room-{i}" for i in range(1, 7)])
    try:
        await c.start_emulator()
        yield c
    finally:
        await c.aclose()


async def _stats(emu: Emulator) -> dict[str, Any]:
    r = await emu.http.get("/_emulator/stats")
    r.raise_for_status()
    stats: dict[str, Any] = r.json()
    return stats


async def _refreshes(emu: Emulator) -> list[str]:
    """Job ids of the REFRESH_OUTPUT_URL commands the emulator received, in order."""
    return [
        c["job_id"] for c in (await _stats(emu))["commands"] if c["command"] == "REFRESH_OUTPUT_URL"
    ]


async def _drop_link(emu: Emulator, job: str) -> None:
    """The job's push goes down and stays down until a REFRESH_OUTPUT_URL cures it."""
    r = await emu.http.post(f"/_emulator/jobs/{job}/rtmp", json={"state": "DISCONNECTED"})
    r.raise_for_status()


async def _lose_emulator_callbacks(emu: Emulator) -> None:
    r = await emu.http.post("/_emulator/callbacks", json={"drop_rate": 1.0})
    r.raise_for_status()


def _handed(cluster: Cluster, job: str) -> dict[str, list[dict[str, Any]]]:
    """instance → its ``callback_handed_over`` log records for ``job``."""
    return {
        name: [e for e in proc.events("callback_handed_over") if e.get("job_id") == job]
        for name, (proc, _port) in cluster.daemons.items()
    }


async def _refreshed_once(cluster: Cluster, job: str) -> None:
    emu = cluster.emu
    assert emu is not None

    async def refreshed() -> list[str] | None:
        jobs = await _refreshes(emu)
        return jobs if job in jobs else None

    await eventually(refreshed, what=f"REFRESH_OUTPUT_URL for {job}", diag=cluster.diag)


async def test_a_callback_to_a_non_owner_is_acted_on_by_its_owner_once(cluster4: Cluster) -> None:
    cluster = cluster4
    emu = cluster.emu
    assert emu is not None
    with DuplicateWatch(emu) as watch:
        cluster.start_daemon("A")
        cluster.start_daemon("B")
        split = await cluster.wait_split(["A", "B"], per_instance=2)
        starts = await emu.starts()
        await _lose_emulator_callbacks(emu)
        room, job = sorted(split["A"].items())[0]
        await _drop_link(emu, job)

        signed_at = time.time()
        first = await cluster.post_callback(
            "B", room=room, job=job, state="DISCONNECTED", at=signed_at
        )
        assert first.status_code == 200, first.text
        assert first.json() == {"status": "ok"}
        # the same signed request again (a balancer's retry): one inbox row, not two
        again = await cluster.post_callback(
            "B", room=room, job=job, state="DISCONNECTED", at=signed_at
        )
        assert again.status_code == 200

        await _refreshed_once(cluster, job)
        cured = await cluster.post_callback("B", room=room, job=job, state="CONNECTED")
        assert cured.status_code == 200, cured.text
        back = await cluster.wait_split(["A", "B"], per_instance=2)
        assert back == split  # same owners, same jobs: repaired, not restarted
        assert await _refreshes(emu) == [job]
        assert await emu.starts() == starts
    assert watch.samples > 0 and not watch.duplicates, dict(watch.duplicates)
    handed = _handed(cluster, job)
    causes = [(e["state"], e["cause"]) for e in handed["A"]]
    assert causes == [("DISCONNECTED", "signal"), ("CONNECTED", "signal")], handed
    assert handed["B"] == []  # the receiver never posts to a room it does not own
    left = [e for e in cluster.daemons["B"][0].events("callback_for_owner") if e["job_id"] == job]
    states = [e["dedupe_key"].split("|")[3].split("@")[0] for e in left]  # v1|job|type|state@..
    assert states == ["DISCONNECTED", "CONNECTED"], left
    accepted = cluster.daemons["B"][0].events("callback_accepted")
    assert [e["for_owner"] for e in accepted if e["job_id"] == job] == [True, True]
    assert len(cluster.daemons["B"][0].events("callback_duplicate")) == 1


async def test_callbacks_reach_the_new_owner_after_a_sigkill(cluster6: Cluster) -> None:
    """C owns two rooms and is SIGKILLed. A callback for the first is POSTed at once, while
    C's lease still holds it (nobody may act on it yet): the instance that gains the room
    claims it. A callback for the second is POSTed once the room has moved, to the survivor
    that did not get it."""
    cluster = cluster6
    emu = cluster.emu
    assert emu is not None
    with DuplicateWatch(emu) as watch:
        for name in ("A", "B", "C"):
            cluster.start_daemon(name)
        split = await cluster.wait_split(["A", "B", "C"], per_instance=2)
        starts = await emu.starts()
        await _lose_emulator_callbacks(emu)
        (room1, job1), (room2, job2) = sorted(split["C"].items())

        cluster.daemons["C"][0].signal(signal.SIGKILL)
        await _drop_link(emu, job1)
        early = await cluster.post_callback("A", room=room1, job=job1, state="DISCONNECTED")
        assert early.status_code == 200, early.text

        await _refreshed_once(cluster, job1)
        layout = await cluster.layout(["A", "B"])
        owner1 = "A" if room1 in layout["A"] else "B"
        owner2 = "A" if room2 in layout["A"] else "B"
        other1, other2 = ({"A": "B", "B": "A"}[o] for o in (owner1, owner2))
        cured1 = await cluster.post_callback(other1, room=room1, job=job1, state="CONNECTED")
        assert cured1.status_code == 200, cured1.text
        await cluster.wait_split(["A", "B"], per_instance=3)

        await _drop_link(emu, job2)
        late = await cluster.post_callback(other2, room=room2, job=job2, state="DISCONNECTED")
        assert late.status_code == 200, late.text
        await _refreshed_once(cluster, job2)
        cured2 = await cluster.post_callback(other2, room=room2, job=job2, state="CONNECTED")
        assert cured2.status_code == 200, cured2.text

        back = await cluster.wait_split(["A", "B"], per_instance=3)
        jobs = {r: j for rooms in split.values() for r, j in rooms.items()}
        assert {r: j for rooms in back.values() for r, j in rooms.items()} == jobs
        assert sorted(await _refreshes(emu)) == sorted([job1, job2])
        assert await emu.starts() == starts
    assert watch.samples > 0 and not watch.duplicates, dict(watch.duplicates)
    one = _handed(cluster, job1)
    assert [e["state"] for e in one[owner1]] == ["DISCONNECTED", "CONNECTED"], one
    assert one[other1] == [], one
    two = _handed(cluster, job2)
    causes = [(e["state"], e["cause"]) for e in two[owner2]]
    assert causes == [("DISCONNECTED", "signal"), ("CONNECTED", "signal")], two
    assert two[other2] == [], two
