"""Job commands (api doc: smart-live-jobs/{job_id}/command), review and warnings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import structlog

from orchestrator.emulator.jobs import Jobs
from orchestrator.emulator.model import REVIEWED_COMMANDS, rfc3339
from orchestrator.emulator.validation import (
    bad_request,
    validate_batch_confirm,
    validate_command,
    validate_confirm_room,
    validate_exit_config,
    validate_list_query,
)

__all__ = ["Commands"]

log = structlog.get_logger(__name__)


class Commands(Jobs):
    """Commands on a running job, pending-review commands, warning info, event reports."""

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
        elif command in REVIEWED_COMMANDS and self._needs_review(self.rooms[room_id]):
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
