"""Instances joining and leaving a running fleet: real daemons on one PostgreSQL, the emulator.

A newcomer takes its share of rooms by adoption (the old owner stands down first, then
releases the lease), and an instance stopped with SIGTERM releases its leases before it exits,
so the survivors take its rooms at their next lease tick instead of after the TTL. All along,
the emulator is sampled: no room ever has two running jobs, no job is started, stopped or
refreshed, and every job's push stays connected from the moment it first connected (a stream
interruption would show as another state or a new ``connected_since``). (SIGKILL and SIGSTOP:
``test_multi_failover.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import httpx
import pytest

from tests.multi.conftest import ROOMS6
from tests.support.multi import Cluster, DuplicateWatch, Emulator

pytestmark = pytest.mark.timeout(120)


class LinkWatch:
    """Samples every running job's link: any state but CONNECTED, or a new ``connected_since``
    for a job already seen connected, is an interruption."""

    def __init__(self, emu: Emulator) -> None:
        self._emu = emu
        self.samples = 0
        self.since: dict[str, Any] = {}  # job → connected_since first seen
        self.interruptions: list[tuple[str, str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(httpx.TransportError):
                for j in await self._emu.jobs():
                    if j["state"] not in ("WAITING", "PROCESSING"):
                        continue
                    job, since = j["job_id"], j["connected_since"]
                    if j["rtmp_state"] != "CONNECTED" or self.since.get(job, since) != since:
                        self.interruptions.append((job, j["rtmp_state"], since))
                    self.since.setdefault(job, since)
                self.samples += 1
            await asyncio.sleep(0.02)  # sampling period

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="link-watch")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _job_ids(split: dict[str, dict[str, str]]) -> dict[str, str]:
    return {room: job for rooms in split.values() for room, job in rooms.items()}


async def _stats(emu: Emulator) -> dict[str, Any]:
    r = await emu.http.get("/_emulator/stats")
    r.raise_for_status()
    stats: dict[str, Any] = r.json()
    return stats


async def test_join_takes_a_share_and_sigterm_hands_rooms_over_without_a_hiccup(
    cluster: Cluster,
) -> None:
    emu = cluster.emu
    assert emu is not None
    cluster.start_daemon("A")
    alone = await cluster.wait_split(["A"], per_instance=len(ROOMS6))
    jobs = _job_ids(alone)
    starts = await emu.starts()
    assert starts == len(ROOMS6)
    links = LinkWatch(emu)
    with DuplicateWatch(emu) as watch:
        links.start()
        try:
            # join: B takes half, by adoption
            cluster.start_daemon("B")
            joined = await cluster.wait_split(["A", "B"], per_instance=3)
            assert _job_ids(joined) == jobs

            # leave: B is stopped (SIGTERM) and hands its rooms over before it exits
            b_proc = cluster.daemons["B"][0]
            b_rooms = sorted(joined["B"])
            b_proc.signal(signal.SIGTERM)
            rc = await asyncio.to_thread(b_proc.popen.wait, 30)
            assert rc == 0, cluster.diag()
            leases = await cluster.leases()
            assert all(leases[r][0] != "B" for r in b_rooms), leases  # released, not expiring
            back = await cluster.wait_split(["A"], per_instance=len(ROOMS6))
            assert _job_ids(back) == jobs
        finally:
            links.stop()
    stats = await _stats(emu)
    assert stats["starts"] == starts
    assert stats["calls"].get("stop", 0) == 0
    assert stats["commands"] == []  # no refresh, no exit-config change: nothing was repaired
    assert watch.samples > 0 and not watch.duplicates, dict(watch.duplicates)
    assert links.samples > 0 and not links.interruptions, links.interruptions
    assert set(links.since) == set(jobs.values())

    a_proc = cluster.daemons["A"][0]
    rebalanced = {r for e in a_proc.events("rooms_rebalance") for r in e["release"]}
    assert rebalanced == set(b_rooms), a_proc.events("rooms_rebalance")
    b_gained = {r for e in b_proc.events("rooms_lease_gained") for r in e["rooms"]}
    assert b_gained == set(b_rooms)
    a_regained = [e for e in a_proc.events("rooms_lease_gained") if set(e["rooms"]) & set(b_rooms)]
    assert {r for e in a_regained for r in e["rooms"]} >= set(b_rooms)
    assert b_proc.events("daemon_stopped") and not b_proc.events("shutdown_step_failed")


async def test_a_rejoining_instance_gets_its_share_back_after_a_sigkill(cluster: Cluster) -> None:
    """Kill, survive, then a fresh instance joins: rooms move twice, always by adoption."""
    emu = cluster.emu
    assert emu is not None
    with DuplicateWatch(emu) as watch:
        cluster.start_daemon("A")
        cluster.start_daemon("B")
        split = await cluster.wait_split(["A", "B"], per_instance=3)
        jobs = _job_ids(split)
        starts = await emu.starts()
        cluster.daemons["B"][0].signal(signal.SIGKILL)
        survived = await cluster.wait_split(["A"], per_instance=len(ROOMS6))
        assert _job_ids(survived) == jobs
        cluster.start_daemon("C")
        rejoined = await cluster.wait_split(["A", "C"], per_instance=3)
        assert _job_ids(rejoined) == jobs
        assert await emu.starts() == starts
    assert watch.samples > 0 and not watch.duplicates, dict(watch.duplicates)
    stats = await _stats(emu)
    assert stats["calls"].get("stop", 0) == 0
