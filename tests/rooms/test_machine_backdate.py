"""A drop found late starts when the stream stopped, not when the daemon noticed (issue 24):
the playback probe says how long it has seen the link dead, and the room's ``drop_since`` (what
the SLA, the recovery figures and the status page count from) goes back that far, though
never before the room went LIVE."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.rooms.model import RtmpStateReported
from tests.rooms.test_machine_ladder import T0, S, Sim


def probe_dead(sim: Sim, at: float, down_s: float) -> None:
    assert sim.room.job_id is not None
    sim.at(at).feed(
        RtmpStateReported(
            job_id=sim.room.job_id, rtmp_state="DISCONNECTED", at=sim.now, observed=True,
            down_s=down_s, cause="probe:playback_dead",
        )
    )  # fmt: skip


def test_the_probes_dead_time_back_dates_the_drop_and_spends_the_grace() -> None:
    sim = Sim()
    sim.go_live()
    probe_dead(sim, 100, 30)  # playback dead since t=70, reported at t=100
    assert sim.room.drop_since == T0 + timedelta(seconds=70)
    assert sim.room.state is S.REFRESHING  # 30 s down > the 10 s grace: repair at once
    assert sim.room.snapshot().extra["drop_since"] == (T0 + timedelta(seconds=70)).isoformat()


def test_a_short_probe_outage_gets_the_rest_of_the_grace() -> None:
    sim = Sim()
    sim.go_live()
    probe_dead(sim, 100, 4)
    assert sim.room.state is S.DEGRADED
    assert sim.room.drop_since == T0 + timedelta(seconds=96)
    assert sim.timer().at == T0 + timedelta(seconds=106)  # 96 + 10 s grace


def test_a_drop_never_reaches_back_before_the_room_went_live() -> None:
    sim = Sim()
    sim.go_live()  # LIVE since T0
    probe_dead(sim, 20, 600)  # a dead time longer than this spell on air
    assert sim.room.drop_since == T0


def test_a_negative_dead_time_counts_as_now() -> None:
    sim = Sim()
    sim.go_live()
    probe_dead(sim, 20, -5)
    assert sim.room.drop_since == T0 + timedelta(seconds=20)
    assert sim.room.state is S.DEGRADED
