"""Actions: what the pure machine asks its driver to do, named in the imperative."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Action:
    """Base of all actions."""


@dataclass(frozen=True, slots=True)
class ListJobs(Action):
    """List the room's WAITING/PROCESSING jobs → JobsListed | QueryFailed(op="list")."""

    seq: int


@dataclass(frozen=True, slots=True)
class ShowJob(Action):
    """Re-read one job → JobObserved | QueryFailed(op="show") (404 → JobObserved(state=None))."""

    seq: int
    job_id: str


@dataclass(frozen=True, slots=True)
class StartJob(Action):
    """Record the start intent (room, window_key, attempt), then start → JobStarted|JobStartFailed.

    If the intent already exists the driver must not call start: it answers
    JobStartFailed(outcome_unknown=True) so the room lists first.
    """

    seq: int
    window_key: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StopJob(Action):
    """Stop a job → JobStopped | StopFailed. ``seq`` 0: fire and forget (stray jobs)."""

    seq: int
    job_id: str


@dataclass(frozen=True, slots=True)
class RefreshOutput(Action):
    """REFRESH_OUTPUT_URL with output ``output_index`` (0 = primary, 1.. = backups)."""

    seq: int
    job_id: str
    output_index: int


@dataclass(frozen=True, slots=True)
class ResetExitConfig(Action):
    """RESET_EXIT_CONFIG max_exception_waiting_duration = ``minutes``."""

    seq: int
    job_id: str
    minutes: int


@dataclass(frozen=True, slots=True)
class InsertScript(Action):
    """``INSERT_PLAY_SCRIPT`` on ``job_id``. The answer goes to the caller ``request_id``, never
    back into the room: it changes nothing the machine tracks, so it is not a call the room
    waits for (no ``op``) and a repair in flight does not wait for it either."""

    request_id: int
    job_id: str
    text: str
    play_type: str


@dataclass(frozen=True, slots=True)
class SetTimer(Action):
    """Deliver TimerFired(seq) at ``at``; replaces the room's previous timer."""

    seq: int
    at: datetime


@dataclass(frozen=True, slots=True)
class RaiseAlert(Action):
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class ClearAlert(Action):
    kind: str
