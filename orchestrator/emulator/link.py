"""The RTMP push of each job and the streaming platform behind it.

A job's link goes ``CONNECTING`` → ``CONNECTED``; a broken one ``DISCONNECTED`` then
``RECONNECTING`` every ``reconnect_interval_s``, and the job ends ``FAILED`` once it has been
abnormal longer than ``max_exception_waiting_duration``. The platform's own faults (ingest
outage, flapping, slow ingest, revoked key; :mod:`orchestrator.emulator.platform`) act here.
Every change of state is told to ``rtmp_listeners`` and sent as a callback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import structlog

from orchestrator.emulator.callbacks import CallbackEvent
from orchestrator.emulator.clock import RealClock
from orchestrator.emulator.limits import Limits
from orchestrator.emulator.model import DEFAULT_SCRIPTS, NOT_FOUND, Job
from orchestrator.emulator.platform import (
    FAULT_KINDS,
    PUSH_ERRORS,
    IngestFault,
    ingest_of,
)
from orchestrator.emulator.validation import (
    ApiError,
    bad_request,
)

__all__ = ["Link"]

log = structlog.get_logger(__name__)


class Link(Limits):
    """Simulation of each running job: state timers, the push, scripts, the exit config."""

    def job_by_id(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, NOT_FOUND, f"Smart live job {job_id} does not exist")
        return job

    def _playing_scripts(self, job: Job) -> list[dict[str, Any]]:
        scenes = self.rooms[job.room_id].body.get("scene_scripts") or DEFAULT_SCRIPTS
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
