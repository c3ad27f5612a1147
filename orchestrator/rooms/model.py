"""Room state, events and actions: plain frozen data shared by the pure machine and its drivers.

Events are named in the past tense (something happened); actions in the imperative (do this).
Adapters (scheduler, callback receiver, MQTT, poller) only ever *post events* into a room's
queue through :class:`RoomSink`; they never touch a room's state directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol


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
    """Base of all events. ``cause`` is a short human/audit string (e.g. "mqtt:cmd-42")."""

    cause: str = ""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowClosed(Event):
    """The schedule window ``window_id`` ended (or was removed by a reload/pause)."""

    window_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RtmpStateReported(Event):
    """A callback (or the probe) reported the job's RTMP link state. A hint, not the truth."""

    job_id: str
    rtmp_state: str  # CONNECTING CONNECTED DISCONNECTED RECONNECTING END
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Poked(Event):
    """Something suggests the room's view may be stale: re-read the job (level-triggered)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset(Event):
    """An operator cleared the room (leaves QUARANTINED, resets the ladder)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputChanged(Event):
    """The RTMP target was replaced (key rotation); apply with REFRESH_OUTPUT_URL when live."""


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
