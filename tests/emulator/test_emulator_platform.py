"""Platform faults: the push target fails (outage, revoked key, flapping, slow), not the link.

Driven through the admin API over real HTTP on a manual clock: a refresh to the same failing
ingest does not cure these, a backup output on another ingest or a new key does.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.service import EmulatorService, Job
from tests.support.emulator import jobs_path

INGEST = "push.example.com"  # the seeded rooms push to rtmp://push.example.com/live
BACKUP = "rtmp://backup.example.net/live"


class Transitions:
    def __init__(self, service: EmulatorService) -> None:
        self.states: list[str] = []
        service.rtmp_listeners.append(lambda job, state: self.states.append(state))


async def _live(client: httpx.AsyncClient, service: EmulatorService) -> str:
    job_id = str((await client.post(jobs_path(), json={})).json()["job_id"])
    await service.advance(3)
    assert service.jobs[job_id].rtmp_state == "CONNECTED"
    return job_id


async def _refresh(client: httpx.AsyncClient, job_id: str, url: str, key: str) -> None:
    resp = await client.post(
        f"{jobs_path()}/{job_id}/command",
        json={
            "command": "REFRESH_OUTPUT_URL",
            "params": {"output_urls": [url], "stream_keys": [key]},
        },
    )
    assert resp.status_code == 200, resp.text


def _job(service: EmulatorService, job_id: str) -> Job:
    return service.jobs[job_id]


async def test_ingest_outage_survives_refresh_backup_works_and_it_returns(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = await _live(client, service)
    resp = await admin.post(f"/ingests/{INGEST}/faults", json={"kind": "outage", "for_s": 60})
    assert resp.status_code == 200, resp.text
    assert _job(service, job_id).rtmp_state == "DISCONNECTED"
    await _refresh(client, job_id, "rtmp://push.example.com/live", "key-room-1")
    await service.advance(20)
    assert _job(service, job_id).rtmp_state == "RECONNECTING"  # the same ingest: still down
    await _refresh(client, job_id, BACKUP, "key-room-1")
    await service.advance(1)
    assert _job(service, job_id).rtmp_state == "CONNECTED"  # the backup ingest works

    await _refresh(client, job_id, "rtmp://push.example.com/live", "key-room-1")
    await service.advance(30)
    assert _job(service, job_id).rtmp_state == "RECONNECTING"
    await service.advance(20)  # the outage (60 s) is over: the next reconnect attempt connects
    assert _job(service, job_id).rtmp_state == "CONNECTED"
    assert _job(service, job_id).state == "PROCESSING"


async def test_revoked_key_refused_until_a_new_key(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = await _live(client, service)
    assert (await admin.post("/stream-keys/revoke", json={"stream_key": "key-room-1"})).is_success
    assert _job(service, job_id).rtmp_state == "DISCONNECTED"
    platform = (await admin.get("/platform")).json()
    assert "key-room-1" not in str(platform) and len(platform["revoked_keys"]) == 1
    await _refresh(client, job_id, BACKUP, "key-room-1")
    await service.advance(30)
    assert _job(service, job_id).rtmp_state == "RECONNECTING"  # refused on every ingest
    await _refresh(client, job_id, "rtmp://push.example.com/live", "key-room-1-new")
    await service.advance(1)
    assert _job(service, job_id).rtmp_state == "CONNECTED"
    restored = await admin.post("/stream-keys/restore", json={"stream_key": "key-room-1"})
    assert restored.json() == {"restored": True}


async def test_flapping_ingest_connects_then_drops_until_it_settles(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = await _live(client, service)
    seen = Transitions(service)
    await admin.post(f"/ingests/{INGEST}/faults", json={"kind": "flap", "up_s": 3, "for_s": 40})
    for _ in range(60):
        await service.advance(1)
    drops = seen.states.count("DISCONNECTED")
    # up 3 s, down until the next attempt (5 s) + connecting (1 s): about every 9 s for 40 s
    assert 4 <= drops <= 6
    assert seen.states.count("CONNECTED") == drops
    assert _job(service, job_id).rtmp_state == "CONNECTED"  # settled after the flap ended
    before = len(seen.states)
    await service.advance(60)
    assert len(seen.states) == before


async def test_slow_ingest_connects_late(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = await _live(client, service)
    await admin.post(f"/ingests/{INGEST}/faults", json={"kind": "slow", "delay_s": 20})
    await _refresh(client, job_id, "rtmp://push.example.com/live", "key-room-1")
    await service.advance(15)
    assert _job(service, job_id).rtmp_state == "CONNECTING"
    await service.advance(6)
    assert _job(service, job_id).rtmp_state == "CONNECTED"
    cleared = await admin.delete(f"/ingests/{INGEST}/faults")
    assert cleared.json() == {"cleared": 1}


async def test_platform_admin_refuses_bad_input_and_changes_nothing(
    admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    bad: list[tuple[str, dict[str, Any]]] = [
        (f"/ingests/{INGEST}/faults", {"kind": "meteor"}),
        (f"/ingests/{INGEST}/faults", {"kind": "flap"}),
        (f"/ingests/{INGEST}/faults", {"kind": "slow", "delay_s": -1}),
        (f"/ingests/{INGEST}/faults", {"kind": "outage", "for_s": "long"}),
        ("/stream-keys/revoke", {"stream_key": ""}),
    ]
    for path, body in bad:
        resp = await admin.post(path, json=body)
        assert resp.status_code == 400, (path, body, resp.text)
    assert (await admin.post("/stream-keys/forget", json={"stream_key": "k"})).status_code == 404
    assert (await admin.get("/platform")).json() == {"ingests": {}, "revoked_keys": []}


async def test_an_outage_span_shrinks_with_the_time_scale() -> None:
    """Under a real clock ``now()`` is wall-clock and only waits shrink: a 60 s outage at
    ``--time-scale 10`` must end 6 wall seconds later, like the reconnects it is measured by."""
    service = EmulatorService("p" * 32, {"AK": "SK"}, time_scale=10.0)
    fault = service.ingest_fault(INGEST, "outage", for_s=60.0)
    assert fault["until"] - fault["since"] == pytest.approx(6.0)
    manual = EmulatorService("p" * 32, {"AK": "SK"}, clock=ManualClock())
    fault = manual.ingest_fault(INGEST, "outage", for_s=60.0)
    assert fault["until"] - fault["since"] == pytest.approx(60.0)
