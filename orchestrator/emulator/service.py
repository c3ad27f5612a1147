"""The emulated MetaStudio tenant: rooms, smart-live jobs, the RTMP link, commands, callbacks.

Pure in-memory state driven by a :class:`~orchestrator.emulator.clock.Clock`; the HTTP layer
(:mod:`orchestrator.emulator.app`) only authenticates, parses and renders. Behaviour that the
documentation leaves open is decided here, once, and listed in this docstring:

* a job is ``WAITING`` for ``waiting_s`` then ``PROCESSING``; the link goes ``CONNECTING`` →
  ``CONNECTED`` after ``connect_s``; ``stop`` → ``SUCCEED`` (an RTMP ``END`` callback first);
  stopping an already finished job answers 200 and changes nothing;
* ``job_run_config.single_job_in_room`` defaults to ``true``; a start in a room that already has
  a ``WAITING``/``PROCESSING`` job answers **409** ``MSS.00000003`` (api doc §11.2 allows 400 or
  409; 409 maps onto our ``Conflict`` error and is unambiguous for callers);
* a broken link: ``DISCONNECTED``, then every ``reconnect_interval_s`` a ``RECONNECTING`` attempt;
  if still abnormal after ``max_exception_waiting_duration`` minutes (default 3, 0 = never) the
  service sends ``END`` and the job ends ``FAILED``; ``REFRESH_OUTPUT_URL`` replaces the target,
  ends any forced hold and reconnects (``CONNECTING`` → ``CONNECTED``);
* ``max_live_duration`` (hours) ends the job ``SUCCEED`` exactly at the deadline whatever the
  ``auto_stop_mode``;
* unknown room/job → 404 ``MSS.00000003``; commands on a finished job → 400 ``MSS.00000003``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from orchestrator.emulator.callbacks import CallbackDispatcher, CallbackEvent, UriMode
from orchestrator.emulator.clock import Clock, ManualClock, RealClock, TimerHandle
from orchestrator.emulator.platform import (
    FAULT_KINDS,
    PUSH_ERRORS,
    IngestFault,
    PlatformFaults,
    ingest_of,
)
from orchestrator.emulator.validation import (
    ApiError,
    bad_request,
    validate_batch_confirm,
    validate_command,
    validate_confirm_room,
    validate_exit_config,
    validate_list_query,
    validate_room_body,
    validate_start_body,
)

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "REGION_RATE_LIMITS",
    "ApiError",
    "EmulatorService",
    "Fault",
    "Job",
    "MediaBackend",
    "Room",
    "rate_limits_for",
    "rfc3339",
]

log = structlog.get_logger(__name__)

NOT_FOUND = "MSS.00000003"
DEFAULT_EXCEPTION_WAIT_MIN = 3
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


FAULT_OPERATIONS = ("start", "stop", "show", "list", "command", "any")
_RUNNING = ("WAITING", "PROCESSING")
_REVIEWED_COMMANDS = ("REWRITE_PLAY_SCRIPT", "REWRITE_INTERACTION_RULES")
_DEFAULT_SCRIPTS: list[dict[str, Any]] = [
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
        return self.state in _RUNNING


class _Bucket:
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


class EmulatorService:
    """One emulated tenant (project). Use ``async with service:`` or the app lifespan."""

    def __init__(
        self,
        project_id: str,
        credentials: Mapping[str, str],
        *,
        seed: int | None = None,
        time_scale: float = 1.0,
        clock: Clock | None = None,
        region: str = "cn-north-4",
        waiting_s: float = 1.0,
        connect_s: float = 1.0,
        reconnect_interval_s: float = 5.0,
        script_switch_s: float = 30.0,
        reply_finish_s: float = 3.0,
        rate_limits: Mapping[str, float] | None = None,
        callback_uri_mode: UriMode = "path",
        callback_transport: Any = None,
        callback_retry_delays: tuple[float, ...] = (0.2, 1.0, 3.0),
        media: MediaBackend | None = None,
        wallclock: Callable[[], float] = time.time,
        push_error_info: bool = True,
    ) -> None:
        self.project_id = project_id
        self.region = region
        self.credentials = dict(credentials)
        self.seed = seed
        self.clock: Clock = clock if clock is not None else RealClock(time_scale)
        self.wallclock = wallclock
        self.waiting_s = waiting_s
        self.connect_s = connect_s
        self.reconnect_interval_s = reconnect_interval_s
        self.script_switch_s = script_switch_s
        self.reply_finish_s = reply_finish_s
        self.rate_limits = rate_limits_for(region) if rate_limits is None else dict(rate_limits)
        self.media = media
        self.push_error_info = push_error_info
        """Show an ingest's refusal in a running job's ``error_info`` (see PUSH_ERRORS)."""
        self._rng = random.Random(seed)
        self._report_secret = secrets.token_bytes(16)
        self.callbacks = CallbackDispatcher(
            rng=random.Random(self._rng.getrandbits(64)),
            uri_mode=callback_uri_mode,
            transport=callback_transport,
            wallclock=wallclock,
            retry_delays=callback_retry_delays,
        )
        self.rooms: dict[str, Room] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, float] = {}
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.commands: list[dict[str, Any]] = []
        self.starts = 0
        self._buckets: dict[str, _Bucket] = {}
        self.platform = PlatformFaults()
        self._started = False
        # observers of every RTMP state change (job, new state): CLI output, tests, media
        self.rtmp_listeners: list[Callable[[Job, str], None]] = []

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.callbacks.start()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            for job in self.jobs.values():
                self._cancel_timers(job)
                if self.media is not None:
                    self.media.stop(job.job_id)
            if self.media is not None:
                await self.media.aclose()
            await self.callbacks.stop()

    async def __aenter__(self) -> EmulatorService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def advance(self, seconds: float) -> None:
        """Advance a :class:`ManualClock` (firing due simulation steps), then flush callbacks."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a ManualClock")
        self.clock.advance(seconds)
        await self.callbacks.join()

    def reset(self) -> None:
        """Forget every job, fault, token and counter; rooms seeded at start-up stay."""
        for job in self.jobs.values():
            self._cancel_timers(job)
            if self.media is not None:
                self.media.stop(job.job_id)
        self.jobs.clear()
        self.faults.clear()
        self.tokens.clear()
        self.calls.clear()
        self.commands.clear()
        self.starts = 0
        self._buckets.clear()
        self.platform.clear()
        self.callbacks.knobs.drop_rate = 0.0
        self.callbacks.knobs.duplicate_rate = 0.0
        self.callbacks.knobs.reorder = False
        self.callbacks.knobs.delay_ms = 0.0
        for room in self.rooms.values():
            room.last_job_status = room.last_job_start_time = room.last_job_end_time = None

    # ----------------------------------------------------------------- helpers

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _hex(self, nbytes: int = 16) -> str:
        return f"{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def now(self) -> float:
        return self.clock.now()

    def record_call(self, operation: str) -> None:
        self.calls[operation] += 1

    def check_rate(self, group: str) -> None:
        rate = self.rate_limits.get(group)
        if not rate:
            return
        now = self.now()
        bucket = self._buckets.get(group)
        if bucket is None:
            bucket = self._buckets[group] = _Bucket(rate, now)
        if not bucket.take(now):
            raise ApiError(429, "APIGW.0308", "The throttling threshold has been reached")

    def take_fault(self, operation: str) -> Fault | None:
        fault_op = "list" if operation in ("list", "list_tenant") else operation
        for fault in self.faults:
            if fault.for_s is None and fault.count <= 0:
                continue
            if fault.operation not in (fault_op, "any"):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue  # this call gets through the partial storm
            if fault.for_s is None:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
            return fault
        return None

    def clear_faults(self) -> int:
        """Remove every pending fault; return how many there were."""
        n = len(self.faults)
        self.faults.clear()
        return n

    def add_fault(self, fault: Fault) -> None:
        if fault.operation not in FAULT_OPERATIONS:
            raise bad_request(f"operation must be one of {', '.join(FAULT_OPERATIONS)}")
        if fault.count < 1:
            raise bad_request("count must be >= 1")
        if not 0.0 < fault.probability <= 1.0:
            raise bad_request("probability must be in (0, 1]")
        if fault.for_s is not None:
            if not fault.for_s > 0:
                raise bad_request("for_s must be > 0")

            def end() -> None:  # by identity: two storms may have equal fields
                self.faults[:] = [f for f in self.faults if f is not fault]

            self.clock.call_later(fault.for_s, end)  # simulated seconds, like every delay
        self.faults.append(fault)

    # ----------------------------------------------------------------- rooms

    def add_room(self, room_id: str | None = None, body: Mapping[str, Any] | None = None) -> Room:
        """Seed or create a room (no validation beyond what the caller did)."""
        rid = room_id or self.new_id()
        data = dict(body or {})
        data.setdefault("room_name", rid)
        now = self.now()
        room = Room(room_id=rid, body=data, create_time=now, update_time=now)
        self.rooms[rid] = room
        return room

    def create_room(self, body: Any) -> dict[str, Any]:
        req = validate_room_body(body)
        room = self.add_room(None, req)
        return {"room_id": room.room_id}

    def _room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise ApiError(404, NOT_FOUND, f"Smart live room {room_id} does not exist")
        return room

    def room_view(self, room: Room) -> dict[str, Any]:
        out = dict(room.body)
        out.update(
            room_id=room.room_id,
            project_id=self.project_id,
            room_type=room.body.get("room_type", "NORMAL"),
            room_state="ENABLE",
            confirm_state=room.confirm_state,
            view_mode=room.body.get("view_mode", "VERTICAL"),
            create_time=rfc3339(room.create_time),
            update_time=rfc3339(room.update_time),
            script_version=str(int(room.update_time)),
        )
        return out

    def show_room(self, room_id: str) -> dict[str, Any]:
        return self.room_view(self._room(room_id))

    def update_room(self, room_id: str, body: Any) -> dict[str, Any]:
        room = self._room(room_id)
        room.body = validate_room_body(body)
        room.update_time = self.now()
        return self.room_view(room)

    def delete_room(self, room_id: str) -> None:
        self._room(room_id)
        if any(j.room_id == room_id and j.running for j in self.jobs.values()):
            raise bad_request("room has a running job; stop it first")
        del self.rooms[room_id]

    def list_rooms(self, query: Mapping[str, str]) -> dict[str, Any]:
        q = validate_list_query({k: v for k, v in query.items() if k in ("offset", "limit")})
        rooms = sorted(self.rooms.values(), key=lambda r: (r.create_time, r.room_id))
        name = (query.get("room_name") or "").lower()
        if name:
            rooms = [r for r in rooms if name in r.room_name.lower()]
        items = []
        for room in rooms:
            base = {
                k: v
                for k, v in self.room_view(room).items()
                if k
                in (
                    "room_id",
                    "project_id",
                    "room_name",
                    "room_type",
                    "room_state",
                    "view_mode",
                    "room_description",
                    "priv_data",
                    "confirm_state",
                    "create_time",
                    "update_time",
                )
            }
            base.update(
                last_job_start_time=rfc3339(room.last_job_start_time),
                last_job_end_time=rfc3339(room.last_job_end_time),
                last_job_status=room.last_job_status,
            )
            items.append(base)
        page = items[q["offset"] : q["offset"] + q["limit"]]
        return {"count": len(items), "smart_live_rooms": page}

    # ----------------------------------------------------------------- jobs

    def _job(self, room_id: str, job_id: str) -> Job:
        self._room(room_id)
        job = self.jobs.get(job_id)
        if job is None or job.room_id != room_id:
            raise ApiError(404, NOT_FOUND, f"Smart live job {job_id} does not exist")
        return job

    def job_by_id(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, NOT_FOUND, f"Smart live job {job_id} does not exist")
        return job

    def start_job(self, room_id: str, body: Any, *, base_url: str) -> dict[str, Any]:
        room = self._room(room_id)
        req = validate_start_body(body)
        merged_outputs = req.get("output_urls") or room.body.get("output_urls") or []
        merged_keys = req.get("stream_keys") or room.body.get("stream_keys") or [""]
        if not merged_outputs:
            raise bad_request("output_urls is required (neither the request nor the room has one)")
        run_cfg = req.get("job_run_config") or {}
        single = run_cfg.get("single_job_in_room")
        single = True if single is None else bool(single)
        if single and any(j.room_id == room_id and j.running for j in self.jobs.values()):
            raise ApiError(
                409,
                "MSS.00000003",
                "Invalid parameter: the room already has a running job (single_job_in_room)",
            )
        policy = req.get("play_policy") or room.body.get("play_policy") or {}
        exit_cfg: dict[str, Any] = {
            "max_live_duration": 0,
            "auto_stop_mode": "FORCE_EXIT",
            "max_exception_waiting_duration": DEFAULT_EXCEPTION_WAIT_MIN,
        }
        exit_cfg.update(
            {k: v for k, v in (policy.get("live_exit_config") or {}).items() if v is not None}
        )
        callback_cfg = req.get("live_event_callback_config") or room.body.get(
            "live_event_callback_config"
        )
        now = self.now()
        job_id = self.new_id()
        users = [
            {
                "user_type": "PLAYER",
                "user_id": self._hex(8),
                "signature": self._hex(32),
                "ctime": int(now) + 86400,
            }
        ]
        if policy.get("need_independent_capture_client"):
            users.insert(
                0,
                {
                    "user_type": "CAPTURE",
                    "user_id": self._hex(8),
                    "signature": self._hex(32),
                    "ctime": int(now) + 86400,
                },
            )
        expires_ms = int((now + 86400) * 1000)
        job = Job(
            job_id=job_id,
            room_id=room_id,
            room_name=room.room_name,
            create_time=now,
            update_time=now,
            request=req,
            output_url=str(merged_outputs[0]),
            stream_key=str(merged_keys[0]) if merged_keys else "",
            callback_config=dict(callback_cfg) if callback_cfg else None,
            exit_config=exit_cfg,
            single_job_in_room=single,
            rtc_room_info={"app_id": self._hex(16), "room_id": job_id, "users": users},
            live_event_report_url=(
                f"{base_url.rstrip('/')}/v1/{self.project_id}/smart-live-rooms/{room_id}"
                f"/smart-live-jobs/{job_id}/live-event-report"
                f"?auth_key={self.report_auth_key(job_id, expires_ms)}&expires_time={expires_ms}"
            ),
        )
        self.jobs[job_id] = job
        self.starts += 1
        room.last_job_start_time = now
        room.last_job_status = "WAITING"
        self._timer(job, "state", self.waiting_s, lambda: self._begin_processing(job))
        log.info("emulator_job_started", room_id=room_id, job_id=job_id)
        warnings = self._warnings(room)
        return {
            "job_id": job_id,
            "rtc_room_info": job.rtc_room_info,
            "live_event_report_url": job.live_event_report_url,
            "live_event_callback_config": job.callback_config,
            "live_warning_info": warnings,
            "limit_duration": int(exit_cfg.get("max_live_duration") or 0),
        }

    def report_auth_key(self, job_id: str, expires_ms: int) -> str:
        msg = f"{job_id}:{expires_ms}".encode()
        return hmac.new(self._report_secret, msg, hashlib.sha256).hexdigest()

    def stop_job(self, room_id: str, job_id: str) -> None:
        job = self._job(room_id, job_id)
        if job.running:
            self._end_job(job, "SUCCEED")

    def fail_job(self, job_id: str, reason: str = "Internal error") -> None:
        job = self.job_by_id(job_id)
        if job.running:
            self._end_job(job, "FAILED", {"error_code": "MSS.00000002", "error_msg": reason})

    def job_view(self, job: Job) -> dict[str, Any]:
        now = self.now()
        duration = 0.0
        if job.start_time is not None:
            duration = (job.end_time or now) - job.start_time
        stream = job.stream_seconds
        if job.connected_since is not None:
            stream += now - job.connected_since
        out: dict[str, Any] = {
            "job_id": job.job_id,
            "room_id": job.room_id,
            "room_name": job.room_name,
            "state": job.state,
            "duration": round(duration, 3),
            "stream_duration": round(stream, 3),
            "start_time": rfc3339(job.start_time),
            "end_time": rfc3339(job.end_time),
            "create_time": rfc3339(job.create_time),
            "lastupdate_time": rfc3339(job.update_time),
            "rtc_room_info": job.rtc_room_info,
            "live_event_report_url": job.live_event_report_url,
            "used_resource_type": "ONDEMAND",
            "is_ai_mark_on": True,
        }
        if job.callback_config is not None:
            out["live_event_callback_config"] = job.callback_config
        # without a config the service subscribes LIVE_PROGRESS (seed line 559): show that
        out["rtc_callback_config"] = job.request.get("rtc_callback_config") or {
            "rtc_callback_event_type": ["LIVE_PROGRESS"]
        }
        if job.request.get("co_streamer_config") is not None:
            out["co_streamer_config"] = job.request["co_streamer_config"]
        if job.error_info is not None:
            out["error_info"] = job.error_info
        return {k: v for k, v in out.items() if v is not None}

    def show_job(self, room_id: str, job_id: str) -> dict[str, Any]:
        return self.job_view(self._job(room_id, job_id))

    def list_jobs(self, room_id: str | None, query: Mapping[str, str]) -> dict[str, Any]:
        if room_id is not None:
            self._room(room_id)
            query = {k: v for k, v in query.items() if k != "room_name"}
        q = validate_list_query(query)
        jobs = [j for j in self.jobs.values() if room_id is None or j.room_id == room_id]
        if q["states"]:
            jobs = [j for j in jobs if j.state in q["states"]]
        if q["create_since"] is not None:
            jobs = [j for j in jobs if j.create_time >= q["create_since"]]
        if q["create_until"] is not None:
            jobs = [j for j in jobs if j.create_time <= q["create_until"]]
        if q["room_name"]:
            needle = q["room_name"].lower()
            jobs = [j for j in jobs if needle in j.room_name.lower()]
        if q["sort_key"] == "update_time":
            jobs.sort(key=lambda j: (j.update_time, j.create_time, j.job_id))
        else:
            jobs.sort(key=lambda j: (j.create_time, j.job_id))
        if q["sort_dir"] == "desc":
            jobs.reverse()
        page = jobs[q["offset"] : q["offset"] + q["limit"]]
        return {"count": len(jobs), "smart_live_jobs": [self.job_view(j) for j in page]}

    # ----------------------------------------------------------------- commands

    def command(self, room_id: str, job_id: str, body: Any) -> dict[str, Any]:
        job = self._job(room_id, job_id)
        command, params = validate_command(body)
        if not job.running:
            raise bad_request(f"job {job_id} is not running (state {job.state})")
        command_id = self._hex(16)
        self.commands.append(
            {
                "room_id": room_id,
                "job_id": job_id,
                "command_id": command_id,
                "command": command,
                "params": params,
            }
        )
        result = "SUCCESS"
        if command in ("INSERT_PLAY_SCRIPT", "INSERT_PLAY_AUDIO"):
            job.insert_commands.append(
                {
                    "command_id": command_id,
                    "command": command,
                    "params": params,
                    "source": "EXTERNAL",
                }
            )
            self._timer(
                job,
                f"reply-{command_id}",
                self.reply_finish_s,
                lambda: self._reply_finished(job, command_id),
            )
        elif command in _REVIEWED_COMMANDS and self._needs_review(self.rooms[room_id]):
            job.pending_commands.append(
                {
                    "room_id": room_id,
                    "job_id": job_id,
                    "command_id": command_id,
                    "command": command,
                    "command_time": rfc3339(self.now()),
                    "params": params,
                }
            )
        elif command == "CLEAN_UP_INSERT_COMMAND":
            ids = set(params.get("command_ids") or [])
            job.insert_commands = [
                c for c in job.insert_commands if ids and c["command_id"] not in ids
            ]
        elif command == "REFRESH_OUTPUT_URL":
            keys = params.get("stream_keys") or [""]
            self._refresh_output(job, str(params["output_urls"][0]), str(keys[0]))
        elif command == "RESET_EXIT_CONFIG":
            self._reset_exit_config(job, validate_exit_config(params, "params"))
        elif command == "GET_CURRENT_PLAYING_SCRIPTS":
            result = json.dumps({"scene_scripts": self._playing_scripts(job)})
        elif command == "GET_LIVE_JOB_CONFIG_INFO":
            result = json.dumps(self.room_view(self.rooms[room_id]))
        log.info("emulator_command", job_id=job_id, command=command)
        return {"command_id": command_id, "command": command, "result": result}

    def list_insert_commands(
        self, room_id: str, job_id: str, query: Mapping[str, str]
    ) -> dict[str, Any]:
        job = self._job(room_id, job_id)
        q = validate_list_query({k: v for k, v in query.items() if k in ("offset", "limit")})
        items = job.insert_commands[q["offset"] : q["offset"] + q["limit"]]
        return {"count": len(job.insert_commands), "insert_commands": items}

    # ----------------------------------------------------------------- review + warnings

    @staticmethod
    def _needs_review(room: Room) -> bool:
        review = room.body.get("review_config")
        return not (isinstance(review, dict) and review.get("no_need_review") is True)

    def _warnings(self, room: Room) -> list[dict[str, str]]:
        warnings = []
        if not room.body.get("scene_scripts"):
            warnings.append({"warning_type": "TOO_LESSS_SCRIPT_ITEMS"})
        return warnings

    def show_live_warning_info(self, room_id: str) -> dict[str, Any]:
        """``GET .../smart-live-rooms/{room_id}/live-warning-info``: what a start would warn."""
        room = self._room(room_id)
        policy = room.body.get("play_policy") or {}
        exit_cfg = policy.get("live_exit_config") or {}
        return {
            "live_warning_info": self._warnings(room),
            "limit_duration": int(exit_cfg.get("max_live_duration") or 0),
        }

    def confirm_room(self, room_id: str, body: Any) -> None:
        """``POST .../smart-live-rooms/{room_id}/confirm`` ``{action, script_version}``."""
        room = self._room(room_id)
        req = validate_confirm_room(body)
        version = self.room_view(room)["script_version"]
        if req.get("script_version") is not None and req["script_version"] != version:
            raise bad_request("script_version does not match the room's current script")
        room.confirm_state = "CONFIRMED" if req["action"] == "confirm" else "REJECT"

    def batch_confirm_commands(self, room_id: str, job_id: str, body: Any) -> None:
        """``POST .../batch-commands-confirm``: confirm or reject pending REWRITE_* commands."""
        job = self._job(room_id, job_id)
        req = validate_batch_confirm(body)
        ids = set(req.get("command_ids") or [])
        kept: list[dict[str, Any]] = []
        settled: list[dict[str, Any]] = []
        for cmd in job.pending_commands:
            match = cmd["command"] == req["command"] and (not ids or cmd["command_id"] in ids)
            (settled if match else kept).append(cmd)
        job.pending_commands = kept
        log.info(
            "emulator_commands_confirmed",
            job_id=job_id,
            command=req["command"],
            action=req["action"],
            count=len(settled),
        )

    def list_pending_commands(self, command: str, query: Mapping[str, str]) -> dict[str, Any]:
        """``GET /smart-live-command/{rule,script}-commands?job_id=``: still awaiting review."""
        job_id = query.get("job_id")
        if not job_id:
            raise bad_request("job_id is required")
        job = self.job_by_id(job_id)
        q = validate_list_query({k: v for k, v in query.items() if k in ("offset", "limit")})
        items = [c for c in job.pending_commands if c["command"] == command]
        field_name = (
            "interaction_rules" if command == "REWRITE_INTERACTION_RULES" else "scene_scripts"
        )
        page = [
            {
                "room_id": c["room_id"],
                "job_id": c["job_id"],
                "command_id": c["command_id"],
                "command_time": c["command_time"],
                field_name: c["params"].get(field_name) or [],
            }
            for c in items[q["offset"] : q["offset"] + q["limit"]]
        ]
        key = "rule_commands" if command == "REWRITE_INTERACTION_RULES" else "scripts_commands"
        return {"count": len(items), key: page}

    def report_events(self, room_id: str, job_id: str, body: Any) -> None:
        job = self._job(room_id, job_id)
        if not isinstance(body, dict):
            raise bad_request("request body must be an object")
        total = body.get("total")
        if isinstance(total, bool) or not isinstance(total, int) or not 1 <= total <= 1000:
            raise bad_request("total must be an integer within [1, 1000]")
        events = body.get("events") or []
        if not isinstance(events, list):
            raise bad_request("events must be an array")
        for i, event in enumerate(events):
            if not isinstance(event, dict) or not isinstance(event.get("timestamp"), int):
                raise bad_request(f"events[{i}].timestamp is required")
        if not job.running:
            raise bad_request(f"job {job_id} is not running (state {job.state})")

    def _playing_scripts(self, job: Job) -> list[dict[str, Any]]:
        scenes = self.rooms[job.room_id].body.get("scene_scripts") or _DEFAULT_SCRIPTS
        return [
            {
                "script_name": s.get("script_name"),
                "model_asset_id": s.get("model_asset_id", ""),
                "shoot_scripts": [
                    {
                        "sequence_no": p.get("sequence_no", i),
                        "title": p.get("title", ""),
                        "text": (p.get("text_config") or {}).get("text", ""),
                    }
                    for i, p in enumerate(s.get("shoot_scripts") or [])
                ],
            }
            for s in scenes
        ]

    # ----------------------------------------------------------------- simulation

    def _timer(self, job: Job, name: str, delay_s: float, fn: Callable[[], None]) -> None:
        old = job.timers.pop(name, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            job.timers.pop(name, None)
            fn()

        job.timers[name] = self.clock.call_later(delay_s, fire)

    def _cancel_timer(self, job: Job, name: str) -> None:
        handle = job.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _cancel_timers(self, job: Job) -> None:
        for handle in job.timers.values():
            handle.cancel()
        job.timers.clear()

    def _touch(self, job: Job) -> None:
        job.update_time = self.now()

    def _emit(self, job: Job, event_type: str, message: dict[str, Any]) -> None:
        cfg = job.callback_config
        if not cfg or not cfg.get("live_event_type_callback_url"):
            return
        wanted = cfg.get("callback_event_type")
        if wanted and event_type not in wanted:
            return
        self.callbacks.submit(
            CallbackEvent(
                url=str(cfg["live_event_type_callback_url"]),
                auth_type=str(cfg.get("auth_type") or "NONE"),
                key=str(cfg.get("key") or ""),
                event_type=event_type,
                message=message,
                lane=job.job_id,
            )
        )

    def _set_rtmp(self, job: Job, state: str) -> None:
        if job.rtmp_state == state:
            return
        now = self.now()
        if job.rtmp_state == "CONNECTED" and job.connected_since is not None:
            job.stream_seconds += now - job.connected_since
            job.connected_since = None
        if state == "CONNECTED":
            job.connected_since = now
        job.rtmp_state = state
        self._touch(job)
        log.info("emulator_rtmp_state", job_id=job.job_id, state=state)
        for listener in list(self.rtmp_listeners):
            listener(job, state)
        self._emit(
            job,
            "RTMP_STREAM_STATE_CHANGE",
            {
                "room_id": job.room_id,
                "job_id": job.job_id,
                "output_url": job.output_url,
                "stream_key": job.stream_key,
                "state": state,
            },
        )

    def _begin_processing(self, job: Job) -> None:
        if job.state != "WAITING":
            return
        job.state = "PROCESSING"
        job.start_time = self.now()
        self._touch(job)
        self.rooms[job.room_id].last_job_status = "PROCESSING"
        self._schedule_max_duration(job)
        self._timer(job, "script", self.script_switch_s, lambda: self._script_switch(job))
        self._connect(job)

    def _connect(self, job: Job) -> None:
        """Start a connection attempt: media push (if any) and CONNECTED after ``connect_s``."""
        if job.rtmp_state in (None, "CONNECTING") or job.abnormal_since is None:
            self._set_rtmp(job, "CONNECTING")
        if self.media is not None:
            self.media.stop(job.job_id)
            self.media.start(
                job.job_id, job.output_url, job.stream_key, lambda: self.link_failed(job.job_id)
            )
        delay = self.connect_s + self.platform.connect_delay(job.output_url, self.now())
        self._timer(job, "link", delay, lambda: self._connect_done(job))

    def _held(self, job: Job) -> bool:
        return job.hold_until is not None and self.now() < job.hold_until

    def _connect_done(self, job: Job) -> None:
        if job.state != "PROCESSING":
            return
        if self._held(job):
            self._link_down(job, "RECONNECTING")
            return
        refusal = self.platform.refusal(job.output_url, job.stream_key, self.now())
        if refusal is not None:
            log.info("emulator_push_refused", job_id=job.job_id, reason=refusal)
            self._push_error(job, refusal)
            if self.media is not None:
                self.media.stop(job.job_id)
            self._link_down(job, "RECONNECTING")
            return
        job.abnormal_since = None
        self._cancel_timer(job, "exception")
        self._push_error(job, None)
        self._set_rtmp(job, "CONNECTED")
        up_s = self.platform.flap_up_s(job.output_url, self.now())
        if up_s is not None:
            self._timer(job, "flap", up_s, lambda: self._platform_drop(job, "ingest flapping"))

    def _push_error(self, job: Job, reason: str | None) -> None:
        """A running job's ``error_info`` follows its push (inference: see PUSH_ERRORS)."""
        if not self.push_error_info or job.state != "PROCESSING":
            return
        info = PUSH_ERRORS.get(reason) if reason is not None else None
        if info != job.error_info:
            job.error_info = None if info is None else dict(info)
            self._touch(job)

    def _platform_drop(self, job: Job, reason: str) -> None:
        """The ingest dropped a connected push (outage began, key revoked, a flap)."""
        if job.state != "PROCESSING" or job.rtmp_state != "CONNECTED":
            return
        log.info("emulator_push_dropped", job_id=job.job_id, reason=reason)
        self._push_error(job, reason)
        self._cancel_timer(job, "flap")
        if self.media is not None:
            self.media.stop(job.job_id)
        self._link_down(job, "DISCONNECTED")

    # ----------------------------------------------------------------- platform faults (admin)

    def ingest_fault(
        self,
        ingest: str,
        kind: str,
        *,
        for_s: float | None = None,
        up_s: float | None = None,
        delay_s: float | None = None,
    ) -> dict[str, Any]:
        """Fail an ingest (``host[:port]``) for ``for_s`` simulated s (None: until cleared)."""
        if not ingest or "/" in ingest:
            raise bad_request("ingest must be the host[:port] of an RTMP URL")
        if kind not in FAULT_KINDS:
            raise bad_request(f"kind must be one of {', '.join(FAULT_KINDS)}")
        for name, value in (("for_s", for_s), ("up_s", up_s), ("delay_s", delay_s)):
            if value is not None and not (value > 0 and value != float("inf")):
                raise bad_request(f"{name} must be a positive number")
        if kind == "flap" and up_s is None:
            raise bad_request("a flap needs up_s (seconds a connection lasts)")
        if kind == "slow" and delay_s is None:
            raise bad_request("a slow ingest needs delay_s (extra seconds to connect)")
        now = self.now()
        # now() is wall-clock under a RealClock (only waits shrink): a fault's span must shrink
        # with them, or a 60 s outage under --time-scale 10 outlived 10 reconnect periods
        scale = self.clock.time_scale if isinstance(self.clock, RealClock) else 1.0
        fault = IngestFault(
            kind=kind,
            since=now,
            until=float("inf") if for_s is None else now + for_s / scale,
            up_s=up_s or 0.0,
            delay_s=delay_s or 0.0,
        )
        self.platform.add(ingest, fault)
        log.info("emulator_ingest_fault", ingest=ingest, kind=kind, for_s=for_s)
        for job in list(self.jobs.values()):
            if ingest_of(job.output_url) != ingest.lower():
                continue
            if kind == "outage":
                self._platform_drop(job, "ingest outage")
            elif kind == "flap" and job.rtmp_state == "CONNECTED" and up_s is not None:
                drop = functools.partial(self._platform_drop, job, "ingest flapping")
                self._timer(job, "flap", up_s, drop)
        return fault.view()

    def clear_ingest(self, ingest: str) -> int:
        """The ingest is back: pushes reconnect on the service's next attempt."""
        for job in self.jobs.values():
            if ingest_of(job.output_url) == ingest.lower():
                self._cancel_timer(job, "flap")
        return self.platform.clear_ingest(ingest)

    def revoke_key(self, key: str) -> None:
        """Pushes with ``key`` are refused (and connected ones dropped) until restored."""
        if not key:
            raise bad_request("stream_key is required")
        self.platform.revoked.add(key)
        for job in list(self.jobs.values()):
            if job.stream_key == key:
                self._platform_drop(job, "stream key refused")

    def restore_key(self, key: str) -> bool:
        if key in self.platform.revoked:
            self.platform.revoked.discard(key)
            return True
        return False

    def link_failed(self, job_id: str) -> None:
        """The push broke (ffmpeg exited, forced by admin): the service starts reconnecting."""
        job = self.jobs.get(job_id)
        if job is None or job.state != "PROCESSING":
            return
        self._link_down(job, "DISCONNECTED" if job.rtmp_state == "CONNECTED" else "RECONNECTING")

    def _link_down(self, job: Job, state: str) -> None:
        self._set_rtmp(job, state)
        if job.abnormal_since is None:
            job.abnormal_since = self.now()
        self._schedule_exception_deadline(job)
        self._timer(job, "link", self.reconnect_interval_s, lambda: self._reconnect_attempt(job))

    def _reconnect_attempt(self, job: Job) -> None:
        if job.state != "PROCESSING" or job.rtmp_state == "CONNECTED":
            return
        self._set_rtmp(job, "RECONNECTING")
        if self._held(job):
            self._timer(
                job, "link", self.reconnect_interval_s, lambda: self._reconnect_attempt(job)
            )
            return
        self._connect(job)

    def _schedule_exception_deadline(self, job: Job) -> None:
        minutes = int(job.exit_config.get("max_exception_waiting_duration") or 0)
        if job.abnormal_since is None or minutes <= 0:
            self._cancel_timer(job, "exception")
            return
        due = job.abnormal_since + minutes * 60 - self.now()
        self._timer(job, "exception", due, lambda: self._exception_deadline(job))

    def _exception_deadline(self, job: Job) -> None:
        if job.state != "PROCESSING" or job.abnormal_since is None:
            return
        log.info("emulator_link_abandoned", job_id=job.job_id)
        self._end_job(
            job,
            "FAILED",
            {
                "error_code": "MSS.00000001",
                "error_msg": "RTMP push abnormal longer than max_exception_waiting_duration",
            },
        )

    def _schedule_max_duration(self, job: Job) -> None:
        hours = int(job.exit_config.get("max_live_duration") or 0)
        if job.start_time is None or hours <= 0:
            self._cancel_timer(job, "max_duration")
            return
        due = job.start_time + hours * 3600 - self.now()
        self._timer(job, "max_duration", due, lambda: self._end_job(job, "SUCCEED"))

    def _reset_exit_config(self, job: Job, params: dict[str, Any]) -> None:
        job.exit_config.update({k: v for k, v in params.items() if v is not None})
        self._touch(job)
        self._schedule_max_duration(job)
        self._schedule_exception_deadline(job)

    def _refresh_output(self, job: Job, url: str, key: str) -> None:
        job.output_url, job.stream_key = url, key
        job.hold_until = None
        self._touch(job)
        if job.state == "PROCESSING":
            if job.rtmp_state == "CONNECTED":
                job.abnormal_since = None
            self._set_rtmp(job, "CONNECTING")
            self._connect(job)

    def force_rtmp(self, job_id: str, state: str, hold_s: float | None) -> None:
        """Admin: force the link state; while held, the service's own reconnects fail."""
        job = self.job_by_id(job_id)
        if job.state != "PROCESSING":
            raise bad_request(f"job {job_id} is not PROCESSING (state {job.state})")
        if state == "CONNECTED":
            job.hold_until = None
            job.abnormal_since = None
            self._cancel_timer(job, "exception")
            self._cancel_timer(job, "link")
            self._set_rtmp(job, "CONNECTED")
        elif state in ("DISCONNECTED", "RECONNECTING"):
            job.hold_until = float("inf") if hold_s is None else self.now() + hold_s
            if self.media is not None:
                self.media.stop(job.job_id)
            self._link_down(job, state)
        elif state == "END":
            self._end_job(
                job,
                "FAILED",
                {"error_code": "MSS.00000001", "error_msg": "RTMP push ended"},
            )
        else:
            raise bad_request("state must be DISCONNECTED, RECONNECTING, CONNECTED or END")

    def _script_switch(self, job: Job) -> None:
        if job.state != "PROCESSING":
            return
        scenes = self._playing_scripts(job)
        flat = [(s, p) for s in scenes for p in s["shoot_scripts"]] or [
            ({"script_name": "default-scene"}, {"sequence_no": 1, "title": ""})
        ]
        scene, para = flat[job.script_pos % len(flat)]
        job.script_pos += 1
        self._emit(
            job,
            "SHOOT_SCRIPT_SWITCH",
            {
                "room_id": job.room_id,
                "job_id": job.job_id,
                "scene_script_name": scene["script_name"],
                "shoot_script_sequence_no": str(para["sequence_no"]),
                "shoot_script_title": para["title"],
            },
        )
        self._timer(job, "script", self.script_switch_s, lambda: self._script_switch(job))

    def _reply_finished(self, job: Job, command_id: str) -> None:
        if job.state != "PROCESSING":
            return
        job.insert_commands = [c for c in job.insert_commands if c["command_id"] != command_id]
        self._emit(
            job,
            "REPLY_COMMAND_FINISH",
            {"room_id": job.room_id, "job_id": job.job_id, "reply_id": command_id},
        )

    def _end_job(self, job: Job, state: str, error: dict[str, str] | None = None) -> None:
        self._cancel_timers(job)
        if self.media is not None:
            self.media.stop(job.job_id)
        if job.rtmp_state is not None:
            self._set_rtmp(job, "END")
        job.state = state
        job.error_info = error
        job.end_time = self.now()
        job.hold_until = None
        self._touch(job)
        room = self.rooms.get(job.room_id)
        if room is not None:
            room.last_job_status = state
            room.last_job_end_time = job.end_time
        log.info("emulator_job_ended", job_id=job.job_id, state=state)

    # ----------------------------------------------------------------- IAM

    def issue_token(self, body: Any, *, nocatalog: bool) -> tuple[str, dict[str, Any]]:
        """``POST /v3/auth/tokens`` with the password method; user name = AK, password = SK."""
        try:
            auth = body["auth"]
            user = auth["identity"]["password"]["user"]
            name, password = str(user["name"]), str(user["password"])
        except (KeyError, TypeError) as exc:
            raise ApiError(400, "MSS.00000003", "Invalid parameter: auth.identity") from exc
        expected = self.credentials.get(name)
        if expected is None or not hmac.compare_digest(expected, password):
            raise ApiError(
                401, "APIGW.0301", "Incorrect IAM authentication information: user or password"
            )
        scope = (auth.get("scope") or {}).get("project") or {}
        if scope and scope.get("id") not in (None, self.project_id):
            raise ApiError(401, "APIGW.0301", "Incorrect IAM authentication information: scope")
        if scope and scope.get("name") not in (None, self.region):
            raise ApiError(401, "APIGW.0301", "Incorrect IAM authentication information: scope")
        now = self.now()
        token = "MII" + secrets.token_urlsafe(48)
        self.tokens[token] = now + 86400
        domain = {"id": "0" * 32, "name": "emulator"}
        out: dict[str, Any] = {
            "token": {
                "expires_at": rfc3339(now + 86400),
                "issued_at": rfc3339(now),
                "methods": ["password"],
                "project": {"id": self.project_id, "name": self.region, "domain": domain},
                "roles": [{"id": "0", "name": "te_admin"}],
                "user": {
                    "id": self._hex(16),
                    "name": name,
                    "domain": domain,
                    "password_expires_at": "",
                },
            }
        }
        if not nocatalog:
            out["token"]["catalog"] = []
        return token, out

    def token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and self.now() < expiry

    def list_projects(self, name: str | None) -> dict[str, Any]:
        projects = []
        if name in (None, "", self.region):
            projects.append(
                {
                    "id": self.project_id,
                    "name": self.region,
                    "domain_id": "0" * 32,
                    "enabled": True,
                    "is_domain": False,
                    "parent_id": "0" * 32,
                    "description": "",
                    "links": {},
                }
            )
        return {"projects": projects, "links": {"self": "", "next": None, "previous": None}}

    # ----------------------------------------------------------------- admin views

    def admin_jobs(self) -> list[dict[str, Any]]:
        return [
            {
                "room_id": j.room_id,
                "job_id": j.job_id,
                "state": j.state,
                "rtmp_state": j.rtmp_state,
                "output_url": j.output_url,
                "stream_key": j.stream_key,
                "created_at": rfc3339(j.create_time),
                # simulated epoch seconds: tests measure repair times on the emulator's clock
                "connected_since": j.connected_since,
            }
            for j in sorted(self.jobs.values(), key=lambda j: (j.create_time, j.job_id))
        ]

    def admin_stats(self) -> dict[str, Any]:
        cb = self.callbacks.stats
        return {
            "calls": dict(self.calls),
            "starts": self.starts,
            "commands": list(self.commands),
            "callbacks": {
                "delivered": cb.delivered,
                "failed": cb.failed,
                "dropped": cb.dropped,
                "duplicated": cb.duplicated,
                "by_type": dict(cb.by_type),
            },
        }
