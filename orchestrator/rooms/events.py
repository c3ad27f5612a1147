"""Events: what happened to a room, named in the past tense. Adapters (scheduler, callback
receiver, MQTT, poller) only ever *post events* into a room's queue through :class:`RoomSink`;
they never touch a room's state directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from orchestrator.rooms.state import Order


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events. ``cause`` is a short human/audit string (e.g. "mqtt:cmd-42").

    ``jitter`` is a number in [0, 1) that the driver draws from its seeded source when the event
    enters the room; any backoff the machine computes for this event uses it, so ``step`` stays
    free of randomness. Adapters leave the default (0.5 = no jitter).
    """

    cause: str = ""
    jitter: float = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderChanged(Event):
    """The desired state changed by hand (MQTT, CLI): ON until ``deadline`` (None = open-ended)."""

    order: Order
    deadline: datetime | None = None
    window_start: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowOpened(Event):
    """The schedule says the room must be live from ``window_start`` until ``deadline``."""

    window_id: str
    window_start: datetime
    deadline: datetime | None
    expected_delay_s: float = 0.0
    """Herd control: how long this room's start is expected to queue behind the tenant's start
    rate limit when many windows open at once (shown in the room state while STARTING)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowClosed(Event):
    """The schedule window ``window_id`` ended (or was removed by a reload/pause)."""

    window_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RtmpStateReported(Event):
    """A callback (or the probe) reported the job's RTMP link state. A hint, not the truth.

    A callback's body is not signed: on its own it never stops, restarts or refreshes a job
    (the room reads the job first). ``observed``: our own observation (the playback probe),
    which acts like a read that showed the link down; ``down_s``: how long that observation
    had already seen it down (the outage is counted from then, not from the report).
    """

    job_id: str
    rtmp_state: str  # CONNECTING CONNECTED DISCONNECTED RECONNECTING END
    at: datetime
    observed: bool = False
    down_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Poked(Event):
    """Something suggests the room's view may be stale: re-read the job (level-triggered)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset(Event):
    """An operator cleared the room (leaves QUARANTINED, resets the ladder)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputChanged(Event):
    """The RTMP target was replaced (key rotation); apply with REFRESH_OUTPUT_URL when live."""


# --- events the room machine and its driver define ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartRequested(Event):
    """An operator asked for a restart of the room's job (does not count towards quarantine)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RefreshRequested(Event):
    """An operator asked for REFRESH_OUTPUT_URL now (starts the refresh ladder at the primary)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InsertScriptRequested(Event):
    """An operator asked the room's live job to speak ``text`` (``INSERT_PLAY_SCRIPT``).

    Accepted only while the room is on a job it holds live (LIVE, DEGRADED): the machine then
    emits :class:`InsertScript`. Anything else is refused; either way the driver answers the
    caller waiting under ``request_id`` (an id the driver hands out, opaque to the machine).
    """

    request_id: int
    text: str
    play_type: str = "PLAY_NOW"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed(Event):
    """A worker (re)attached to the room (startup, reload, crash recovery): reconcile first.

    Whatever was in flight is forgotten; the room goes to UNKNOWN and lists its jobs.
    """


@dataclass(frozen=True, slots=True)
class ObservedJob:
    """One job as a list or show call returned it. ``rtmp_state`` only when the source knows."""

    job_id: str
    state: str
    rtmp_state: str | None = None
    duration: float | None = None
    stream_duration: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpResult(Event):
    """Base of results of actions the room asked for. ``seq`` is the action's ``seq``.

    A result whose ``seq`` is not the room's current ``op_seq`` is stale (the room moved on)
    and is ignored. ``seq=None`` marks an unsolicited observation (poller, startup adoption).
    """

    seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsListed(OpResult):
    """The room's WAITING/PROCESSING jobs, as listed by MetaStudio."""

    jobs: tuple[ObservedJob, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted(OpResult):
    """The start call answered with a job id."""

    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStartFailed(OpResult):
    """The start call failed.

    ``outcome_unknown``: the request may have reached the service (timeout, ghost, 409): list
    before anything else. ``temporary``: retry after backoff (``retry_after`` honoured).
    Neither: permanent (bad request, auth, unknown room) — quarantine with the reason.
    """

    error: str
    temporary: bool = False
    outcome_unknown: bool = False
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobObserved(OpResult):
    """MetaStudio's view of a job. ``state`` None: not found / no longer WAITING or PROCESSING.

    ``job_id`` None (poller): the room has no running job at all.
    """

    job_id: str | None
    state: str | None
    rtmp_state: str | None = None
    duration: float | None = None
    """The job's ``duration`` (seconds live) as the service reported it, when it did."""
    stream_duration: float | None = None
    """The job's ``stream_duration`` (seconds actually pushed), when reported: see PushMark."""
    error: str | None = None
    """The job's ``error_info`` as ``code: message`` (masked), when a read carried one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStopped(OpResult):
    """The stop call succeeded (or the job was already gone)."""

    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StopFailed(OpResult):
    """The stop call failed. Temporary: retry the stop after a backoff."""

    job_id: str
    error: str
    temporary: bool = True
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryFailed(OpResult):
    """A ListJobs/ShowJob call failed."""

    op: str  # "list" | "show"
    error: str
    temporary: bool = True
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSucceeded(OpResult):
    """A runtime command (REFRESH_OUTPUT_URL, RESET_EXIT_CONFIG) was accepted."""

    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandFailed(OpResult):
    """A runtime command failed."""

    command: str
    error: str
    temporary: bool = True
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    """The room's timer ``seq`` is due. Any other ``seq`` than the room's ``timer_seq`` is stale."""

    seq: int


# --- actions: what the driver must do ------------------------------------------------------------


class RoomSink(Protocol):
    """Where adapters deliver events. ``post`` never blocks; False means the room is unknown."""

    def post(self, room_id: str, event: Event) -> bool: ...
