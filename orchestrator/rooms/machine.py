"""The room lifecycle as a pure transition table: ``step(room, event, now, policy)``.

No I/O, no clock reads, no randomness: ``now`` is an argument and jitter rides on the event.
The driver (``rooms.supervisor``) carries out the returned actions and feeds their results back.

How to read it:

* :data:`TABLE` maps ``(state, event type)`` to a :class:`Rule`: a small handler plus the set
  of states it may lead to. Pairs that are not in the table are ignored (no change, no action).
  :func:`mermaid` draws the diagram in ``docs/state-machine.md`` from the same table, and a test
  checks every handler only ever lands in its declared states.
* :func:`step` first applies four uniform filters, so handlers never repeat them:

  1. a QUARANTINED room only takes ``Reset`` and order changes (it never acts on its own);
  2. a result (``OpResult``) that does not answer the room's current call (kind and ``seq``)
     is stale and dropped; a matching one clears the room's in-flight call;
  3. a ``TimerFired`` whose ``seq`` is not the room's ``timer_seq`` is stale and dropped;
  4. callbacks are hints: an ``RtmpStateReported`` for another job, or older than the link state
     the room already knows (from a report or a read that carried it), is dropped; a fresh
     one (its time capped at ``now``), and a ``JobObserved`` of the room's job, are recorded
     before the handler runs.

Callbacks are hints (their body is not signed): no handler stops, restarts or refreshes a job,
or counts a failure towards quarantine, on a callback alone. A reported drop opens DEGRADED and
reads the job; where reads can show the push (``stream_duration``), the ladder only starts once
a read confirms it, and a CONNECTED report only ends a drop once a read shows the push advancing.

Safety rules the table keeps (and the hypothesis tests check): a ``StartJob`` is only emitted
in answer to the room's *own* ``ListJobs`` that showed no WAITING/PROCESSING job, with no start
in flight; a start with an unknown outcome is followed by a list, never a blind retry; jobs we
stopped are never adopted again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from orchestrator.rooms.model import (
    Action,
    ClearAlert,
    CommandFailed,
    CommandSucceeded,
    Event,
    InsertScript,
    InsertScriptRequested,
    JobObserved,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ListJobs,
    ObservedJob,
    Op,
    OpResult,
    Order,
    OrderChanged,
    OutputChanged,
    Poked,
    PushMark,
    QueryFailed,
    RaiseAlert,
    RefreshOutput,
    RefreshRequested,
    Reset,
    ResetExitConfig,
    RestartRequested,
    Resumed,
    Room,
    RoomState,
    RtmpStateReported,
    SetTimer,
    ShowJob,
    StartJob,
    StopFailed,
    StopJob,
    TimerFired,
    Wait,
    WindowClosed,
    WindowOpened,
)
from orchestrator.rooms.policy import Policy

__all__ = ["ACTIVE_JOB_STATES", "TABLE", "Rule", "mermaid", "step"]

S = RoomState
Result = tuple[Room, list[Action]]
Handler = Callable[[Room, Event, datetime, Policy], Result]

ACTIVE_JOB_STATES = frozenset({"WAITING", "PROCESSING"})
_DOWN = frozenset({"DISCONNECTED", "RECONNECTING"})
ALERT_QUARANTINED = "quarantined"
ALERT_STRAY = "stray_jobs"
ALERT_UNRECOVERED = "unrecovered"
# Reads report duration and stream_duration together, but a service may round each on its own
# (unconfirmed): an interval counts as "pushed throughout" within this many seconds, and never
# within more than a quarter of stall_after_s (a drop just before a read is absorbed into the
# reference and seen one read later; the slack must stay well below what it would hide).
_PUSH_SLACK_S = 2.0


@dataclass(frozen=True, slots=True)
class Rule:
    """A handler and the states it may lead to (staying put is always allowed)."""

    handler: Handler
    targets: frozenset[RoomState]


# ----------------------------------------------------------------------------- small helpers


def _go(room: Room, state: RoomState, **changes: object) -> Room:
    return replace(room, state=state, **changes)  # type: ignore[arg-type]


def _with_op(room: Room, op: Op) -> tuple[Room, int]:
    seq = room.seq + 1
    return replace(room, seq=seq, op=op, op_seq=seq), seq


def _with_timer(room: Room, wait: Wait, at: datetime) -> Result:
    seq = room.seq + 1
    return replace(room, seq=seq, wait=wait, timer_seq=seq), [SetTimer(seq, at)]


def _in(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _list(room: Room) -> Result:
    """Ask for the room's running jobs (unless a call is already in flight)."""
    if room.op is not None:
        return room, []
    room, seq = _with_op(room, Op.LIST)
    return room, [ListJobs(seq)]


def _show(room: Room) -> Result:
    job_id = room.job_id
    if room.op is not None or job_id is None:
        return room, []
    room, seq = _with_op(room, Op.SHOW)
    return room, [ShowJob(seq, job_id)]


def _stop(room: Room) -> Result:
    """Stop the room's job (replacing any call in flight); with no job id, list instead."""
    job_id = room.job_id
    if job_id is None:
        return _list(replace(room, op=None))
    room, seq = _with_op(room, Op.STOP)
    return room, [StopJob(seq, job_id)]


def _start(room: Room) -> Result:
    attempt = room.attempt + 1
    room, seq = _with_op(replace(room, attempt=attempt), Op.START)
    room = _go(room, S.STARTING, wait=None, next_retry_at=None, job_id=None, job_state=None)
    room = replace(room, rtmp_state=None, rtmp_at=None, output_on=0)  # a start pushes the primary
    return room, [StartJob(seq, room.window_key, attempt)]


def _job_alive(room: Room) -> bool:
    """Might the room's job still be pushing? (Unknown state counts as alive.)"""
    if room.job_id is None:
        return False
    return room.job_state is None or room.job_state in ACTIVE_JOB_STATES


def _active(room: Room, jobs: Iterable[ObservedJob]) -> list[ObservedJob]:
    """Running jobs we may adopt: never one we stopped; ours first, PROCESSING before WAITING."""
    found = [j for j in jobs if j.state in ACTIVE_JOB_STATES and j.job_id not in room.retired]
    return sorted(found, key=lambda j: (j.job_id != room.job_id, j.state != "PROCESSING"))


def _retire(room: Room) -> Room:
    retired = room.retired
    if room.job_id is not None and room.job_id not in retired:
        retired = (*retired, room.job_id)[-8:]
    return replace(room, retired=retired, job_id=None, job_state=None, rtmp_state=None)


def _error(room: Room, message: str) -> Room:
    return replace(room, last_error=message)


# ----------------------------------------------------------------------------- ladder steps


