"""An unreachable ingest told by the job's ``error_info`` (an inference, see
``RecoverySettings.ingest_unreachable_markers``), and a blamed output that is a backup.

* with another output, the ladder leaves the output the job pushes to at once (the grace and a
  read showing the link down came first: the service's own reconnect already retried it);
* with none left, the restart that ends an exhausted ladder is held (refreshes go on, the
  ``unrecovered`` alert is raised at once) until the drop is ``ingest_wait_s`` old;
* a room on its backup whose backup is blamed (key refused, ingest unreachable) goes back to
  the primary instead of skipping "the primary" and quarantining.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.rooms.machine import ALERT_QUARANTINED, ALERT_UNRECOVERED
from orchestrator.rooms.model import (
    ClearAlert,
    CommandFailed,
    JobObserved,
    RaiseAlert,
    RefreshOutput,
    RoomState,
    StartJob,
    StopJob,
)
from orchestrator.rooms.policy import Policy
from tests.rooms.test_machine_key_refused import (
    OUTAGE,
    REFUSED,
    _drop_read,
    _refresh,
    _through_grace,
)
from tests.rooms.test_machine_ladder import Sim

S = RoomState


def _read(sim: Sim, error: str | None, rtmp: str = "RECONNECTING") -> None:
    """A read of the job (a poke's: seq None) during the ladder, the pending timer kept."""
    keep = sim.timer()
    sim.feed(JobObserved(seq=None, job_id="job-1", state="PROCESSING", rtmp_state=rtmp,
                         error=error))  # fmt: skip
    sim.actions = [keep]


def _second_drop(sim: Sim, error: str | None) -> None:
    """A later drop (at 400 s, the room LIVE since the first), with its read showing ``error``."""
    sim.at(400).rtmp("DISCONNECTED")
    assert sim.room.state is S.DEGRADED
    _read(sim, error, rtmp="DISCONNECTED")


def _destructive(actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, StopJob | StartJob)]


def test_markers_are_configurable_and_empty_means_never() -> None:
    assert Policy().ingest_unreachable(OUTAGE)
    assert Policy().ingest_unreachable("rtmp CONNECTION TO THE INGEST FAILED")
    assert not Policy().ingest_unreachable(REFUSED) and not Policy().ingest_unreachable(None)
    assert not Policy(ingest_unreachable_markers=()).ingest_unreachable(OUTAGE)
    assert Policy(ingest_unreachable_markers=("ECONNREFUSED",)).ingest_unreachable("ECONNREFUSED")
    sim = Sim(policy=Policy(outputs=2, ingest_unreachable_markers=()))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    assert sim.room.ingest_down is None
    _through_grace(sim)
    assert _refresh(sim).output_index == 0  # no hint: the primary first, as before


# --- with a backup output ---------------------------------------------------------------


def test_unreachable_primary_goes_straight_to_the_backup_after_the_grace() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    assert sim.room.ingest_down == OUTAGE and sim.room.state is S.DEGRADED
    assert not [a for a in sim.actions if isinstance(a, RefreshOutput)]  # the grace runs first
    _through_grace(sim)
    assert _refresh(sim).output_index == 1  # the dead primary is not refreshed at all
    assert sim.room.ingest_down is None  # the backup has its own ingest
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE and sim.room.output_on == 1


def test_the_latest_read_decides_a_read_without_the_marker_keeps_the_primary() -> None:
    sim = Sim(policy=Policy(outputs=2))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    _read(sim, None)  # the grace's read no longer says so: a plain dead link
    assert sim.room.ingest_down is None
    _through_grace(sim)
    assert _refresh(sim).output_index == 0


def test_a_marker_in_a_healthy_read_does_not_mark_the_room() -> None:
    sim = Sim(policy=Policy(outputs=2))
    sim.go_live()
    sim.feed(JobObserved(seq=None, job_id="job-1", state="PROCESSING", rtmp_state="CONNECTED",
                         error=OUTAGE))  # fmt: skip
    assert sim.room.state is S.LIVE and sim.room.ingest_down is None


def test_unreachable_backup_too_is_left_after_one_try_then_the_restart_is_held() -> None:
    """Both ingests down: the backup gets one refresh, then every output is retried in rounds
    (the primary's ingest may be back first); nothing is stopped or started."""
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3, ingest_wait_s=120))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    _through_grace(sim)
    assert _refresh(sim).output_index == 1
    _read(sim, OUTAGE)  # the backup's ingest is unreachable as well
    actions = sim.fire()  # confirmation over: one try is enough
    assert not _destructive(actions) and sim.room.state is S.REFRESHING
    alerts = [a for a in actions if isinstance(a, RaiseAlert)]
    assert [a.kind for a in alerts] == [ALERT_UNRECOVERED]
    assert "ingest unreachable" in alerts[0].message
    sim.fire()  # refresh backoff
    assert _refresh(sim).output_index == 0  # a new round from the primary, no longer skipped
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE
    assert [a.kind for a in sim.actions if isinstance(a, ClearAlert)] == [ALERT_UNRECOVERED]


# --- without a backup output ----------------------------------------------------------


def _exhaust_single(sim: Sim, error: str | None) -> list[object]:
    """Refresh the only output ``refresh_tries`` times, each read showing ``error``."""
    seen: list[object] = []
    for n in range(sim.policy.refresh_tries):
        if n:
            seen += sim.fire()  # refresh backoff
        assert _refresh(sim).output_index == 0
        _read(sim, error)
        seen += sim.fire()  # no CONNECTED within refresh_confirm_s
    return seen


