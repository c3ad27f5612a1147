"""Room state, events and actions: plain frozen data shared by the pure machine and its drivers.

Events are named in the past tense (something happened); actions in the imperative (do this).
Adapters (scheduler, callback receiver, MQTT, poller) only ever *post events* into a room's
queue through :class:`RoomSink`; they never touch a room's state directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class RoomState(StrEnum):
    IDLE = "IDLE"  # order OFF, no job
    STARTING = "STARTING"  # start sent or job WAITING; waiting for PROCESSING + CONNECTED
    LIVE = "LIVE"  # job PROCESSING and RTMP CONNECTED
    DEGRADED = "DEGRADED"  # link DISCONNECTED/RECONNECTING; grace period
    REFRESHING = "REFRESHING"  # REFRESH_OUTPUT_URL sent
    RESTARTING = "RESTARTING"  # stop sent for a broken job; a new start follows
    BACKOFF = "BACKOFF"  # waiting before the next attempt
    STOPPING = "STOPPING"  # order OFF; stop sent
    QUARANTINED = "QUARANTINED"  # ladder exhausted or permanent error; needs Reset
    UNKNOWN = "UNKNOWN"  # after startup / lost contact, until reconciled


class Order(StrEnum):
    OFF = "OFF"
    ON = "ON"


# --- events that adapters post (the machine may define more in this module) -----------------


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


class RoomSink(Protocol):
    """Where adapters deliver events. ``post`` never blocks; False means the room is unknown."""

    def post(self, room_id: str, event: Event) -> bool: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the outside world may see of a room (retained MQTT state, /rooms JSON)."""

    room_id: str
    state: RoomState
    order: Order
    job_id: str | None
    since: datetime | None
    attempt: int
    next_retry_at: datetime | None
    last_error: str | None
    alert: str | None
    extra: dict[str, object] = field(default_factory=dict)


# --- the room ------------------------------------------------------------------------------------


class Op(StrEnum):
    """The one call a room waits for (at most one at a time, matched by ``op_seq``)."""

    LIST = "LIST"
    START = "START"
    STOP = "STOP"
    SHOW = "SHOW"
    REFRESH = "REFRESH"
    RESET_EXIT = "RESET_EXIT"


class Wait(StrEnum):
    """What the room's single timer (``timer_seq``) stands for."""

    START_CONFIRM = "START_CONFIRM"  # STARTING: PROCESSING + CONNECTED due
    STALE = "STALE"  # LIVE: re-read the job if nothing confirmed it
    PUSH_CHECK = "PUSH_CHECK"  # LIVE: a read showed the push falling behind; read again
    GRACE = "GRACE"  # DEGRADED: the service's own reconnect
    REFRESH_CONFIRM = "REFRESH_CONFIRM"  # REFRESHING: a refresh should have reconnected
    REFRESH_BACKOFF = "REFRESH_BACKOFF"  # REFRESHING: before the next refresh
    RETRY = "RETRY"  # BACKOFF/UNKNOWN/RESTARTING/STOPPING: before the next attempt