def _enter_live(room: Room, now: datetime, p: Policy) -> Result:
    """On air. The refresh ladder starts over; the restart backoff and quarantine count only
    once the room has stayed LIVE for ``stable_after_s`` (see ``_settle``). The stall check
    takes its reference from this read, or else from the first read since (see PushMark): a
    push that dies right after going live is measured from there, not two reads later."""
    room = _go(
        room, S.LIVE, output_index=0, refresh_try=0, drop_since=None, next_retry_at=None,
        last_error=None, drop_hinted=False, key_refused=None, ingest_down=None, skip_output=None,
    )  # fmt: skip
    m = room.push
    if m is not None and m.job_id == room.job_id:
        ref = m.duration - m.stream if m.read_at == now and m.stream > 0 else None
        room = replace(room, push=replace(m, lag_ref=ref, stalled_s=0.0))
    if p.stable_after_s <= 0:
        room = replace(room, retries=0, restart_failures=())
    return _with_timer(room, Wait.STALE, _in(room.last_observed_at or now, p.stale_after_s))


def _settle(room: Room, now: datetime, p: Policy) -> Room:
    """A room LIVE for ``stable_after_s`` has recovered: its restart backoff and quarantine
    count start over. Checked lazily on each of its events (polls and the watchdog reach every
    LIVE room), and before the event's rule, so a failure after a stable spell is a first one.
    Reset on reaching LIVE instead, a job that died seconds after every start was restarted at
    once forever: never backing off, never quarantined."""
    if not (room.retries or room.restart_failures) or room.state is not S.LIVE:
        return room
    if room.since is None or (now - room.since).total_seconds() < p.stable_after_s:
        return room
    return replace(room, retries=0, restart_failures=())


def _adopt(room: Room, jobs: list[ObservedJob], now: datetime, p: Policy) -> Result:
    """Attach to a running job instead of starting one (never a duplicate push)."""
    job, strays = jobs[0], jobs[1:]
    if room.op is Op.LIST:
        room = replace(room, op=None)  # adopted from another listing: ours is moot
    if job.job_id != room.job_id:
        room = replace(
            room, job_id=job.job_id, widened=False, rtmp_state=None, rtmp_at=None, output_on=0
        )
    room = replace(room, job_state=job.state, rtmp_state=job.rtmp_state or room.rtmp_state)
    actions: list[Action] = []
    if strays:
        ids = ", ".join(j.job_id for j in strays)
        if p.stray_jobs == "stop":
            actions += [StopJob(0, j.job_id) for j in strays]
            room = _error(room, f"stopped stray job(s) {ids}")
        else:
            actions.append(RaiseAlert(ALERT_STRAY, f"extra running job(s) in room: {ids}"))
    if job.state == "PROCESSING" and room.rtmp_state not in _DOWN | {"END"}:
        # A PROCESSING job with no contrary link report is on air: the list API carries no RTMP
        # state, and waiting for a CONNECTED callback that already happened (or that arrived
        # before a reordered CONNECTING) would restart a healthy stream after start_confirm_s.
        room, more = _enter_live(room, now, p)
    elif job.state == "PROCESSING" and room.rtmp_state in _DOWN:
        # Adopted with its link reported down (a callback replayed from the inbox after a
        # crash): repair this job like any drop. As STARTING it waited for a CONNECTED that a
        # held drop never sends, and restarted the job after start_confirm_s.
        room, more = _degrade(room, now, p)
    else:
        room = _go(room, S.STARTING)
        room, more = _with_timer(room, Wait.START_CONFIRM, _in(now, p.start_confirm_s))
    return room, actions + more


def _to_backoff(
    room: Room,
    now: datetime,
    p: Policy,
    u: float,
    *,
    retry_after: float | None = None,
    api_error: bool = False,
) -> Result:
    """Wait before the next list-and-start; the countdown is visible as ``next_retry_at``.

    ``api_error``: the attempt failed on a temporary API error (5xx, 429), not because a job
    failed: the gentler ``api_retry_wait`` (each attempt lists first, so retrying is safe)."""
    retries = room.retries + 1
    wait = p.api_retry_wait if api_error else p.restart_wait
    at = _in(now, wait(retries, u, retry_after))
    room = _go(_retire(room), S.BACKOFF, retries=retries, next_retry_at=at, op=None)
    return _with_timer(room, Wait.RETRY, at)


def _quarantine(room: Room, reason: str) -> Result:
    actions: list[Action] = []
    if room.alert == ALERT_UNRECOVERED:
        actions.append(ClearAlert(ALERT_UNRECOVERED))  # superseded by the quarantine alert
    if _job_alive(room) and room.job_id is not None:
        actions.append(StopJob(0, room.job_id))  # last act: do not leave a broken job pushing
    room = _go(
        room, S.QUARANTINED, op=None, wait=None, next_retry_at=None, last_error=reason,
        alert=ALERT_QUARANTINED,
    )  # fmt: skip
    return room, [*actions, RaiseAlert(ALERT_QUARANTINED, reason)]


