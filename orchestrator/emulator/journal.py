"""The emulator's journal: what happened to each room, timestamped where it happened.

Benches that judge the daemon from outside (the soak) need two facts the job list cannot give
them between two samples: exactly when a room's push went up or down, and which room's calls an
injected fault actually hit. ``GET /_emulator/journal?since=N`` returns the entries after
sequence number ``N`` (wall-clock ``t`` of the emulator process, so a harness on the same
machine can compare it with its own clock):

* ``{"kind": "rtmp", "job_id", "room_id", "stream_key", "state"}`` on every RTMP state change;
* ``{"kind": "call", "operation", "room_id", "status", "cause"}`` for every API call answered
  with an error or hit by an injected fault; ``cause`` is ``"fault"`` (an admin-injected fault:
  status, latency or ghost), ``"throttled"`` (the service's own rate limit) or ``"service"``
  (any other error the service answered). ``room_id`` is ``None`` for tenant-wide calls.

The journal is bounded (oldest entries dropped; ``dropped`` says how many) so an emulator left
running cannot grow without end.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Journal"]


class Journal:
    def __init__(self, limit: int = 500_000, clock: Callable[[], float] = time.time) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._clock = clock
        self.seq = 0
        self.dropped = 0

    def _add(self, entry: dict[str, Any]) -> None:
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self.seq += 1
        entry["seq"] = self.seq
        entry["t"] = self._clock()
        self._entries.append(entry)

    def rtmp(self, job_id: str, room_id: str, stream_key: str, state: str) -> None:
        self._add(
            {
                "kind": "rtmp",
                "job_id": job_id,
                "room_id": room_id,
                "stream_key": stream_key,
                "state": state,
            }
        )

    def call(self, operation: str, room_id: str | None, status: int, cause: str) -> None:
        self._add(
            {
                "kind": "call",
                "operation": operation,
                "room_id": room_id,
                "status": status,
                "cause": cause,
            }
        )

    def since(self, seq: int, limit: int = 50_000) -> dict[str, Any]:
        """Entries with a sequence number above ``seq`` (at most ``limit``), oldest first."""
        first = self._entries[0]["seq"] if self._entries else self.seq + 1
        skip = max(0, seq + 1 - first)
        out = list(itertools.islice(self._entries, skip, skip + limit))
        return {"entries": out, "seq": self.seq, "dropped": self.dropped}

    def clear(self) -> None:
        self._entries.clear()