def test_no_backup_holds_the_restart_keeps_refreshing_and_alerts_at_once() -> None:
    sim = Sim(policy=Policy(refresh_tries=3, ingest_wait_s=120))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    _through_grace(sim)
    actions = _exhaust_single(sim, OUTAGE)
    assert not _destructive(actions)
    assert sim.room.state is S.REFRESHING and sim.room.alert == ALERT_UNRECOVERED
    assert [a.kind for a in actions if isinstance(a, RaiseAlert)] == [ALERT_UNRECOVERED]
    more = sim.fire()  # refresh backoff: another round on the same output
    assert not _destructive(more)
    assert _refresh(sim).output_index == 0
    assert not [a for a in sim.actions if isinstance(a, RaiseAlert)]  # raised once
    sim.rtmp("CONNECTED")  # the ingest came back: the same job reconnects
    assert sim.room.state is S.LIVE and sim.room.alert is None
    assert sim.room.retries == 0 and sim.room.restart_failures == ()


def test_the_hold_is_bounded_a_restart_follows_at_ingest_wait_s() -> None:
    """A wrong hint (the ingest is fine, the job is not) costs at most ingest_wait_s."""
    sim = Sim(policy=Policy(refresh_tries=2, ingest_wait_s=60))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    drop = sim.room.drop_since
    assert drop is not None
    _through_grace(sim)
    stops: list[object] = []
    for _ in range(20):
        actions = _exhaust_single(sim, OUTAGE)
        stops = [a for a in actions if isinstance(a, StopJob)]
        if stops:
            break
        sim.fire()  # refresh backoff before the next round
    assert [a.job_id for a in stops if isinstance(a, StopJob)] == ["job-1"]
    assert sim.room.state is S.RESTARTING
    assert sim.now - drop >= timedelta(seconds=60)
    # the restart came at the first ladder end past the bound, not a round later
    assert sim.now - drop < timedelta(seconds=60 + 2 * (10 + 5))


def test_a_read_without_the_marker_ends_the_hold() -> None:
    sim = Sim(policy=Policy(refresh_tries=2, ingest_wait_s=600))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    _through_grace(sim)
    _exhaust_single(sim, OUTAGE)  # held
    sim.fire()
    actions = _exhaust_single(sim, None)  # the ingest answers now; the push still fails
    assert sim.room.state is S.RESTARTING
    assert [a.job_id for a in actions if isinstance(a, StopJob)] == ["job-1"]


@pytest.mark.parametrize("policy", [Policy(ingest_wait_s=0), Policy(ingest_unreachable_markers=())])
def test_hold_off_restarts_as_before(policy: Policy) -> None:
    sim = Sim(policy=policy)
    sim.go_live()
    _drop_read(sim, OUTAGE)
    _through_grace(sim)
    _exhaust_single(sim, OUTAGE)
    assert sim.room.state is S.RESTARTING


def test_a_failed_job_is_restarted_even_while_held() -> None:
    """The hold is on an exhausted ladder only: a read that shows the job ended restarts."""
    sim = Sim(policy=Policy(refresh_tries=1, ingest_wait_s=600))
    sim.go_live()
    _drop_read(sim, OUTAGE)
    _through_grace(sim)
    _exhaust_single(sim, OUTAGE)
    sim.feed(JobObserved(seq=None, job_id="job-1", state="FAILED", error=OUTAGE))
    assert sim.room.state is S.BACKOFF


# --- a room on its backup -------------------------------------------------------------


def _onto_backup(sim: Sim, error: str) -> None:
    _drop_read(sim, error)
    _through_grace(sim)
    assert _refresh(sim).output_index == 1
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE and sim.room.output_on == 1


@pytest.mark.parametrize("first", [REFUSED, OUTAGE])
@pytest.mark.parametrize("then", [REFUSED, OUTAGE])
def test_a_blamed_backup_goes_back_to_the_primary(first: str, then: str) -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    _onto_backup(sim, first)
    _second_drop(sim, then)  # now the backup's key is revoked / its ingest is down
    sim.fire()  # grace over; the job was widened already: the refresh goes out at once
    assert _refresh(sim).output_index == 0  # the primary, not "the backup after the primary"
    sim.rtmp("CONNECTED")
    assert sim.room.state is S.LIVE and sim.room.alert is None and sim.room.output_on == 0


def test_a_refused_backup_then_a_refused_primary_quarantines() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    _onto_backup(sim, REFUSED)
    _second_drop(sim, REFUSED)
    sim.fire()
    assert _refresh(sim).output_index == 0
    _read(sim, REFUSED)  # the primary is still refused
    sim.fire()
    assert sim.room.state is S.QUARANTINED and sim.room.alert == ALERT_QUARANTINED


def test_a_plain_drop_on_the_backup_refreshes_the_primary_first_as_before() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    _onto_backup(sim, OUTAGE)
    _second_drop(sim, None)
    sim.fire()
    assert _refresh(sim).output_index == 0


def test_output_on_follows_refreshes_that_took_and_new_jobs() -> None:
    sim = Sim(policy=Policy(outputs=2, refresh_tries=3))
    sim.go_live()
    assert sim.room.output_on == 0
    _drop_read(sim, OUTAGE)
    _through_grace(sim)
    ref = sim.one(RefreshOutput)
    assert isinstance(ref, RefreshOutput) and ref.output_index == 1
    sim.feed(CommandFailed(seq=ref.seq, command="REFRESH_OUTPUT_URL", error="500"))
    assert sim.room.output_on == 0  # a failed refresh moved nothing
    sim.fire()  # refresh backoff: the backup again (a failed call is not an unreachable read)
    assert _refresh(sim).output_index == 1
    assert sim.room.output_on == 1  # this one took
