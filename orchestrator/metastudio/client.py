"""Async MetaStudio smart-live client over an injected ``httpx.AsyncClient`` (api doc §2).

The boundary of the cloud: requests are validated before sending, each call waits on the shared
per-group rate limits, every answer is mapped to a model or to an error from
:mod:`orchestrator.errors` (status + ``error_code``, chained with ``raise ... from``), and every
result and error carries the ``X-Request-Id``.

Retries: only safe reads (show/list) are retried automatically, on temporary errors, with capped
jittered backoff that honours ``Retry-After``. Writes are never retried here; a start whose answer
was lost raises :class:`~orchestrator.errors.StartOutcomeUnknown` so the caller lists the room's
jobs before trying again (never a duplicate push).

Each attempt is logged as ``metastudio_call`` and reported to the optional ``on_call`` hook
(operation, status or error code, seconds) for Prometheus; neither ever contains a secret.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from pydantic import BaseModel

from orchestrator.errors import InvalidRequest
from orchestrator.metastudio.errormap import error_from_response, parse_retry_after
from orchestrator.metastudio.models import (
    Command,
    CommandResult,
    ControlSmartLiveReq,
    CreateSmartLiveRoomReq,
    CreateSmartLiveRoomResp,
    LiveExitConfig,
    PlayTextInfo,
    RefreshOutputUrlConfig,
    SmartLiveJob,
    SmartLiveJobBrief,
    SmartLiveJobBriefList,
    SmartLiveJobList,
    SmartLiveRoom,
    SmartLiveRoomList,
    StartSmartLiveReq,
    StartSmartLiveResp,
    build,
    to_wire,
)
from orchestrator.metastudio.ratelimit import ApiGroup
from orchestrator.metastudio.transport import DEFAULT_TIMEOUT, CallHook, CloudTransport, M

__all__ = [
    "DEFAULT_TIMEOUT",
    "CallHook",
    "MetaStudioClient",
    "error_from_response",
    "parse_retry_after",
]


J = TypeVar("J", covariant=True)


class _Paged(Protocol[J]):
    """A page of a job listing (full or brief)."""

    @property
    def count(self) -> int: ...
    @property
    def smart_live_jobs(self) -> Sequence[J]: ...


# ------------------------------------------------------------------------- path and query values


def _q(segment: str, what: str) -> str:
    if not segment:
        raise InvalidRequest(f"{what} must not be empty")
    return quote(segment, safe="")


def _rfc3339(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------- client


class MetaStudioClient(CloudTransport):
    """One tenant/project. Share one instance (and one :class:`RateLimits`) across all rooms.

    The typed smart-live operations; sending, retries and error mapping are the transport's."""

    def __repr__(self) -> str:
        return f"MetaStudioClient(base_url={self._base_url!r}, project_id={self._project_id!r})"

    @classmethod
    def endpoint_for_region(cls, region: str) -> str:
        """``https://metastudio.{region}.myhuaweicloud.com`` (§12)."""
        if not region or not all(c.isalnum() or c == "-" for c in region):
            raise ValueError(f"not a region id: {region!r}")
        return f"https://metastudio.{region}.myhuaweicloud.com"

    async def start_job(self, room_id: str, req: StartSmartLiveReq) -> StartSmartLiveResp:
        """Start a job (202). Never retried; a lost answer raises StartOutcomeUnknown."""
        checked = build(StartSmartLiveReq, req)
        path = self._path("smart-live-rooms", _q(room_id, "room_id"), "smart-live-jobs")
        response = await self._call(
            "start_smart_live", ApiGroup.START, "POST", path, body=to_wire(checked), is_start=True
        )
        return self._parse("start_smart_live", StartSmartLiveResp, response, is_start=True)

    async def stop_job(self, room_id: str, job_id: str) -> None:
        """Stop a job (200, empty body). Not retried: the caller re-reads the job instead."""
        path = self._path(
            "smart-live-rooms", _q(room_id, "room_id"),
            "smart-live-jobs", _q(job_id, "job_id"), "stop",
        )  # fmt: skip
        await self._call("stop_smart_live", ApiGroup.STOP, "POST", path)

    async def show_job(self, room_id: str, job_id: str) -> SmartLiveJob:
        path = self._path(
            "smart-live-rooms", _q(room_id, "room_id"), "smart-live-jobs", _q(job_id, "job_id")
        )
        response = await self._call("show_smart_live", ApiGroup.JOB_QUERY, "GET", path, retry=True)
        return self._parse("show_smart_live", SmartLiveJob, response)

    @staticmethod
    def _job_query(
        *,
        offset: int,
        limit: int,
        states: Sequence[str] | None,
        sort_key: str | None,
        sort_dir: str | None,
        create_since: datetime | str | None,
        create_until: datetime | str | None,
        room_name: str | None = None,
    ) -> list[tuple[str, str]]:
        if not 0 <= offset <= 2147483647:
            raise InvalidRequest("offset must be within 0..2147483647")
        if not 1 <= limit <= 100:
            raise InvalidRequest("limit (page_size) must be within 1..100")
        if sort_key is not None and sort_key not in ("create_time", "update_time", "asset_order"):
            raise InvalidRequest("sort_key must be create_time, update_time or asset_order")
        if sort_dir is not None and sort_dir not in ("asc", "desc"):
            raise InvalidRequest("sort_dir must be asc or desc")
        query = [("offset", str(offset)), ("limit", str(limit))]
        if states:
            query.append(("state", ",".join(str(s) for s in states)))
        optional = {
            "sort_key": sort_key,
            "sort_dir": sort_dir,
            "create_since": _rfc3339(create_since),
            "create_until": _rfc3339(create_until),
            "room_name": room_name,
        }
        query += [(k, v) for k, v in optional.items() if v is not None]
        return query

    async def list_room_jobs_page(
        self,
        room_id: str,
        *,
        offset: int = 0,
        limit: int = 100,
        states: Sequence[str] | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
    ) -> SmartLiveJobList:
        """One page of a room's jobs, with the total ``count``."""
        query = self._job_query(
            offset=offset, limit=limit, states=states, sort_key=sort_key, sort_dir=sort_dir,
            create_since=create_since, create_until=create_until,
        )  # fmt: skip
        path = self._path("smart-live-rooms", _q(room_id, "room_id"), "smart-live-jobs")
        response = await self._call(
            "list_smart_live", ApiGroup.JOB_QUERY, "GET", path, query=query, retry=True
        )
        return self._parse("list_smart_live", SmartLiveJobList, response)

    async def list_tenant_jobs_page(
        self,
        *,
        offset: int = 0,
        limit: int = 100,
        states: Sequence[str] | None = None,
        room_name: str | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
    ) -> SmartLiveJobList:
        """One page of all the tenant's jobs (``room_name`` is a fuzzy filter)."""
        query = self._job_query(
            offset=offset, limit=limit, states=states, sort_key=sort_key, sort_dir=sort_dir,
            create_since=create_since, create_until=create_until, room_name=room_name,
        )  # fmt: skip
        return await self._tenant_page(query, SmartLiveJobList)

    async def _tenant_page(self, query: list[tuple[str, str]], model: type[M]) -> M:
        response = await self._call(
            "list_smart_live_jobs",
            ApiGroup.JOB_QUERY,
            "GET",
            self._path("smart-live-jobs"),
            query=query,
            retry=True,
        )
        return self._parse("list_smart_live_jobs", model, response)

    @staticmethod
    async def _exhaust(fetch: Callable[[int], Awaitable[_Paged[J]]]) -> AsyncIterator[J]:
        offset = 0
        while True:
            page = await fetch(offset)
            for job in page.smart_live_jobs:
                yield job
            offset += len(page.smart_live_jobs)
            if not page.smart_live_jobs or offset >= page.count:
                return

    def iter_room_jobs(
        self,
        room_id: str,
        *,
        states: Sequence[str] | None = None,
        sort_key: str | None = None,
        sort_dir: str | None = None,
        create_since: datetime | str | None = None,
        create_until: datetime | str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SmartLiveJob]:
        """All of a room's jobs, page by page until ``count`` is reached."""

        def fetch(offset: int) -> Awaitable[SmartLiveJobList]:
            return self.list_room_jobs_page(
                room_id, offset=offset, limit=page_size, states=states, sort_key=sort_key,
                sort_dir=sort_dir, create_since=create_since, create_until=create_until,
            )  # fmt: skip

        return self._exhaust(fetch)

    def iter_tenant_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        room_name: str | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SmartLiveJob]:
        """All of the tenant's jobs, page by page until ``count`` is reached."""

        def fetch(offset: int) -> Awaitable[SmartLiveJobList]:
            return self.list_tenant_jobs_page(
                offset=offset, limit=page_size, states=states, room_name=room_name
            )

        return self._exhaust(fetch)

    def iter_tenant_job_briefs(
        self, *, states: Sequence[str] | None = None, page_size: int = 100
    ) -> AsyncIterator[SmartLiveJobBrief]:
        """Like :meth:`iter_tenant_jobs`, but each job is only its id, room, state (and the
        emulator's RTMP state): what a poll of thousands of rooms needs, parsed cheaply."""

        def fetch(offset: int) -> Awaitable[SmartLiveJobBriefList]:
            query = self._job_query(
                offset=offset, limit=page_size, states=states, sort_key=None, sort_dir=None,
                create_since=None, create_until=None,
            )  # fmt: skip
            return self._tenant_page(query, SmartLiveJobBriefList)

        return self._exhaust(fetch)

    # ------------------------------------------------------------------ commands

    async def execute_command(
        self,
        room_id: str,
        job_id: str,
        command: str,
        params: BaseModel | Mapping[str, Any] | None = None,
    ) -> CommandResult:
        """Run a runtime command (§5). Params are checked against the command's typed model."""
        raw_params: Any = params
        if isinstance(params, BaseModel):
            raw_params = to_wire(params)
        elif params is not None:
            raw_params = dict(params)
        req = build(ControlSmartLiveReq, {"command": command, "params": raw_params})
        path = self._path(
            "smart-live-rooms", _q(room_id, "room_id"),
            "smart-live-jobs", _q(job_id, "job_id"), "command",
        )  # fmt: skip
        response = await self._call(
            "execute_smart_live_command", ApiGroup.COMMAND, "POST", path, body=to_wire(req)
        )
        return self._parse("execute_smart_live_command", CommandResult, response)

    async def refresh_output_url(
        self, room_id: str, job_id: str, *, output_url: str, stream_key: str
    ) -> CommandResult:
        """``REFRESH_OUTPUT_URL`` with one target (params field names unconfirmed, §5.3)."""
        params = build(
            RefreshOutputUrlConfig, {"output_urls": [output_url], "stream_keys": [stream_key]}
        )
        return await self.execute_command(room_id, job_id, Command.REFRESH_OUTPUT_URL, params)

    async def reset_exit_config(
        self, room_id: str, job_id: str, config: LiveExitConfig
    ) -> CommandResult:
        """``RESET_EXIT_CONFIG``: e.g. widen ``max_exception_waiting_duration`` before repairs."""
        return await self.execute_command(room_id, job_id, Command.RESET_EXIT_CONFIG, config)

    async def insert_play_script(
        self, room_id: str, job_id: str, text: str, *, play_type: str = "PLAY_NOW"
    ) -> CommandResult:
        """``INSERT_PLAY_SCRIPT``: speak ``text`` (plain or SSML)."""
        params = build(
            PlayTextInfo,
            {"text_config": {"text": text}, "play_type": play_type},
        )
        return await self.execute_command(room_id, job_id, Command.INSERT_PLAY_SCRIPT, params)

    # ------------------------------------------------------------------ rooms

    async def list_rooms(
        self,
        *,
        offset: int = 0,
        limit: int = 10,
        room_name: str | None = None,
        live_state: Sequence[str] | None = None,
        room_type: str | None = None,
    ) -> SmartLiveRoomList:
        """One page of rooms (§8.4)."""
        if not 0 <= offset <= 2147483647 or not 1 <= limit <= 100:
            raise InvalidRequest("offset must be 0..2147483647 and limit 1..100")
        query = [("offset", str(offset)), ("limit", str(limit))]
        if room_name is not None:
            query.append(("room_name", room_name))
        if live_state:
            query.append(("live_state", ",".join(live_state)))
        if room_type is not None:
            query.append(("room_type", room_type))
        response = await self._call(
            "list_smart_live_rooms",
            ApiGroup.ROOM_QUERY,
            "GET",
            self._path("smart-live-rooms"),
            query=query,
            retry=True,
        )
        return self._parse("list_smart_live_rooms", SmartLiveRoomList, response)

    async def show_room(self, room_id: str) -> SmartLiveRoom:
        response = await self._call(
            "show_smart_live_room",
            ApiGroup.ROOM_QUERY,
            "GET",
            self._path("smart-live-rooms", _q(room_id, "room_id")),
            retry=True,
        )
        return self._parse("show_smart_live_room", SmartLiveRoom, response)

    async def create_room(self, req: CreateSmartLiveRoomReq | Mapping[str, Any]) -> str:
        """Create a room; return its id. Not retried (a retry could create a second room)."""
        checked = build(CreateSmartLiveRoomReq, req)
        response = await self._call(
            "create_smart_live_room",
            ApiGroup.ROOM_CREATE,
            "POST",
            self._path("smart-live-rooms"),
            body=to_wire(checked),
        )
        return self._parse("create_smart_live_room", CreateSmartLiveRoomResp, response).room_id
