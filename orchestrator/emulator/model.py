"""The emulated tenant's records: rooms, jobs, injected API faults, and their constants.

Plain data (no behaviour beyond derived properties), shared by every part of the emulator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from orchestrator.emulator.clock import TimerHandle

__all__ = [
    "DEFAULT_EXCEPTION_WAIT_MIN",
    "DEFAULT_RATE_LIMITS",
    "DEFAULT_SCRIPTS",
    "FAULT_OPERATIONS",
    "NOT_FOUND",
    "REGION_RATE_LIMITS",
    "REVIEWED_COMMANDS",
    "RUNNING",
    "Bucket",
    "Fault",
    "Job",
    "MediaBackend",
    "Room",
    "rate_limits_for",
    "rfc3339",
]

NOT_FOUND = "MSS.00000003"
DEFAULT_EXCEPTION_WAIT_MIN = 3

FAULT_OPERATIONS = ("start", "stop", "show", "list", "command", "any")
RUNNING = ("WAITING", "PROCESSING")
REVIEWED_COMMANDS = ("REWRITE_PLAY_SCRIPT", "REWRITE_INTERACTION_RULES")
DEFAULT_SCRIPTS: list[dict[str, Any]] = [
    {
        "script_name": "default-scene",
        "shoot_scripts": [
            {"sequence_no": i, "title": f"paragraph {i}", "text_config": {"text": f"Hello {i}."}}
            for i in range(1, 4)
        ],
    }
]


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MediaBackend(Protocol):
    """Optional real media push (see :mod:`orchestrator.emulator.media`)."""

    def start(
        self, job_id: str, url: str, stream_key: str, on_exit: Callable[[], None]
    ) -> None: ...

    def stop(self, job_id: str) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Fault:
    """Fail or delay the next ``count`` calls of ``operation`` (admin API).

    With ``for_s`` the fault is a storm in time instead: every matching call for that many
    (simulated) seconds, ``count`` ignored. ``probability`` < 1 hits only that share of the
    matching calls (a partial storm: the gateway answers some calls and fails others).
    """

    operation: str = "any"
    status: int | None = None
    error_code: str = "MSS.00000004"  # the page's 500 body (seed line 1815)
    error_msg: str = "Internal Error"
    count: int = 1
    latency_ms: float = 0.0
    ghost: bool = False
    for_s: float | None = None
    probability: float = 1.0


@dataclass(slots=True)
class Room:
    room_id: str
    body: dict[str, Any]
    create_time: float
    update_time: float
    last_job_start_time: float | None = None
    last_job_end_time: float | None = None
    last_job_status: str | None = None
    confirm_state: str = "CONFIRMED"

    @property
    def room_name(self) -> str:
        return str(self.body.get("room_name") or self.room_id)


@dataclass(slots=True)
class Job:
    job_id: str
    room_id: str
    room_name: str
    create_time: float
    request: dict[str, Any]
    output_url: str
    stream_key: str
    callback_config: dict[str, Any] | None
    exit_config: dict[str, Any]
    single_job_in_room: bool
    rtc_room_info: dict[str, Any]
    live_event_report_url: str
    state: str = "WAITING"
    update_time: float = 0.0
    start_time: float | None = None
    end_time: float | None = None
    rtmp_state: str | None = None
    error_info: dict[str, str] | None = None
    hold_until: float | None = None
    abnormal_since: float | None = None
    connected_since: float | None = None
    stream_seconds: float = 0.0
    script_pos: int = 0
    timers: dict[str, TimerHandle] = field(default_factory=dict)
    insert_commands: list[dict[str, Any]] = field(default_factory=list)
    # REWRITE_* commands awaiting manual confirmation (rule-/script-commands, batch confirm)
    pending_commands: list[dict[str, Any]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.state in RUNNING


# Per-tenant requests/second (api doc §11.3, cn-north-4); undocumented groups: 4/s writes,
# 20/s reads as the doc suggests.
DEFAULT_RATE_LIMITS: dict[str, float] = {
    "create_room": 5,
    "list_rooms": 20,
    "show_room": 20,
    "update_room": 5,
    "delete_room": 4,
    "start": 4,
    "list": 20,
    "list_tenant": 20,
    "stop": 4,
    "show": 20,
    "command": 4,
    "report": 4,
    "insert_commands": 20,
    "show_warning": 20,
    "confirm_room": 4,
    "batch_confirm": 4,
    "list_rule_commands": 20,
    "list_script_commands": 20,
}
# api doc §11.3: cn-east-3 and Singapore publish 3/s writes and 10/s reads for the room and start
# APIs; their other groups are not published, so the same write/read split is assumed
_SMALL_REGION: dict[str, float] = {
    group: (10 if rate >= 20 else 3) for group, rate in DEFAULT_RATE_LIMITS.items()
}
REGION_RATE_LIMITS: dict[str, dict[str, float]] = {
    "cn-north-4": DEFAULT_RATE_LIMITS,
    "cn-east-3": _SMALL_REGION,
    "ap-southeast-3": _SMALL_REGION,
}


def rate_limits_for(region: str) -> dict[str, float]:
    """The documented per-tenant limits of ``region`` (cn-north-4's for an unknown region)."""
    return dict(REGION_RATE_LIMITS.get(region, DEFAULT_RATE_LIMITS))


class Bucket:
    """Token bucket on the simulation clock (a burst of ``rate`` then ``rate`` per second)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
