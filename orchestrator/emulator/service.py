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

The tenant is built in layers, one module each (see :mod:`orchestrator.emulator.tenant`):
:mod:`~orchestrator.emulator.limits`, :mod:`~orchestrator.emulator.link`,
:mod:`~orchestrator.emulator.jobs`, :mod:`~orchestrator.emulator.commands`; callbacks are
delivered by :mod:`~orchestrator.emulator.callbacks`. This module adds the lifecycle, IAM and the
admin views, and is the one entry point (:class:`EmulatorService`).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from orchestrator.emulator.clock import ManualClock
from orchestrator.emulator.commands import Commands
from orchestrator.emulator.model import (
    DEFAULT_RATE_LIMITS,
    REGION_RATE_LIMITS,
    Fault,
    Job,
    MediaBackend,
    Room,
    rate_limits_for,
    rfc3339,
)
from orchestrator.emulator.validation import (
    ApiError,
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


class EmulatorService(Commands):
    """One emulated tenant (project). Use ``async with service:`` or the app lifespan."""

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