def _operator_restart(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """Restart on request: stop, back off, list-and-start — without counting a failure."""
    if room.job_id is None:
        return room, []  # nothing to restart yet (a list or start is in flight)
    room = replace(room, last_error=None)
    if _job_alive(room):
        return _stop(_go(replace(room, op=None), S.RESTARTING, wait=None))
    return _after_restart_stop(room, now, p, ev.jitter)


def _operator_refresh(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """Refresh on request: the refresh ladder from the primary output, no grace, no widening."""
    if room.op is not None or room.job_id is None:
        return room, []
    return _refresh_now(replace(room, output_index=0, refresh_try=0))


def _restart(room: Room, now: datetime, p: Policy, u: float, reason: str) -> Result:
    """The job failed or the ladder is exhausted: stop it, back off, then list-and-start."""
    horizon = now - timedelta(seconds=p.quarantine_window_s)
    failures = (*(t for t in room.restart_failures if t > horizon), now)
    room = replace(room, restart_failures=failures, last_error=reason)
    if len(failures) >= p.quarantine_after:
        return _quarantine(
            room,
            f"{reason}; {len(failures)} failed restarts within {p.quarantine_window_s:g}s",
        )
    if _job_alive(room):
        room = _go(room, S.RESTARTING, wait=None, retries=room.retries + 1)
        return _stop(replace(room, op=None))
    return _to_backoff(room, now, p, u)


def _after_restart_stop(room: Room, now: datetime, p: Policy, u: float) -> Result:
    """The broken job is stopped: wait the restart backoff (retries already counted)."""
    at = _in(now, p.restart_wait(room.retries, u))
    room = _go(_retire(room), S.BACKOFF, next_retry_at=at)
    return _with_timer(room, Wait.RETRY, at)


def _refresh_now(room: Room) -> Result:
    job_id = room.job_id
    if job_id is None:  # nothing to repair; list and let the answer decide
        return _list(_go(room, S.UNKNOWN, op=None, wait=None))
    room, seq = _with_op(_go(room, S.REFRESHING, wait=None), Op.REFRESH)
    return room, [RefreshOutput(seq, job_id, room.output_index)]


def _skip(index: int, skip: int | None) -> int:
    """``index``, or the one after it when it is the output this ladder skips."""
    return index + 1 if index == skip else index


def _refresh_failed(room: Room, now: datetime, p: Policy, u: float, why: str) -> Result:
    failed_try = room.refresh_try
    index, tries = room.output_index, room.refresh_try + 1
    # a refused key is not tried again; an unreachable ingest is left for the next output
    # after one try (with no other output its tries run on: the ingest may come back)
    blamed = room.key_refused is not None or (room.ingest_down is not None and p.outputs > 1)
    if tries >= p.refresh_tries or blamed:
        index, tries = _skip(index + 1, room.skip_output), 0
    if index >= p.outputs:
        if room.key_refused is not None:
            # a restart would push with the same refused key: only a new key helps (MQTT
            # set_output, then reset), so say so instead of restarting into the same refusal
            return _quarantine(room, f"stream key refused: {room.key_refused}")
        if room.ingest_down is not None and _hold_restart(room, now, p):
            return _refresh_round(room, now, p, u, failed_try)
        return _restart(room, now, p, u, f"refresh ladder exhausted ({why})")
    if index != room.output_index:
        room = replace(room, key_refused=None, ingest_down=None)  # its own key and ingest
    room = replace(room, output_index=index, refresh_try=tries, last_error=why)
    return _with_timer(room, Wait.REFRESH_BACKOFF, _in(now, p.refresh_delay(failed_try, u)))


def _hold_restart(room: Room, now: datetime, p: Policy) -> bool:
    """Every output was tried and the last read says the ingest cannot be reached: a restart
    pushes to the same unreachable ingests (and a new job's start costs its own connect when
    the ingest returns), so it is held while the drop is younger than ``ingest_wait_s``. The
    hint is unconfirmed: a wrong one delays the restart by that bound, never more."""
    since = room.drop_since
    return since is not None and (now - since).total_seconds() < p.ingest_wait_s


def _refresh_round(room: Room, now: datetime, p: Policy, u: float, failed_try: int) -> Result:
    """Another round of refreshes over every output (the skipped one included: its ingest may
    be back), after the backoff; the operator is told at once that only the ingest can end
    this (the ``unrecovered`` alert, cleared on LIVE)."""
    error = room.ingest_down
    room = replace(room, output_index=0, refresh_try=0, skip_output=None, ingest_down=None,
                   last_error=f"ingest unreachable: {error}")  # fmt: skip
    room, actions = _with_timer(
        room, Wait.REFRESH_BACKOFF, _in(now, p.refresh_delay(failed_try, u))
    )
    if room.alert is None:
        message = (
            f"ingest unreachable ({error}) on every output: refreshing, restart held until "
            f"{p.ingest_wait_s:g}s after the drop"
        )
        room = replace(room, alert=ALERT_UNRECOVERED)
        actions.append(RaiseAlert(ALERT_UNRECOVERED, message))
    return room, actions


# ----------------------------------------------------------------------------- handlers


def _order(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    if isinstance(ev, OrderChanged) and ev.order is Order.OFF:
        return _want_off(room)
    if isinstance(ev, WindowOpened):
        window_id, start, deadline = ev.window_id, ev.window_start, ev.deadline
    else:
        assert isinstance(ev, OrderChanged)
        same = room.order is Order.ON and room.window_id == "manual"
        window_id = "manual"
        start = ev.window_start or (room.window_start if same else None) or now
        deadline = ev.deadline
    room = _want_on(room, window_id, start, deadline)
    if isinstance(ev, WindowOpened):
        expected = _in(now, ev.expected_delay_s) if ev.expected_delay_s > 0 else None
        room = replace(room, expected_start_at=expected)
    if room.state is S.IDLE:
        return _list(_go(room, S.STARTING, last_error=None))
    if room.state is S.UNKNOWN:
        return _list(room)
    return room, []


def _want_on(room: Room, window_id: str, start: datetime, deadline: datetime | None) -> Room:
    new_window = (window_id, start) != (room.window_id, room.window_start)
    return replace(
        room, order=Order.ON, window_id=window_id, window_start=start, deadline=deadline,
        attempt=0 if new_window else room.attempt,
    )  # fmt: skip


def _want_off(room: Room) -> Result:
    room = replace(room, order=Order.OFF, deadline=None)
    if room.state in (S.IDLE, S.UNKNOWN, S.QUARANTINED):
        return room, []
    if room.state is S.BACKOFF:
        return _go(room, S.IDLE, wait=None, next_retry_at=None), []
    room = _go(room, S.STOPPING, wait=None, next_retry_at=None)
    if room.op in (Op.START, Op.LIST, Op.STOP):
        return room, []  # its answer arrives in STOPPING and is handled there
    if room.job_id is not None:
        return _stop(replace(room, op=None))
    return _go(room, S.IDLE, op=None), []


def _window_closed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, WindowClosed)
    if room.order is not Order.ON or ev.window_id != room.window_id:
        return room, []  # another window (or a manual order): not ours to end
    return _want_off(room)


def _reset(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    actions: list[Action] = [ClearAlert(room.alert)] if room.alert else []
    room = replace(
        room, retries=0, restart_failures=(), output_index=0, refresh_try=0, last_error=None,
        alert=None, next_retry_at=None,
    )  # fmt: skip
    if room.state is not S.QUARANTINED:
        return room, actions
    room, more = _list(_go(room, S.UNKNOWN, op=None, wait=None))
    return room, actions + more


def _resumed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return _list(_go(room, S.UNKNOWN, op=None, wait=None, next_retry_at=None))


def _reconcile_listed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobsListed)
    active = _active(room, ev.jobs)
    if room.order is Order.ON:
        if active:
            return _adopt(room, active, now, p)
        if ev.seq is None:
            return _list(room)  # an unsolicited listing may adopt, never start
        return _start(room)
    ours = [j for j in active if j.job_id == room.job_id]
    if ours:
        return _stop(_go(room, S.STOPPING))
    return _go(room, S.IDLE, job_id=None, job_state=None, rtmp_state=None), []


def _poke_list(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return _list(room)


def _poke_show(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return _show(room)


def _list_failed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """A failed read: retry a list after backoff; a permanent one quarantines."""
    assert isinstance(ev, QueryFailed)
    if ev.op != "list":
        return room, []  # a failed show changes nothing; the watchdog asks again
    if not ev.temporary:
        return _quarantine(room, f"cannot list jobs: {ev.error}")
    if room.state in (S.UNKNOWN, S.STOPPING):  # keep trying to learn what runs
        retries = room.retries + 1
        at = _in(now, p.restart_delay(retries, ev.jitter, ev.retry_after))
        room = replace(room, retries=retries, next_retry_at=at, last_error=ev.error)
        return _with_timer(room, Wait.RETRY, at)
    return _to_backoff(
        _error(room, ev.error), now, p, ev.jitter, retry_after=ev.retry_after, api_error=True
    )


def _retry_list(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return _list(replace(room, wait=None, next_retry_at=None))


# --- STARTING


def _starting_listed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobsListed)
    if ev.seq is None:
        return room, []  # our own list or start is in flight; it decides
    active = _active(room, ev.jobs)
    if room.order is Order.OFF:  # defensive: OFF normally moves STARTING to STOPPING
        return _stopping_listed(_go(room, S.STOPPING), ev, now, p)
    if active:
        return _adopt(replace(room, start_unknown=False), active, now, p)
    if room.start_unknown:
        # The start may have failed or its job is not listed yet: retry only after a backoff,
        # so a service that keeps answering 409/timeouts is not hammered in a tight loop.
        room = replace(room, start_unknown=False)
        return _to_backoff(room, now, p, ev.jitter)
    return _start(room)


def _job_started(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobStarted)
    room = replace(room, job_id=ev.job_id, job_state="WAITING", widened=False, last_error=None)
    return _with_timer(room, Wait.START_CONFIRM, _in(now, p.start_confirm_s))


def _start_failed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobStartFailed)
    room = _error(room, ev.error)
    if ev.outcome_unknown:
        return _list(replace(room, start_unknown=True))  # a job may exist: look first
    if ev.temporary:
        return _to_backoff(room, now, p, ev.jitter, retry_after=ev.retry_after, api_error=True)
    return _quarantine(room, f"start refused: {ev.error}")


def _starting_observed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobObserved)
    if ev.job_id is None or ev.job_id != room.job_id:
        return room, []
    if ev.state not in ACTIVE_JOB_STATES:
        return _restart(room, now, p, ev.jitter, f"job {ev.state or 'gone'} while starting")
    if ev.state == "PROCESSING" and room.rtmp_state in (None, "CONNECTED"):
        return _enter_live(room, now, p)
    if ev.state == "PROCESSING" and (ev.stream_duration or 0.0) > 0.0:
        # The read shows the job has pushed: it connected, whatever the last hint said (a
        # CONNECTING callback whose CONNECTED was lost). Waiting on would stop a healthy stream
        # after start_confirm_s; if the push has stopped since, LIVE's stall check sees it.
        return _enter_live(replace(room, rtmp_state=None), now, p)
    return room, []


def _starting_rtmp(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, RtmpStateReported)
    if ev.rtmp_state == "CONNECTED":
        return _enter_live(replace(room, job_state="PROCESSING"), now, p)
    if ev.rtmp_state == "END":
        return _show(room)  # a callback alone never restarts: the read says if the job died
    return room, []


def _starting_timer(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return _restart(room, now, p, ev.jitter, f"not live within {p.start_confirm_s:g}s")


# --- LIVE / DEGRADED / REFRESHING


def _health_observed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """JobObserved of the room's job while on air or repairing."""
    assert isinstance(ev, JobObserved)
    if ev.job_id is None or ev.job_id != room.job_id:
        return room, []
    if ev.state not in ACTIVE_JOB_STATES:
        return _restart(room, now, p, ev.jitter, f"job {ev.state or 'gone'}")
    if ev.rtmp_state == "END":
        return _restart(room, now, p, ev.jitter, "RTMP END")
    if room.state is not S.LIVE or ev.rtmp_state in _DOWN:
        room = _blame_output(room, ev.error, p)
    if room.state is S.LIVE:
        if ev.rtmp_state in _DOWN:
            return _degrade(room, now, p)
        if (stalled := _stalled(room, now, p)) is not None:
            room = replace(room, rtmp_state="DISCONNECTED", last_error=(
                f"push stalled: stream_duration {stalled:.0f}s behind duration, no callback"
            ))  # fmt: skip
            return _degrade(room, now, p, down_s=stalled)
        if (due := _push_recheck_at(room, now, p)) is not None:
            # falling behind, not yet by stall_after_s: read again when it would be, rather
            # than a whole poll interval later
            return _with_timer(room, Wait.PUSH_CHECK, due)
        if room.wait is Wait.STALE:
            # the watchdog re-arms itself from last_observed_at when it fires: re-arming on
            # every poll meant a new timer per room per poll (10,000 rooms: 500 a second)
            return room, []
        return _with_timer(room, Wait.STALE, _in(now, p.stale_after_s))
    if ev.rtmp_state == "CONNECTED":
        return _enter_live(room, now, p)
    if _pushing_again(room, now, p):  # its CONNECTED callback was lost
        return _enter_live(replace(room, rtmp_state="CONNECTED"), now, p)
    if room.state is S.REFRESHING and ev.seq is not None and room.wait is None:
        # the read asked for when the refresh's confirmation time ran out (a poke's read
        # leaves the confirmation timer running): still no push
        why = f"no push within {p.refresh_confirm_s:g}s of refresh (stream_duration)"
        return _refresh_failed(room, now, p, ev.jitter, why)
    if room.state is S.DEGRADED and ev.seq is not None and room.wait is None:
        # the read asked for when the grace ran out: no push since the drop began, so the
        # reported drop is real (and the service's own reconnect did not bring it back)
        return _repair(room, p)
    return room, []


def _blame_output(room: Room, error: str | None, p: Policy) -> Room:
    """What a read of the job with its link down says of the output it pushes to (inferences
    from ``error_info``, see ``key_refused_markers`` and ``ingest_unreachable_markers``):

    * the ingest refuses the key: refreshing or restarting with the same key cannot cure it;
    * the ingest cannot be reached: refreshing the same URL does what the service's own
      reconnect already does, and a restart pushes to the same ingest. The latest read
      decides: one that no longer says so clears it (see ``_refresh_failed``)."""
    if p.key_refused(error):
        room = replace(room, key_refused=error, last_error=f"stream key refused: {error}")
    unreachable = error if p.ingest_unreachable(error) else None
    if unreachable != room.ingest_down:
        room = replace(room, ingest_down=unreachable)
        if unreachable is not None:
            room = replace(room, last_error=f"ingest unreachable: {unreachable}")
    return room


def _degrade(room: Room, now: datetime, p: Policy, *, down_s: float = 0.0) -> Result:
    """The link is down (for ``down_s`` already, when a read or the probe showed it late): the
    service's own reconnect gets what is left of the grace, then the ladder repairs.

    ``drop_since`` is when the stream stopped, not when we noticed: the SLA, the recovery
    figures and the status page count the outage from there. Never before the room went LIVE
    (a lag from before then is not this drop's) and never in the future."""
    since = _in(now, -max(0.0, down_s))
    if room.state is S.LIVE and room.since is not None and room.since <= now:
        since = max(since, room.since)
    down_s = (now - since).total_seconds()
    room = _go(
        room, S.DEGRADED, drop_since=since, output_index=0, refresh_try=0, drop_hinted=False,
        skip_output=None,
    )  # fmt: skip
    if p.grace_s <= down_s:
        return _repair(room, p)  # no grace (left): not even a timer hop before the refresh
    return _with_timer(room, Wait.GRACE, _in(since, p.grace_s))


def _this_read(room: Room, now: datetime, p: Policy) -> PushMark | None:
    """The room's PushMark when the read being handled made it, for its current job, with the
    check on (``stall_after_s > 0``); None otherwise."""
    m = room.push
    if p.stall_after_s <= 0 or m is None or m.job_id != room.job_id or m.read_at != now:
        return None
    return m


def _stalled(room: Room, now: datetime, p: Policy) -> float | None:
    """Seconds the push has been dead, when this very read showed it and no callback did."""
    m = _this_read(room, now, p)
    return m.stalled_s if m is not None and m.stalled_s >= p.stall_after_s else None


def _push_recheck_at(room: Room, now: datetime, p: Policy) -> datetime | None:
    """When to read again after this read showed the push behind, but by less than the
    threshold (None: it did not). ``stalled_s`` is only ever > 0 for an armed mark with no
    callback since its reference."""
    m = _this_read(room, now, p)
    if m is None or not 0 < m.stalled_s < p.stall_after_s:
        return None
    return _in(now, p.stall_after_s - m.stalled_s)


def _push_known(room: Room, p: Policy) -> bool:
    """Can reads of the current job tell whether it pushes? Only when the check is on and a
    read of this job has shown some ``stream_duration`` (see PushMark)."""
    m = room.push
    return p.stall_after_s > 0 and m is not None and m.job_id == room.job_id and m.stream > 0


def _pushing_again(room: Room, now: datetime, p: Policy) -> bool:
    """This read, taken after the drop began, shows the stream grew since a read taken no
    earlier than that (two reads stamped at the drop's own instant prove nothing)."""
    m = _this_read(room, now, p)
    since = room.drop_since
    return (
        m is not None
        and m.advanced_since is not None
        and since is not None
        and m.advanced_since >= since
        and m.read_at > since
    )


def _next_push(m: PushMark | None, ev: JobObserved, now: datetime, p: Policy) -> PushMark | None:
    """Fold a read's ``duration``/``stream_duration`` into the room's :class:`PushMark`."""
    d, s, job_id = ev.duration, ev.stream_duration, ev.job_id
    if d is None or s is None or job_id is None:
        return m
    if m is None or m.job_id != job_id:
        return PushMark(job_id, d, s, now, d - s if s > 0 else None)
    dd, ds = d - m.duration, s - m.stream
    if dd <= 0:
        return m  # the same read again, or an older one (answers can cross)
    advanced_since = m.read_at if ds > 0 else None
    if ds > 0 and dd - ds <= min(_PUSH_SLACK_S, p.stall_after_s / 4):  # pushed throughout
        return PushMark(job_id, d, s, now, d - s, 0.0, advanced_since)
    if m.lag_ref is None:  # the first read (since LIVE) that shows a push: the reference
        return PushMark(job_id, d, s, now, d - s if s > 0 else None, 0.0, advanced_since)
    stalled = max(0.0, d - s - m.lag_ref)
    return PushMark(job_id, d, s, now, m.lag_ref, stalled, advanced_since)


def _health_rtmp(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """A link report while on air or repairing. A callback is a hint (its body is not signed):
    a report of the link down or ended opens a drop and reads the job; a CONNECTED one during
    a drop reads the job, and only a read showing the push advancing ends the drop. A read
    that says the job died restarts it; a read that shows no push since the drop repairs."""
    assert isinstance(ev, RtmpStateReported)
    down = ev.rtmp_state in _DOWN or ev.rtmp_state == "END"
    if room.state is S.LIVE:
        if not down:
            return room, []
        if ev.observed:  # the playback probe saw it: as good as a read
            return _degrade(room, now, p, down_s=ev.down_s)
        return _hinted_drop(room, now, p)
    if ev.rtmp_state == "CONNECTED" and not _push_known(room, p):
        return _enter_live(room, now, p)  # reads cannot show the push: the report stands
    if ev.rtmp_state in ("CONNECTED", "END"):
        return _show(room)
    return room, []


def _hinted_drop(room: Room, now: datetime, p: Policy) -> Result:
    """A callback says the link is down. Where reads can show the push, wait the grace and
    let a read decide (a read now is the reference the later one is measured against); where
    they cannot, the report is all there is and the ladder follows it after the grace."""
    if _push_known(room, p):
        room = _go(
            room, S.DEGRADED, drop_since=now, output_index=0, refresh_try=0, drop_hinted=True,
            skip_output=None,
        )  # fmt: skip
        room, actions = _with_timer(room, Wait.GRACE, _in(now, p.grace_s))
    else:
        room, actions = _degrade(room, now, p)
    room, more = _show(room)  # is the job still alive? (no-op when a repair call is in flight)
    return room, actions + more


def _live_timer(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """Stale watchdog: nothing confirmed the job for stale_after_s — re-read it. (If something
    did since the timer was set, it only moves the timer to stale_after_s after that.) A push
    check re-reads the job in any case."""
    seen = room.last_observed_at
    if (
        room.wait is not Wait.PUSH_CHECK
        and seen is not None
        and (due := _in(seen, p.stale_after_s)) > now
    ):
        return _with_timer(room, Wait.STALE, due)
    room, actions = _show(room)
    room, more = _with_timer(room, Wait.STALE, _in(now, p.stale_after_s))
    return room, actions + more


def _live_output_changed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    job_id = room.job_id
    if room.op is not None or job_id is None:
        return room, []
    room, seq = _with_op(replace(room, output_index=0), Op.REFRESH)
    return room, [RefreshOutput(seq, job_id, 0)]


def _repair_output_changed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """A new output (MQTT ``set_output``) during a drop: it may be the cure (a new stream key
    for a refused one), so the ladder starts over on it at once. With a call in flight, the
    ladder's next refresh or restart uses the new output anyway."""
    room = replace(
        room, output_index=0, refresh_try=0, key_refused=None, ingest_down=None, skip_output=None
    )
    if room.op is not None or room.job_id is None:
        return room, []
    return _refresh_now(room)


def _live_command(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    if isinstance(ev, CommandFailed):
        return _error(room, f"{ev.command} failed: {ev.error}"), []
    assert isinstance(ev, CommandSucceeded)
    if ev.command == "REFRESH_OUTPUT_URL":  # set_output while LIVE refreshes the primary
        return replace(room, output_on=room.output_index), []
    return room, []


def _grace_over(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """Still down after the grace: repair — a drop only a callback reported once a read
    confirms it (``_health_observed`` decides on the answer)."""
    if room.drop_hinted and _push_known(room, p):
        return _show(replace(room, wait=None))
    return _repair(room, p)


def _degraded_read_failed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """The confirming read failed: ask again shortly. A poke's failed read (the grace timer
    still running) changes nothing."""
    assert isinstance(ev, QueryFailed)
    if room.wait is not None or ev.op != "show":
        return room, []
    room = _error(room, f"cannot confirm the reported drop: {ev.error}")
    return _with_timer(room, Wait.GRACE, _in(now, max(1.0, p.refresh_delay(0, ev.jitter))))


def _repair(room: Room, p: Policy) -> Result:
    """Widen the exit timeout once per job, then refresh. When a read blamed the output the
    job pushes to (its key refused, its ingest unreachable) and there is another, the ladder
    skips it: the primary's refused key or dead ingest goes straight to the first backup, a
    backup's goes back to the primary (a refresh, never a stop: the read decided, and a wrong
    hint costs a stream on another configured output)."""
    blamed = room.key_refused is not None or room.ingest_down is not None
    skip = room.output_on if blamed and p.outputs > 1 and room.output_on < p.outputs else None
    first = _skip(0, skip)
    room = replace(
        room, output_index=first, refresh_try=0, wait=None, drop_hinted=False, skip_output=skip
    )
    if skip is not None:  # the next output has its own key and ingest
        room = replace(room, key_refused=None, ingest_down=None)
    job_id = room.job_id
    if p.widen_exit_minutes > 0 and not room.widened and job_id is not None:
        room, seq = _with_op(_go(room, S.REFRESHING), Op.RESET_EXIT)
        return room, [ResetExitConfig(seq, job_id, p.widen_exit_minutes)]
    return _refresh_now(room)


def _refreshing_command(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, CommandSucceeded | CommandFailed)
    if ev.command == "RESET_EXIT_CONFIG":
        if isinstance(ev, CommandFailed):
            room = _error(room, f"RESET_EXIT_CONFIG failed: {ev.error}")
        return _refresh_now(replace(room, widened=isinstance(ev, CommandSucceeded)))
    if isinstance(ev, CommandFailed):
        return _refresh_failed(room, now, p, ev.jitter, f"REFRESH_OUTPUT_URL failed: {ev.error}")
    room = replace(room, output_on=room.output_index)  # the job now pushes there
    return _with_timer(room, Wait.REFRESH_CONFIRM, _in(now, p.refresh_confirm_s))


def _refreshing_timer(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    if room.wait is Wait.REFRESH_BACKOFF:
        return _refresh_now(room)
    if _push_known(room, p) and room.op is None:
        # no CONNECTED callback, but callbacks can be lost: read the job, and let its
        # stream_duration say whether the refresh worked (_health_observed decides)
        return _show(replace(room, wait=None))
    why = f"no CONNECTED within {p.refresh_confirm_s:g}s of refresh"
    return _refresh_failed(room, now, p, ev.jitter, why)


def _refreshing_read_failed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """The confirmation read failed: count the refresh as failed. A poke's failed read (the
    confirmation timer still running) changes nothing."""
    assert isinstance(ev, QueryFailed)
    if room.wait is not None:
        return room, []
    why = f"no CONNECTED within {p.refresh_confirm_s:g}s of refresh (read failed: {ev.error})"
    return _refresh_failed(room, now, p, ev.jitter, why)


# --- RESTARTING / BACKOFF / STOPPING


def _restart_stopped(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return _after_restart_stop(room, now, p, ev.jitter)


def _stop_failed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, StopFailed)
    room = _error(room, f"stop failed: {ev.error}")
    if not ev.temporary:
        if room.state is S.RESTARTING:
            return _quarantine(room, f"cannot stop broken job: {ev.error}")
        return _stopped(room, ev, now, p)
    delay = p.restart_delay(1, ev.jitter, ev.retry_after)
    return _with_timer(room, Wait.RETRY, _in(now, delay))


def _retry_stop(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    room = replace(room, wait=None)
    if room.job_id is None:
        return _list(room)
    return _stop(replace(room, op=None))


def _backoff_timer(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    room = replace(room, wait=None, next_retry_at=None)
    if room.order is Order.OFF:
        return _go(room, S.IDLE), []
    return _list(_go(room, S.STARTING))


def _backoff_listed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobsListed)
    active = _active(room, ev.jobs)
    if active and room.order is Order.ON:
        return _adopt(replace(room, next_retry_at=None), active, now, p)
    return room, []  # nothing runs: the backoff stands


def _stopping_listed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobsListed)
    if room.op is not None:
        return room, []
    active = _active(room, ev.jobs)
    if not active:
        return _stopped(room, ev, now, p)
    room = replace(room, job_id=active[0].job_id, job_state=active[0].state)
    room, actions = _stop(room)
    return room, actions + [StopJob(0, j.job_id) for j in active[1:]]


def _stopping_started(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobStarted)
    return _stop(replace(room, job_id=ev.job_id, job_state="WAITING"))


def _stopping_start_failed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobStartFailed)
    if ev.outcome_unknown:
        return _list(room)
    return _stopped(room, ev, now, p)


def _stopped(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """The job is gone: rest, or start again if the order came back ON meanwhile."""
    room = _go(_retire(room), S.IDLE, op=None, wait=None, next_retry_at=None)
    if room.order is Order.ON:
        return _list(_go(room, S.STARTING))
    return room, []


def _stopping_observed(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    assert isinstance(ev, JobObserved)
    if ev.job_id is None or ev.job_id != room.job_id or ev.state in ACTIVE_JOB_STATES:
        return room, []
    return _stopped(room, ev, now, p)


def _insert_script(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    """An operator's script, said by the job the room is on now. No ``op``: the room's own call
    in flight (a read, a refresh) neither blocks it nor is replaced by it. Without a job the
    request is refused: no action, and the driver answers ``not_live``."""
    assert isinstance(ev, InsertScriptRequested)
    if room.job_id is None:
        return room, []
    return room, [InsertScript(ev.request_id, room.job_id, ev.text, ev.play_type)]


def _ignore(room: Room, ev: Event, now: datetime, p: Policy) -> Result:
    return room, []


# ----------------------------------------------------------------------------- the table

_ALL = tuple(RoomState)
_RESTART = frozenset({S.RESTARTING, S.BACKOFF, S.QUARANTINED})
_ADOPT = frozenset({S.LIVE, S.STARTING, S.DEGRADED, S.REFRESHING})
_ON = {  # where an order ON leads from each state
    S.IDLE: {S.STARTING},
}
_OFF = {  # where an order OFF / window end leads from each state
    S.STARTING: {S.STOPPING, S.IDLE},
    S.LIVE: {S.STOPPING},
    S.DEGRADED: {S.STOPPING},
    S.REFRESHING: {S.STOPPING},
    S.RESTARTING: {S.STOPPING},
    S.STOPPING: {S.IDLE},
    S.BACKOFF: {S.IDLE},
}


def _rule(handler: Handler, *targets: RoomState | Iterable[RoomState]) -> Rule:
    flat: set[RoomState] = set()
    for t in targets:
        flat |= {t} if isinstance(t, RoomState) else set(t)
    return Rule(handler, frozenset(flat))


TABLE: dict[tuple[RoomState, type[Event]], Rule] = {
    # --- everywhere: desired state, operator reset, driver re-attach
    **{(s, OrderChanged): _rule(_order, _ON.get(s, ()), _OFF.get(s, ())) for s in _ALL},
    **{(s, WindowOpened): _rule(_order, _ON.get(s, ())) for s in _ALL},
    **{(s, WindowClosed): _rule(_window_closed, _OFF.get(s, ())) for s in _ALL},
    **{(s, Reset): _rule(_reset, S.UNKNOWN if s is S.QUARANTINED else ()) for s in _ALL},
    **{(s, Resumed): _rule(_resumed, S.UNKNOWN) for s in _ALL if s is not S.QUARANTINED},
    # --- operator requests (MQTT/CLI restart and refresh_output)
    **{
        (s, RestartRequested): _rule(_operator_restart, S.RESTARTING, S.BACKOFF)
        for s in (S.STARTING, S.LIVE, S.DEGRADED, S.REFRESHING)
    },
    (S.BACKOFF, RestartRequested): _rule(_backoff_timer, S.STARTING, S.IDLE),
    (S.LIVE, RefreshRequested): _rule(_operator_refresh, S.REFRESHING),
    (S.DEGRADED, RefreshRequested): _rule(_operator_refresh, S.REFRESHING),
    # --- operator script (MQTT/CLI insert_script): only a job held live says it; a request in
    # any other state is not in the table, and the driver answers it ``not_live``
    (S.LIVE, InsertScriptRequested): _rule(_insert_script),
    (S.DEGRADED, InsertScriptRequested): _rule(_insert_script),
    # --- UNKNOWN: reconcile before anything else
    (S.UNKNOWN, JobsListed): _rule(_reconcile_listed, _ADOPT, S.STARTING, S.STOPPING, S.IDLE),
    (S.UNKNOWN, JobObserved): _rule(_poke_list),
    (S.UNKNOWN, Poked): _rule(_poke_list),
    (S.UNKNOWN, QueryFailed): _rule(_list_failed, S.QUARANTINED),
    (S.UNKNOWN, TimerFired): _rule(_retry_list),
    # --- STARTING: list-and-adopt, start, wait for PROCESSING + CONNECTED
    (S.STARTING, JobsListed): _rule(_starting_listed, _ADOPT, S.BACKOFF, S.STOPPING, S.IDLE),
    (S.STARTING, JobStarted): _rule(_job_started),
    (S.STARTING, JobStartFailed): _rule(_start_failed, S.BACKOFF, S.QUARANTINED),
    (S.STARTING, JobObserved): _rule(_starting_observed, S.LIVE, _RESTART),
    (S.STARTING, RtmpStateReported): _rule(_starting_rtmp, S.LIVE),
    (S.STARTING, TimerFired): _rule(_starting_timer, _RESTART),
    (S.STARTING, QueryFailed): _rule(_list_failed, S.BACKOFF, S.QUARANTINED),
    (S.STARTING, Poked): _rule(_poke_show),
    # --- LIVE: watch; a drop degrades, a dead job restarts
    (S.LIVE, RtmpStateReported): _rule(_health_rtmp, S.DEGRADED, S.REFRESHING),
    (S.LIVE, JobObserved): _rule(_health_observed, S.DEGRADED, S.REFRESHING, _RESTART),
    (S.LIVE, TimerFired): _rule(_live_timer),
    (S.LIVE, Poked): _rule(_poke_show),
    (S.LIVE, OutputChanged): _rule(_live_output_changed),
    (S.LIVE, CommandSucceeded): _rule(_live_command),
    (S.LIVE, CommandFailed): _rule(_live_command),
    # --- DEGRADED: the service's own reconnect gets a grace period
    (S.DEGRADED, RtmpStateReported): _rule(_health_rtmp, S.LIVE),
    (S.DEGRADED, JobObserved): _rule(_health_observed, S.LIVE, S.REFRESHING, _RESTART),
    (S.DEGRADED, TimerFired): _rule(_grace_over, S.REFRESHING),
    (S.DEGRADED, QueryFailed): _rule(_degraded_read_failed),
    (S.DEGRADED, Poked): _rule(_poke_show),
    (S.DEGRADED, OutputChanged): _rule(_repair_output_changed, S.REFRESHING, S.UNKNOWN),
    # --- REFRESHING: widen the exit timeout, then REFRESH_OUTPUT_URL over every output
    (S.REFRESHING, CommandSucceeded): _rule(_refreshing_command),
    (S.REFRESHING, CommandFailed): _rule(_refreshing_command, _RESTART),
    (S.REFRESHING, TimerFired): _rule(_refreshing_timer, _RESTART),
    (S.REFRESHING, RtmpStateReported): _rule(_health_rtmp, S.LIVE),
    (S.REFRESHING, JobObserved): _rule(_health_observed, S.LIVE, _RESTART),
    (S.REFRESHING, QueryFailed): _rule(_refreshing_read_failed, _RESTART),
    (S.REFRESHING, Poked): _rule(_poke_show),
    (S.REFRESHING, OutputChanged): _rule(_repair_output_changed, S.UNKNOWN),
    # --- RESTARTING: the broken job is being stopped
    (S.RESTARTING, JobStopped): _rule(_restart_stopped, S.BACKOFF),
    (S.RESTARTING, StopFailed): _rule(_stop_failed, S.QUARANTINED),
    (S.RESTARTING, TimerFired): _rule(_retry_stop),
    # --- BACKOFF: countdown to the next list-and-start
    (S.BACKOFF, TimerFired): _rule(_backoff_timer, S.STARTING, S.IDLE),
    (S.BACKOFF, JobsListed): _rule(_backoff_listed, _ADOPT),
    (S.BACKOFF, Poked): _rule(_poke_list),
    # --- STOPPING: order OFF; make sure nothing of ours keeps pushing
    (S.STOPPING, JobsListed): _rule(_stopping_listed, S.IDLE, S.STARTING),
    (S.STOPPING, JobStarted): _rule(_stopping_started),
    (S.STOPPING, JobStartFailed): _rule(_stopping_start_failed, S.IDLE, S.STARTING),
    (S.STOPPING, JobStopped): _rule(_stopped, S.IDLE, S.STARTING),
    (S.STOPPING, StopFailed): _rule(_stop_failed, S.IDLE, S.STARTING),
    (S.STOPPING, TimerFired): _rule(_retry_stop),
    (S.STOPPING, JobObserved): _rule(_stopping_observed, S.IDLE, S.STARTING),
    (S.STOPPING, QueryFailed): _rule(_list_failed, S.QUARANTINED),
    (S.STOPPING, Poked): _rule(_poke_show),
    # IDLE and QUARANTINED take nothing but the rows at the top.
}


# ----------------------------------------------------------------------------- step


_ANSWERS: dict[type[Event], frozenset[Op]] = {  # which call each result can answer
    JobsListed: frozenset({Op.LIST}),
    JobStarted: frozenset({Op.START}),
    JobStartFailed: frozenset({Op.START}),
    JobStopped: frozenset({Op.STOP}),
    StopFailed: frozenset({Op.STOP}),
    JobObserved: frozenset({Op.SHOW}),
    QueryFailed: frozenset({Op.LIST, Op.SHOW}),
    CommandSucceeded: frozenset({Op.REFRESH, Op.RESET_EXIT}),
    CommandFailed: frozenset({Op.REFRESH, Op.RESET_EXIT}),
}


def _fresh_callback(room: Room, ev: RtmpStateReported) -> bool:
    """A callback counts only for the room's current job and only if not older than we know."""
    if room.job_id is None or ev.job_id != room.job_id:
        return False
    # Only link-state knowledge counts: a job read without RTMP state (the real API has none)
    # must not make a slightly older DISCONNECTED report look stale.
    return room.rtmp_at is None or ev.at >= room.rtmp_at


def step(room: Room, event: Event, now: datetime, policy: Policy) -> Result:
    """Apply ``event`` to ``room`` at ``now``: the new room and the actions to carry out."""
    if room.state is S.QUARANTINED and not isinstance(
        event, Reset | OrderChanged | WindowOpened | WindowClosed
    ):
        return room, []  # never act on a quarantined room without a Reset
    if isinstance(event, OpResult) and event.seq is not None:
        if room.op not in _ANSWERS.get(type(event), ()) or event.seq != room.op_seq:
            return room, []  # answer to a call the room no longer waits for
        room = replace(room, op=None)
    if isinstance(event, TimerFired) and (room.wait is None or event.seq != room.timer_seq):
        return room, []
    if isinstance(event, RtmpStateReported):
        if not _fresh_callback(room, event):
            return room, []
        # a time ahead of ours (forged, or a skewed clock) would make every genuine report
        # until then look stale: it counts as now (whole seconds, as callback times are)
        at = min(event.at, now.replace(microsecond=0))
        room = replace(room, rtmp_state=event.rtmp_state, rtmp_at=at)
    if isinstance(event, JobObserved) and event.job_id is not None and event.job_id == room.job_id:
        push = _next_push(room.push, event, now, policy)
        if event.rtmp_state is not None:  # one copy, not two: every poll of every room
            room = replace(room, job_state=event.state, last_observed_at=now, push=push,
                           rtmp_state=event.rtmp_state, rtmp_at=now)  # fmt: skip
        else:
            room = replace(room, job_state=event.state, last_observed_at=now, push=push)
    room = _settle(room, now, policy)
    rule = TABLE.get((room.state, type(event)))
    if rule is None:
        return room, []
    before = room.state
    room, actions = rule.handler(room, event, now, policy)
    if room.state is not before:
        room = replace(room, since=now)
    room, more = _watch_downtime(before, room, now, policy)
    return room, actions + more


def _watch_downtime(before: RoomState, room: Room, now: datetime, p: Policy) -> Result:
    """Track how long a room that should be on air has been off it since leaving LIVE; alert
    ``unrecovered`` once it exceeds ``unrecovered_alert_s`` (a dead stream must not look green).
    Checked on every event of the room (ladder timers, polls), cleared on LIVE or order OFF."""
    if room.state is S.LIVE or room.order is Order.OFF:
        if room.alert == ALERT_UNRECOVERED:
            return replace(room, alert=None, drop_since=None), [ClearAlert(ALERT_UNRECOVERED)]
        return (replace(room, drop_since=None) if room.drop_since else room), []
    if room.state is S.QUARANTINED:
        return room, []
    if room.drop_since is None and before is S.LIVE:
        room = replace(room, drop_since=now)
    if room.drop_since is None or room.alert is not None:
        return room, []
    down = (now - room.drop_since).total_seconds()
    if down < p.unrecovered_alert_s:
        return room, []
    message = f"not live for {down:.0f}s since the drop (now {room.state.value})"
    return replace(room, alert=ALERT_UNRECOVERED), [RaiseAlert(ALERT_UNRECOVERED, message)]


# ----------------------------------------------------------------------------- diagram


def mermaid() -> str:
    """The state diagram drawn from :data:`TABLE` (docs/state-machine.md embeds this output)."""
    edges: dict[tuple[RoomState, RoomState], list[str]] = {}
    for (source, event), rule in TABLE.items():
        for target in rule.targets:
            if target is not source:
                edges.setdefault((source, target), []).append(event.__name__)
    order = {s: i for i, s in enumerate(RoomState)}
    lines = ["stateDiagram-v2", "    [*] --> UNKNOWN"]
    for source, target in sorted(edges, key=lambda e: (order[e[0]], order[e[1]])):
        names = ", ".join(sorted(set(edges[(source, target)])))
        lines.append(f"    {source.value} --> {target.value}: {names}")
    return "\n".join(lines) + "\n"
