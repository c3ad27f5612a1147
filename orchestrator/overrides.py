"""Operator overrides kept in the store, applied on top of the config file.

Two kinds, both under a room's row in the store's overrides table:

* ``output``: the RTMP URL and stream key set by ``set_output`` (MQTT/CLI). :meth:`room_config`
  is the supervisor's view of a room's settings with it applied.
* ``schedule``: pauses, added windows and skipped windows. :meth:`apply_schedules` rebuilds every
  room's schedule from config + these and hands it to the window scheduler.

Read again from the store when rooms are gained (several instances: the previous owner may have
changed them) and written through here by the control service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import SecretStr

from orchestrator import logging as olog
from orchestrator.schedule.holidays import load_holidays
from orchestrator.schedule.scheduler import WindowScheduler
from orchestrator.settings import RoomSettings, Settings, schedule_for_room
from orchestrator.store.base import Store

__all__ = ["Overrides"]

ScheduleChange = Callable[[dict[str, Any]], dict[str, Any]]


class Overrides:
    """A room's output override and every room's schedule overrides (see the module doc)."""

    def __init__(self, store: Store, settings: Callable[[], Settings]) -> None:
        self._store = store
        self._settings = settings
        self.scheduler: WindowScheduler | None = None
        """Set by the daemon when the schedule starts, before any command can arrive."""
        self._outputs: dict[str, tuple[str, str]] = {}
        self._overridden: dict[str, tuple[RoomSettings, tuple[str, str], RoomSettings]] = {}

    def room_config(self, room_id: str) -> RoomSettings | None:
        """The room's settings with its output override applied (None: not configured)."""
        room = self._settings().room(room_id)
        if room is None:
            return None
        override = self._outputs.get(room_id)
        if override is None:
            return room
        # the same object while nothing changed: the supervisor rebuilds a room's config
        # only when the identity of what it was built from changes
        cached = self._overridden.get(room_id)
        if cached is not None and cached[0] is room and cached[1] == override:
            return cached[2]
        copy = room.model_copy(
            update={"output_url": override[0], "stream_key": SecretStr(override[1])}
        )
        self._overridden[room_id] = (room, override, copy)
        return copy

    async def load_outputs(self, room_ids: Sequence[str] | None = None) -> None:
        """Read the stored output overrides of ``room_ids`` (default: every configured room)."""
        stored = await self._store.all_overrides()  # one read, not one per room
        if room_ids is None:
            room_ids = [r.id for r in self._settings().rooms]
        for rid in room_ids:
            o = stored.get(rid, {}).get("output")
            if isinstance(o, Mapping) and o.get("url") and o.get("stream_key"):
                self._outputs[rid] = (str(o["url"]), str(o["stream_key"]))
                olog.register_secret(str(o["stream_key"]))

    async def set_output(self, room_id: str, *, url: str, stream_key: str) -> None:
        """Store a room's new output; :meth:`room_config` shows it from now on."""
        olog.register_secret(stream_key)
        ov = dict(await self._store.get_overrides(room_id))
        ov["output"] = {"url": url, "stream_key": stream_key}
        await self._store.put_overrides(room_id, ov)
        self._outputs[room_id] = (url, stream_key)

    async def change_schedule(self, room_id: str, change: ScheduleChange) -> dict[str, Any]:
        """Store ``change(schedule overrides)`` for the room and re-apply every schedule."""
        ov = dict(await self._store.get_overrides(room_id))
        sched = change(dict(ov.get("schedule", {})))
        ov["schedule"] = sched
        await self._store.put_overrides(room_id, ov)
        await self.apply_schedules()
        return sched

    async def apply_schedules(self) -> None:
        """(Re)build every room's schedule from config + stored overrides; the scheduler posts
        what changes for rooms whose current window moved (never a restart of a room that is
        still inside its window)."""
        assert self.scheduler is not None
        settings = self._settings()
        lists = load_holidays(settings.schedule.holidays_file)
        schedules = {r.id: schedule_for_room(r, settings, lists) for r in settings.rooms}
        stored = await self._store.all_overrides()  # one read, not one per room
        overrides = {r.id: dict(stored.get(r.id, {}).get("schedule", {})) for r in settings.rooms}
        self.scheduler.apply(schedules, overrides)
