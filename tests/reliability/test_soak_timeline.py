"""The soak's accounting rules (bench/soak_timeline.py): intervals, live time, double pushers."""

from __future__ import annotations

from bench.soak_timeline import (
    LinkTimeline,
    api_fault_class,
    clip,
    excused_share,
    first_live_after,
    merge,
    percentile,
    subtract,
    total,
)


def _rtmp(t: float, job: str, state: str, room: str = "r1", key: str = "k1") -> dict[str, object]:
    return {
        "kind": "rtmp",
        "t": t,
        "job_id": job,
        "room_id": room,
        "stream_key": key,
        "state": state,
    }


def test_interval_algebra_partitions_scheduled_time() -> None:
    sched = merge([(0.0, 10.0), (20.0, 30.0), (5.0, 12.0)])
    assert sched == [(0.0, 12.0), (20.0, 30.0)]
    live = [(1.0, 4.0), (6.0, 25.0)]
    outages = subtract(sched, live)
    assert outages == [(0.0, 1.0), (4.0, 6.0), (25.0, 30.0)]
    live_in = clip(live, sched)
    assert live_in == [(1.0, 4.0), (6.0, 12.0), (20.0, 25.0)]
    assert total(live_in) + total(outages) == total(sched)
    assert first_live_after(live, 4.5) == 6.0 and first_live_after(live, 2.0) == 2.0
    assert first_live_after(live, 26.0) is None


def test_link_timeline_live_while_any_job_connected_and_double_pushers() -> None:
    entries = [
        _rtmp(1.0, "a", "CONNECTING"),
        _rtmp(2.0, "a", "CONNECTED"),
        _rtmp(3.0, "b", "CONNECTED"),  # a second job on the same key while a pushes
        _rtmp(4.0, "a", "END"),
        _rtmp(5.0, "b", "DISCONNECTED"),
        _rtmp(7.0, "c", "CONNECTED", room="r2", key="k2"),
        {"kind": "call", "t": 7.5, "room_id": "r1", "operation": "start", "status": 503},
    ]
    tl = LinkTimeline.build(entries, end=10.0)
    assert tl.live == {"r1": [(2.0, 5.0)], "r2": [(7.0, 10.0)]}
    assert tl.double_pushers == [(3.0, "k1", ["a", "b"])]


def test_excused_share_and_fault_classes() -> None:
    scheduled = {"r1": [(0.0, 100.0)], "r2": [(0.0, 100.0)]}
    assert excused_share(scheduled, {"r1": [(10.0, 30.0), (20.0, 40.0)]}) == 0.15
    assert [api_fault_class(s) for s in (503, 429, 504, 200)] == [
        "storm_5xx",
        "storm_429",
        "ghost_call",
        "latency",
    ]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
