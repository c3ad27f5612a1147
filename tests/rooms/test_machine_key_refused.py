"""A refused stream key (issue 23): told from a dead link by the job's ``error_info`` (an
inference, see ``RecoverySettings.key_refused_markers``), never retried with the same key."""

from __future__ import annotations

from orchestrator.rooms.machine import ALERT_QUARANTINED
from orchestrator.rooms.model import (
    CommandSucceeded,
    JobObserved,
    OutputChanged,
    RaiseAlert,
    RefreshOutput,
    ResetExitConfig,
    RoomState,
    ShowJob,
    StartJob,
    StopJob,
)
from orchestrator.rooms.policy import Policy
from tests.rooms.test_machine_ladder import Sim

S = RoomState
REFUSED = "LIVE.STREAM_KEY_REFUSED: RTMP publish refused by the ingest: stream key refused"
OUTAGE = "LIVE.INGEST_UNREACHABLE: RTMP connection to the ingest failed"


def _drop_read(sim: Sim, error: str | None) -> None:
    """The DISCONNECTED callback, then the read it asks for (the link down, ``error``)."""
    sim.at(100).rtmp("DISCONNECTED")
    assert sim.room.state is S.DEGRADED
    show, grace = sim.one(ShowJob), sim.timer()
    assert isinstance(show, ShowJob)
    sim.feed(JobObserved(seq=show.seq, job_id="job-1", state="PROCESSING",
                         rtmp_state="DISCONNECTED", error=error))  # fmt: skip
    sim.actions = [grace]  # the grace timer still runs (the read changed no timer)


def _refresh(sim: Sim) -> RefreshOutput:
    ref = sim.one(RefreshOutput)
    assert isinstance(ref, RefreshOutput)
    sim.feed(CommandSucceeded(seq=ref.seq, command="REFRESH_OUTPUT_URL"))
    return ref


def _through_grace(sim: Sim) -> None:
    sim.fire()  # grace over
    widen = sim.one(ResetExitConfig)
    assert isinstance(widen, ResetExitConfig)
    sim.feed(CommandSucceeded(seq=widen.seq, command="RESET_EXIT_CONFIG"))


def test_refused_key_without_backup_quarantines_with_the_reason_instead_of_restarting() -> None:
    sim = Sim(policy=Policy(refresh_tries=3))
    sim.go_live()
    _drop_read(sim, REFUSED)
    assert sim.room.key_refused == REFUSED
    _through_grace(sim)
    assert _refresh(sim).output_index == 0  # one refresh: the key may have been restored
    actions = sim.fire()  # no CONNECTED: the same key is not tried twice more, nor restarted
    assert sim.room.state is S.QUARANTINED
    assert not [a for a in actions if isinstance(a, StartJob | RefreshOutput)]
    alert = [a for a in actions if isinstance(a, RaiseAlert)]
    assert [a.kind for a in alert] == [ALERT_QUARANTINED]
    assert alert[0].message.startswith("stream key refused")
    assert [a.job_id for a in actions if isinstance(a, StopJob)] == ["job-1"]


def test_dead_link_without_backup_still_retries_then_restarts() -> None:
    """The same ladder with an outage's error_info (not a refusal) and the unreachable hint
    off: retried, then restarted (with it on, see test_machine_ingest_unreachable)."""
    sim = Sim(policy=Policy(refresh_tries=2, ingest_unreachable_markers=()))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    assert sim.room.key_refused is None
    _through_grace(sim)
    _refresh(sim)
    sim.fire()  # not confirmed
    sim.fire()  # refresh backoff
    _refresh(sim)
    sim.fire()
    assert sim.room.state is S.RESTARTING
    assert sim.room.alert is None


def test_refused_key_goes_straight_to_the_backup_output() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    _drop_read(sim, REFUSED)
    _through_grace(sim)
    assert _refresh(sim).output_index == 1  # the refused primary is skipped
    assert sim.room.key_refused is None  # the backup has its own key
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE


def test_refused_backup_key_too_quarantines() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    _drop_read(sim, REFUSED)
    _through_grace(sim)
    _refresh(sim)  # the backup
    confirm = sim.timer()
    # a read during the confirmation (a poke) shows the backup's key refused as well
    sim.feed(JobObserved(seq=None, job_id="job-1", state="PROCESSING", rtmp_state="RECONNECTING",
                         error=REFUSED))  # fmt: skip
    sim.actions = [confirm]
    assert sim.room.key_refused == REFUSED
    sim.fire()
    assert sim.room.state is S.QUARANTINED
    assert (sim.room.last_error or "").startswith("stream key refused")


def test_set_output_during_the_ladder_refreshes_with_the_new_key_at_once() -> None:
    sim = Sim(policy=Policy(refresh_tries=3))
    sim.go_live()
    _drop_read(sim, REFUSED)
    _through_grace(sim)
    _refresh(sim)  # the primary, refused again; the confirmation timer runs
    actions = sim.feed(OutputChanged(cause="mqtt:set_output"))
    assert [type(a) for a in actions] == [RefreshOutput]
    assert sim.room.key_refused is None and sim.room.state is S.REFRESHING
    _refresh(sim)
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE and sim.room.alert is None


def test_set_output_in_degraded_does_not_wait_for_the_grace() -> None:
    sim = Sim()
    sim.go_live()
    _drop_read(sim, REFUSED)
    actions = sim.feed(OutputChanged(cause="mqtt:set_output"))
    assert [type(a) for a in actions] == [RefreshOutput]
    assert sim.room.state is S.REFRESHING


def test_markers_are_configurable_and_empty_means_never() -> None:
    assert Policy().key_refused(REFUSED)
    assert Policy().key_refused("NetStream.Publish.BadName")
    assert not Policy().key_refused(OUTAGE) and not Policy().key_refused(None)
    assert not Policy(key_refused_markers=()).key_refused(REFUSED)
    assert Policy(key_refused_markers=("403",)).key_refused("HTTP 403 from ingest")
    sim = Sim(policy=Policy(key_refused_markers=()))
    sim.go_live()
    _drop_read(sim, REFUSED)
    assert sim.room.key_refused is None


def test_a_refusal_in_a_healthy_read_does_not_mark_the_room() -> None:
    """A stale error_info on a job whose link is up must not make a later outage quarantine."""
    sim = Sim()
    sim.go_live()
    sim.feed(JobObserved(seq=None, job_id="job-1", state="PROCESSING", rtmp_state="CONNECTED",
                         error=REFUSED))  # fmt: skip
    assert sim.room.state is S.LIVE and sim.room.key_refused is None
