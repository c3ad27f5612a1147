"""Test doubles for the bridge's own seams: a recording Control and the in-memory store.

Also used by the runnable ``_mqtt_bridge_proc.py`` (LWT test and the docs examples).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.control import CommandError
from orchestrator.mqtt.commands import reply_key
from orchestrator.store.memory import MemoryStore


@dataclass
class Call:
    method: str
    room_id: str | None
    kwargs: dict[str, Any]


@dataclass
class RecordingControl:
    """Implements the Control protocol; records every call; can be told to fail or block."""

    rooms: list[str] = field(default_factory=lambda: ["room-a", "room-b"])
    calls: list[Call] = field(default_factory=list)
    fail: dict[str, CommandError | Exception] = field(default_factory=dict)
    """method name -> exception to raise."""
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    """room id -> event the call waits for (to make a command slow)."""
    called: asyncio.Event = field(default_factory=asyncio.Event)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def room_ids(self) -> Sequence[str]:
        return list(self.rooms)

    def room_state(self, room_id: str) -> Mapping[str, Any]:
        if room_id not in self.rooms:
            raise CommandError("unknown_room", f"no room {room_id!r}")
        return self.states.get(room_id, {"room_id": room_id, "state": "IDLE", "order": "OFF"})

    async def _record(self, method: str, room_id: str | None, **kw: Any) -> Mapping[str, Any]:
        self.calls.append(Call(method, room_id, kw))
        self.called.set()
        gate = self.gates.get(room_id or "")
        if gate is not None:
            await gate.wait()
        exc = self.fail.get(method)
        if exc is not None:
            raise exc
        return {"accepted": True, "method": method}

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    async def start(self, room_id: str, *, until: datetime | None, cause: str) -> Mapping[str, Any]:
        return await self._record("start", room_id, until=until, cause=cause)

    async def stop(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("stop", room_id, cause=cause)

    async def restart(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("restart", room_id, cause=cause)

    async def refresh_output(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("refresh_output", room_id, cause=cause)

    async def set_output(
        self, room_id: str, *, url: str, stream_key: str, cause: str
    ) -> Mapping[str, Any]:
        return await self._record(
            "set_output", room_id, url=url, stream_key=stream_key, cause=cause
        )

    async def reset(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("reset", room_id, cause=cause)

    async def insert_script(
        self, room_id: str, *, text: str, play_type: str, cause: str
    ) -> Mapping[str, Any]:
        return await self._record(
            "insert_script", room_id, text=text, play_type=play_type, cause=cause
        )

    async def pause_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("pause_schedule", room_id, cause=cause)

    async def resume_schedule(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("resume_schedule", room_id, cause=cause)

    async def add_window(
        self, room_id: str, *, start: datetime, end: datetime, cause: str
    ) -> Mapping[str, Any]:
        return await self._record("add_window", room_id, start=start, end=end, cause=cause)

    async def skip_next_window(self, room_id: str, *, cause: str) -> Mapping[str, Any]:
        return await self._record("skip_next_window", room_id, cause=cause)

    async def reload(self, *, cause: str) -> Mapping[str, Any]:
        return await self._record("reload", None, cause=cause)


class MemoryReplyStore(MemoryStore):
    """The in-memory store (first reply per id wins), with views of the replies it holds."""

    def __init__(self, replies: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        for command_id, reply in (replies or {}).items():  # what an earlier run left behind
            self.data.replies[command_id] = (dict(reply), datetime.now(UTC))

    @property
    def replies(self) -> dict[str, Mapping[str, Any]]:
        """Every stored reply by key (a copy: write through ``put_reply``)."""
        return {k: v for k, (v, _) in self.data.replies.items()}

    @property
    def answers(self) -> dict[str, Mapping[str, Any]]:
        """Stored replies without the bridge's "started" markers."""
        return {str(v["id"]): v for k, v in self.replies.items() if "\x1f" not in k}

    def answer(self, room_id: str | None, action: str, command_id: str) -> Mapping[str, Any]:
        """The reply stored for one (room, action, id)."""
        return self.replies[reply_key(room_id, action, command_id)]
