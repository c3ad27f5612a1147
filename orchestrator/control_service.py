"""The daemon's :class:`~orchestrator.control.Control`: commands become events posted to rooms.

MQTT, the CLI (through MQTT) and the ops API call these methods; each checks that the room is
managed here (and, with leases, owned by this instance), then posts one event to the room's
queue and answers ``{"accepted": True}`` at once: the room machine decides what to do and when.
Nothing here calls the cloud. ``insert_script`` is the room supervisor's to carry out (it needs
the room's live job); output and schedule overrides are stored through
:class:`~orchestrator.overrides.Overrides` before the room is told.

Kept apart from ``orchestrator.control`` (the protocol and :class:`CommandError`): that module
is in the core layer and the adapters import it; this one is a service that reads the settings,
the clock and the stored overrides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from orchestrator.clock import Clock
from orchestrator.control import CommandError
from orchestrator.overrides import Overrides
from orchestrator.payloads import snapshot_json
from orchestrator.rooms import model
from orchestrator.schedule import overrides as sched_ov
from orchestrator.settings import Settings, schedule_for_room

__all__ = ["ControlService", "Leases", "Rooms"]


class Rooms(Protocol):
    """What the control service needs of the room supervisor."""

    def post(self, room_id: str, event: model.Event) -> bool: ...
    def snapshot(self, room_id: str) -> model.Snapshot: ...
    def supervises(self, room_id: str) -> bool: ...
    def room_ids(self) -> list[str]: ...
    async def insert_script(
        self, room_id: str, *, text: str, play_type: str, cause: str
    ) -> Mapping[str, Any]: ...


class Leases(Protocol):
    """What the control service needs of the ownership manager (several instances)."""

    def is_owned(self, room_id: str, now: datetime) -> bool: ...
    def owner_of(self, room_id: str) -> str | None: ...


class ControlService:
    """Implements :class:`~orchestrator.control.Control` (see the module doc).

    ``reload`` is the daemon's: re-reading the config rewires every part, not only rooms.
    """

    def __init__(
        self,
        *,
        rooms: Rooms,
        overrides: Overrides,
        settings: Callable[[], Settings],
        clock: Clock,
        instance_id: str,
        ownership: Leases | None,
        reload: Callable[[str], Awaitable[Mapping[str, Any]]],
    ) -> None:
        self._rooms = rooms
        self._overrides = overrides
        self._settings = settings
        self._clock = clock
        self._instance_id = instance_id
        self._ownership = ownership
        self._reload = reload

    # --- checks --------------------------------------------------------------------------

    def _need_room(self, room_id: str) -> None:
        if self._settings().room(room_id) is None:
            raise CommandError("unknown_room", f"room {room_id!r} is not managed here")
        if self._ownership is not None and not (
            self._ownership.is_owned(room_id, self._clock.now()) and self._rooms.supervises(room_id)
        ):
            self._not_owner(room_id)

    def _not_owner(self, room_id: str) -> None:
        owner = self._ownership.owner_of(room_id) if self._ownership else None
        if owner is not None and owner != self._instance_id:
            # Every instance hears every command; the owner answers it. Staying silent here
            # keeps the requester from getting a second, contradicting reply.
            raise CommandError("owned_elsewhere", f"room {room_id!r} is owned by {owner}")
        raise CommandError(
            "not_owner",
            f"room {room_id!r} is owned by instance {owner or '(none right now)'}, "
            f"not by this one ({self._instance_id}); send it there or retry",
        )

    def _post(self, room_id: str, event: model.Event) -> None:
        self._need_room(room_id)
        if not self._rooms.post(room_id, event):
            if self._ownership is not None:
                self._not_owner(room_id)
            raise CommandError("unknown_room", f"room {room_id!r} has no worker")

    # --- reads ---------------------------------------------------------------------------

    def room_ids(self) -> Sequence[str]:
        return [r.id for r in self._settings().rooms]

    def rooms_json(self) -> list[Mapping[str, Any]]:
        """Every room this instance works on (with leases: the rooms it owns)."""
        if self._ownership is not None:
            now = self._clock.now()
            owned = [r for r in self._rooms.room_ids() if self._ownership.is_owned(r, now)]
            return [self.room_state(rid) for rid in owned]
        return [self.room_state(rid) for rid in self.room_ids()]

    def room_state(self, room_id: str) -> Mapping[str, Any]:
        self._need_room(room_id)
        state = snapshot_json(self._rooms.snapshot(room_id))
        scheduler = self._overrides.scheduler
        window = scheduler.next_window(room_id, self._clock.now()) if scheduler else None
        if window is not None:
            state["next_window"] = {
                "start": window.start.isoformat(),
                "end": window.end.isoformat() if window.end else None,
            }
        return state

    # --- room commands: one event each ---------------------------------------------------

    async def start(self, room_id: str, *, until: datetime | None, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.OrderChanged(order=model.Order.ON, deadline=until, cause=cause))
        return {"accepted": True}

    async def stop(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.OrderChanged(order=model.Order.OFF, cause=cause))
        return {"accepted": True}

    async def restart(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.RestartRequested(cause=cause))
        return {"accepted": True}

    async def refresh_output(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.RefreshRequested(cause=cause))
        return {"accepted": True}

    async def set_output(
        self, room_id: str, *, url: str, stream_key: str, cause: str
    ) -> Mapping[str, Any]:
        self._need_room(room_id)
        await self._overrides.set_output(room_id, url=url, stream_key=stream_key)
        self._post(room_id, model.OutputChanged(cause=cause))
        return {"accepted": True, "output_url": url}

    async def reset(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._post(room_id, model.Reset(cause=cause))
        return {"accepted": True}

    async def insert_script(
        self, room_id: str, *, text: str, play_type: str, cause: str
    ) -> Mapping[str, Any]:
        """The room's live job speaks ``text``: ``{"command_id", "job_id"}``, or
        :class:`CommandError` ``not_live`` / ``cloud_error`` from the supervisor."""
        self._need_room(room_id)
        return await self._rooms.insert_script(room_id, text=text, play_type=play_type, cause=cause)

    # --- schedule overrides --------------------------------------------------------------

    async def _change_schedule(
        self, room_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Mapping[str, Any]:
        self._need_room(room_id)
        return {"schedule": await self._overrides.change_schedule(room_id, change)}

    async def pause_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._change_schedule(room_id, sched_ov.pause)

    async def resume_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._change_schedule(room_id, sched_ov.resume)

    async def add_window(
        self, room_id: str, *, start: datetime, end: datetime, cause: str
    ) -> Mapping[str, Any]:
        if end <= start:
            raise CommandError("bad_payload", "end must be after start")
        return await self._change_schedule(room_id, lambda ov: sched_ov.add_window(ov, start, end))

    async def skip_next_window(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        self._need_room(room_id)
        settings = self._settings()
        room = settings.room(room_id)
        assert room is not None
        sched = schedule_for_room(room, settings)
        now = self._clock.now()
        return await self._change_schedule(room_id, lambda ov: sched_ov.skip_next(ov, sched, now))

    # --- the daemon's ----------------------------------------------------------------------

    async def reload(self, *, cause: str) -> Mapping[str, Any]:
        return await self._reload(cause)