_TIMES: tuple[str, ...] = (
    "deadline", "window_start", "since", "next_retry_at", "last_observed_at", "rtmp_at",
    "drop_since", "expected_start_at",
)  # fmt: skip


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class PushMark:
    """What the reads of the room's job say about its push, to notice a dead link when the
    callbacks are lost (the job read itself carries no RTMP state).

    ``duration`` grows while the job is live and ``stream_duration`` only while it pushes, so
    their difference, the *lag*, grows exactly while the link is down. ``lag_ref`` is the lag
    at the last read that showed a whole interval of pushing, or at the first read since the
    room went LIVE that showed any ``stream_duration``; ``None`` until then, so a service that
    does not fill ``stream_duration`` while live (unconfirmed) never arms the check. Link
    callbacks do not disarm it: their body is not signed, and a forged CONNECTED must not hide
    a drop. ``stalled_s``: how much the lag had grown at the last read. ``advanced_since``: the
    stream grew between the read at this time and the last one. Not persisted: a restarted
    daemon re-arms it from its next reads.
    """

    job_id: str
    duration: float
    stream: float
    read_at: datetime
    lag_ref: float | None = None
    stalled_s: float = 0.0
    advanced_since: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Room:
    """Everything the machine knows about one room. Frozen: ``step`` returns a new one."""

    room_id: str
    state: RoomState = RoomState.UNKNOWN
    since: datetime | None = None
    # desired state
    order: Order = Order.OFF
    deadline: datetime | None = None
    window_id: str | None = None
    window_start: datetime | None = None
    # observed
    job_id: str | None = None
    job_state: str | None = None
    rtmp_state: str | None = None
    rtmp_at: datetime | None = None
    last_observed_at: datetime | None = None
    retired: tuple[str, ...] = ()  # jobs we stopped; never adopted again
    # the call in flight and the timer
    op: Op | None = None
    op_seq: int = 0
    wait: Wait | None = None
    timer_seq: int = 0
    seq: int = 0  # last sequence number handed out (ops and timers share it)
    # ladder counters
    attempt: int = 0  # start attempts in this window (start-intent key)
    retries: int = 0  # failed attempts since the room was last stably LIVE (backoff exponent)
    restart_failures: tuple[datetime, ...] = ()  # job failures within quarantine_window_s
    output_index: int = 0
    refresh_try: int = 0  # tries on the current output
    widened: bool = False  # RESET_EXIT_CONFIG applied to the current job
    start_unknown: bool = False  # the last start's outcome is unknown; its list is pending
    drop_since: datetime | None = None
    drop_hinted: bool = False  # the open drop rests on a callback alone: a read must confirm it
    key_refused: str | None = None  # a read during this drop: the ingest refuses the key
    expected_start_at: datetime | None = None  # herd control: queued behind the start limit
    next_retry_at: datetime | None = None
    last_error: str | None = None
    alert: str | None = None
    push: PushMark | None = None  # not persisted (see PushMark)

    @property
    def window_key(self) -> str:
        """Idempotency key of the current window (with ``attempt``): id@start."""
        start = _iso(self.window_start) or "-"
        return f"{self.window_id or 'manual'}@{start}"

    def snapshot(self) -> Snapshot:
        return Snapshot(
            room_id=self.room_id,
            state=self.state,
            order=self.order,
            job_id=self.job_id,
            since=self.since,
            attempt=self.attempt,
            next_retry_at=self.next_retry_at,
            last_error=self.last_error,
            alert=self.alert,
            extra={
                "deadline": _iso(self.deadline),
                "window_key": self.window_key if self.order is Order.ON else None,
                "job_state": self.job_state,
                "rtmp_state": self.rtmp_state,
                "retries": self.retries,
                "restart_failures": len(self.restart_failures),
                "output_index": self.output_index,
                "refresh_try": self.refresh_try,
                "last_observed_at": _iso(self.last_observed_at),
                "drop_since": _iso(self.drop_since),  # off air since (when it stopped)
                "expected_start_at": (
                    _iso(self.expected_start_at) if self.state is RoomState.STARTING else None
                ),
            },
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict for ``Store.save_room``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "push":
                continue
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif f.name == "restart_failures":
                value = [t.isoformat() for t in value]
            elif f.name == "retired":
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Room:
        """Inverse of :meth:`to_json`; unknown keys are ignored, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for name in _TIMES:
            if name in kw:
                kw[name] = _dt(kw[name])
        if "state" in kw:
            kw["state"] = RoomState(kw["state"])
        if "order" in kw:
            kw["order"] = Order(kw["order"])
        if kw.get("op") is not None:
            kw["op"] = Op(kw["op"])
        if kw.get("wait") is not None:
            kw["wait"] = Wait(kw["wait"])
        kw["restart_failures"] = tuple(
            t for t in (_dt(v) for v in kw.get("restart_failures", ())) if t is not None
        )
        kw["retired"] = tuple(kw.get("retired", ()))
        return cls(**kw)
