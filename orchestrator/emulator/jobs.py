"""Rooms and smart-live jobs: create, show, list, start, stop, and their JSON views."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import structlog

from orchestrator.emulator.link import Link
from orchestrator.emulator.model import DEFAULT_EXCEPTION_WAIT_MIN, NOT_FOUND, Job, Room, rfc3339
from orchestrator.emulator.validation import (
    ApiError,
    bad_request,
    validate_list_query,
    validate_room_body,
    validate_start_body,
)

__all__ = ["Jobs"]

log = structlog.get_logger(__name__)


class Jobs(Link):
    """The room and job APIs (api doc: smart-live-rooms, smart-live-jobs)."""

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

    @staticmethod
    def _needs_review(room: Room) -> bool:
        review = room.body.get("review_config")
        return not (isinstance(review, dict) and review.get("no_need_review") is True)

    def _warnings(self, room: Room) -> list[dict[str, str]]:
        warnings = []
        if not room.body.get("scene_scripts"):
            warnings.append({"warning_type": "TOO_LESSS_SCRIPT_ITEMS"})
        return warnings
