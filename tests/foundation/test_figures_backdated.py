"""The daemon's own figures count a drop from when the stream stopped (issue 24): a read that
shows the push dead for a while, or the playback probe, back-dates the drop in the SLA rows,
the recovery durations and metrics, and the status page timeline."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.app import Daemon
from orchestrator.clock import ManualClock
from orchestrator.ops.metrics import Metrics
from orchestrator.ops.status_page import timeline
from orchestrator.rooms.model import Order, Room, RoomState
from orchestrator.rooms.supervisor import Transition
from orchestrator.settings import Settings
from orchestrator.sla import SlaAccumulator
from orchestrator.store.base import TransitionRecord

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
S = RoomState


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def test_sla_takes_back_the_undetected_seconds() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="LIVE", order_on=True, at=at(0))
    # the push stopped at t=88.3, a read found it at t=98.8 (10.5 s later)
    acc.observe("r", state="REFRESHING", order_on=True, at=at(98.8), down_since=at(88.3))
    assert acc.down_since("r") == at(88.3)
    acc.observe("r", state="LIVE", order_on=True, at=at(100))
    acc.tick(at(200))
    d = acc.drain()[("r", T0.date())]
    assert d.scheduled_s == 200
    assert round(d.live_s, 6) == round(200 - 11.7, 6)  # off air 88.3 → 100, all of it
    assert d.drops == 1
    assert [round(r, 6) for r in d.recoveries] == [11.7]


def test_sla_takes_back_seconds_already_drained_and_split_at_midnight() -> None:
    acc = SlaAccumulator()
    eve = datetime(2026, 11, 24, 23, 59, 50, tzinfo=UTC)
    acc.observe("r", state="LIVE", order_on=True, at=eve)
    acc.tick(eve + timedelta(seconds=20))  # 10 s on each day, drained below
    first = acc.drain()
    assert first[("r", date(2026, 11, 24))].live_s == 10
    # found at 00:00:10: stopped at 23:59:55
    acc.observe(
        "r", state="DEGRADED", order_on=True, at=eve + timedelta(seconds=20),
        down_since=eve + timedelta(seconds=5),
    )  # fmt: skip
    later = acc.drain()
    assert later[("r", date(2026, 11, 24))].live_s == -5  # the store adds it: 5 s live that day
    assert later[("r", date(2026, 11, 25))].live_s == -10
    assert later[("r", date(2026, 11, 24))].drops == 1  # the drop began on the 24th


def test_sla_never_back_dates_before_the_room_went_live() -> None:
    acc = SlaAccumulator()
    acc.observe("r", state="STARTING", order_on=True, at=at(0))
    acc.observe("r", state="LIVE", order_on=True, at=at(10))
    acc.observe("r", state="DEGRADED", order_on=True, at=at(20), down_since=at(-100))
    acc.tick(at(20))
    d = acc.drain()[("r", T0.date())]
    assert d.live_s == 0 and d.scheduled_s == 20
    assert acc.down_since("r") == at(10)


def test_timeline_draws_the_outage_from_when_the_stream_stopped() -> None:
    recs = [
        TransitionRecord("r", at(10), "STARTING", "LIVE", "JobObserved"),
        TransitionRecord(
            "r", at(98.8), "LIVE", "REFRESHING", "JobObserved",
            detail={"drop_since": at(88.3).isoformat()},
        ),
        TransitionRecord("r", at(100), "REFRESHING", "LIVE", "JobObserved"),
    ]  # fmt: skip
    segs = timeline(recs, start=at(0), end=at(200), current="LIVE")
    fault = [s for s in segs if s["kind"] == "fault"]
    assert fault == [
        {"start": at(88.3).isoformat(), "end": at(100).isoformat(), "state": "REFRESHING",
         "kind": "fault", "scheduled": True},
    ]  # fmt: skip
    # never before the record before it (a malformed or hostile row cannot rewrite history)
    recs[1] = TransitionRecord(
        "r", at(98.8), "LIVE", "REFRESHING", "JobObserved", detail={"drop_since": "garbage"}
    )
    assert [s["start"] for s in timeline(recs, start=at(0), end=at(200), current="LIVE")
            if s["kind"] == "fault"] == [at(98.8).isoformat()]  # fmt: skip
    recs[1] = TransitionRecord(
        "r", at(98.8), "LIVE", "REFRESHING", "JobObserved",
        detail={"drop_since": at(-50).isoformat()},
    )  # fmt: skip
    assert [s["start"] for s in timeline(recs, start=at(0), end=at(200), current="LIVE")
            if s["kind"] == "fault"] == [at(10).isoformat()]  # fmt: skip


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render()[0].decode()):
        for s in fam.samples:
            if "recover" in s.name:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _room(state: RoomState, **kw: object) -> Room:
    return Room(room_id="r", state=state, order=Order.ON, job_id="j", **kw)  # type: ignore[arg-type]


def _step(d: Daemon, t: float, before: Room, after: Room) -> None:
    d.fanout(
        Transition("r", at(t), before.snapshot(), after.snapshot(), "JobObserved", "poll",
                   drop_since=after.drop_since)
    )  # fmt: skip


def test_recovery_metrics_by_rung_from_when_the_stream_stopped(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"store": {"url": f"sqlite+aiosqlite:///{tmp_path / 's.db'}"}, "cloud": {"project_id": "p"}}
    )
    d = Daemon(settings, clock=ManualClock(T0))
    live = _room(S.LIVE)
    # 1: a late-found drop (stopped 88.3, found 98.8) repaired by a refresh at 100
    ref = _room(S.REFRESHING, drop_since=at(88.3))
    _step(d, 0, _room(S.STARTING), live)
    _step(d, 98.8, live, ref)
    _step(d, 100, ref, live)
    # 2: the service reconnects by itself within the grace
    deg = _room(S.DEGRADED, drop_since=at(200))
    _step(d, 200, live, deg)
    _step(d, 203, deg, live)
    # 3: the primary's refreshes fail; the backup output brings it back
    deg = _room(S.DEGRADED, drop_since=at(300))
    ref0 = _room(S.REFRESHING, drop_since=at(300))
    ref1 = _room(S.REFRESHING, drop_since=at(300), output_index=1)
    _step(d, 300, live, deg)
    _step(d, 310, deg, ref0)
    _step(d, 320, ref0, ref1)
    _step(d, 325, ref1, live)
    # 4: the ladder gives up on refreshes; a restart brings it back
    ref = _room(S.REFRESHING, drop_since=at(400))
    rst = _room(S.RESTARTING, drop_since=at(400))
    start = _room(S.STARTING, drop_since=at(400))
    _step(d, 400, live, ref)
    _step(d, 420, ref, rst)
    _step(d, 425, rst, start)
    _step(d, 430, start, live)
    got = _samples(d.metrics)

    def total(rung: str, outcome: str) -> float:
        key = (("outcome", outcome), ("rung", rung))
        return got.get(("liveorch_recoveries_total", key), 0.0)

    def seconds(rung: str) -> float:
        return got[("liveorch_recovery_duration_seconds_sum", (("rung", rung),))]

    assert total("refresh", "ok") == 1 and round(seconds("refresh"), 6) == 11.7
    assert total("self", "ok") == 1 and seconds("self") == 3
    assert total("self", "failed") == 1  # drop 3 (drop 4 went straight to the refresh)
    assert total("backup_output", "ok") == 1 and seconds("backup_output") == 25
    assert total("refresh", "failed") == 1
    assert total("restart", "ok") == 1 and seconds("restart") == 30


def test_sla_live_counter_offsets_seconds_taken_back() -> None:
    """A counter cannot go down: the seconds the SLA took back are offset against the room's
    next live seconds, so /metrics meets the store again instead of overcounting for good."""
    m = Metrics()

    def live() -> float:
        fams = text_string_to_metric_families(m.render()[0].decode())
        return next(
            s.value for f in fams for s in f.samples if s.name == "liveorch_sla_live_seconds_total"
        )

    m.sla("r", live_s=100, scheduled_s=100)
    m.sla("r", live_s=-10, scheduled_s=20)  # a drop found 10 s late, after a flush
    assert live() == 100
    m.sla("r", live_s=4, scheduled_s=4)
    assert live() == 100
    m.sla("r", live_s=30, scheduled_s=30)
    assert live() == 124  # = 100 - 10 + 4 + 30, what the store holds
