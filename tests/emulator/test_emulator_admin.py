"""The /_emulator admin API: jobs, fail, faults (status, latency, ghost, storms), reset, clock."""

from __future__ import annotations

import httpx

from orchestrator.emulator.service import EmulatorService
from orchestrator.httpserver import ServedApp
from tests.support.emulator import PROJECT, SdkSigner, jobs_path


async def test_admin_jobs_and_fail(client: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    job_id = (await client.post(jobs_path(), json={})).json()["job_id"]
    jobs = (await admin.get("/jobs")).json()["jobs"]
    assert jobs == [
        {
            "room_id": "room-1",
            "job_id": job_id,
            "state": "WAITING",
            "rtmp_state": None,
            "output_url": "rtmp://push.example.com/live",
            "stream_key": "key-room-1",
            "created_at": jobs[0]["created_at"],
            "connected_since": None,  # not connected yet (WAITING)
        }
    ]
    resp = await admin.post(f"/jobs/{job_id}/fail")
    assert resp.json()["job"]["state"] == "FAILED"
    shown = (await client.get(f"{jobs_path()}/{job_id}")).json()
    assert shown["state"] == "FAILED"
    assert shown["error_info"]["error_code"] == "MSS.00000002"
    assert (await admin.post("/jobs/none/fail")).status_code == 404


async def test_faults_fail_next_n_calls(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    resp = await admin.post(
        "/faults",
        json={"operation": "list", "status": 500, "error_code": "MSS.00000002", "count": 2},
    )
    assert resp.status_code == 200
    url = f"/v1/{PROJECT}/smart-live-jobs"
    first, second, third = [await client.get(url) for _ in range(3)]
    assert (first.status_code, second.status_code, third.status_code) == (500, 500, 200)
    assert first.json()["error_code"] == "MSS.00000002"
    await admin.post("/faults", json={"operation": "any", "latency_ms": 5, "count": 1})
    assert (await client.get(url)).status_code == 200
    assert (await admin.post("/faults", json={"operation": "dance"})).status_code == 400
    stats = (await admin.get("/stats")).json()
    assert stats["calls"]["list_tenant"] == 4


async def test_storm_in_time_partial_storm_and_clearing(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    url = f"/v1/{PROJECT}/smart-live-jobs"
    # a storm in time: every call for 30 simulated seconds, whatever the count
    assert (await admin.post("/faults", json={"status": 503, "for_s": 30})).status_code == 200
    assert [(await client.get(url)).status_code for _ in range(5)] == [503] * 5
    await admin.post("/clock/advance", json={"seconds": 30})
    assert (await client.get(url)).status_code == 200
    # a partial storm: only some calls fail (seeded, so this is the same every run)
    await admin.post("/faults", json={"status": 503, "for_s": 60, "probability": 0.5})
    codes = []
    for _ in range(10):
        await admin.post("/clock/advance", json={"seconds": 1})  # stay under the 20/s limit
        codes += [(await client.get(url)).status_code for _ in range(15)]
    assert sorted(set(codes)) == [200, 503]
    assert 40 < codes.count(503) < 110
    # an operator ends it early
    resp = await admin.delete("/faults")
    assert resp.json() == {"cleared": 1, "faults": 0}
    assert (await client.get(url)).status_code == 200
    for bad in ({"probability": 0}, {"probability": 1.5}, {"for_s": 0}, {"for_s": "soon"}):
        assert (await admin.post("/faults", json={"status": 503, **bad})).status_code == 400
    assert (await client.get(url)).status_code == 200  # a refused fault changed nothing


async def test_ghost_start_creates_job_but_never_answers(
    served: ServedApp, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    await admin.post("/faults", json={"operation": "start", "ghost": True, "count": 1})
    async with httpx.AsyncClient(base_url=served.base_url, auth=SdkSigner(), timeout=0.5) as c:
        try:
            await c.post(jobs_path(), json={})
            timed_out = False
        except httpx.ReadTimeout:
            timed_out = True
        assert timed_out
        listed = await c.get(jobs_path(), params={"state": "WAITING"})
    assert listed.json()["count"] == 1
    assert service.starts == 1


async def test_reset_and_clock_advance(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, service: EmulatorService
) -> None:
    job_id = (await client.post(jobs_path(), json={})).json()["job_id"]
    resp = await admin.post("/clock/advance", json={"seconds": 2})
    assert resp.status_code == 200
    assert service.jobs[job_id].rtmp_state == "CONNECTED"
    assert (await admin.post("/clock/advance", json={"seconds": -1})).status_code == 400
    assert (await admin.post("/reset")).json() == {"reset": True}
    assert (await admin.get("/jobs")).json() == {"jobs": []}
    assert (await admin.get("/stats")).json()["starts"] == 0
    assert "room-1" in service.rooms


async def test_rtmp_force_validation(client: httpx.AsyncClient, admin: httpx.AsyncClient) -> None:
    job_id = (await client.post(jobs_path(), json={})).json()["job_id"]
    # WAITING: no link yet
    assert (
        await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "CONNECTED"})
    ).status_code == 400
    await admin.post("/clock/advance", json={"seconds": 2})
    assert (await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "WEIRD"})).status_code == 400
    resp = await admin.post(f"/jobs/{job_id}/rtmp", json={"state": "END"})
    assert resp.json()["job"]["state"] == "FAILED"
    assert resp.json()["job"]["rtmp_state"] == "END"


async def test_journal_names_the_room_a_fault_hit_and_every_link_change(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await admin.post("/faults", json={"operation": "start", "status": 503, "count": 1})
    assert (await client.post(jobs_path(), json={})).status_code == 503
    job_id = (await client.post(jobs_path(), json={})).json()["job_id"]
    await admin.post("/clock/advance", json={"seconds": 5})  # WAITING → PROCESSING → CONNECTED
    assert (await client.get(f"{jobs_path()}/nope")).status_code == 404
    await admin.post("/faults", json={"operation": "show", "latency_ms": 1, "count": 1})
    assert (await client.get(f"{jobs_path()}/{job_id}")).status_code == 200
    body = (await admin.get("/journal")).json()
    calls = [
        (e["operation"], e["room_id"], e["status"], e["cause"])
        for e in body["entries"]
        if e["kind"] == "call"
    ]
    assert calls == [
        ("start", "room-1", 503, "fault"),
        ("show", "room-1", 404, "service"),
        ("show", "room-1", 200, "fault"),  # delayed, answered all the same
    ]
    links = [(e["job_id"], e["state"]) for e in body["entries"] if e["kind"] == "rtmp"]
    assert links == [(job_id, "CONNECTING"), (job_id, "CONNECTED")]
    assert [e["seq"] for e in body["entries"]] == list(range(1, body["seq"] + 1))
    later = (await admin.get("/journal", params={"since": body["seq"] - 1})).json()
    assert [e["seq"] for e in later["entries"]] == [body["seq"]]
    await admin.post("/reset")
    assert (await admin.get("/journal", params={"since": body["seq"]})).json()["entries"] == []
    assert (await admin.get("/journal", params={"since": "x"})).status_code == 400
