"""A room's state: the lifecycle states, the order, the one call and the one timer it waits
for, and the :class:`Room` record the pure machine folds events into (plus the
:class:`Snapshot` the outside world sees)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


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
    ingest_down: str | None = None  # the last read during this drop: the ingest is unreachable
    output_on: int = 0  # the output the job pushes to (its start, or its last refresh that took)
    skip_output: int | None = None  # this ladder skips it: the read blamed the job's own output
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
