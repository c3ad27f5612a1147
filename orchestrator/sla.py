"""SLA accounting: scheduled seconds, live seconds, drops and recovery times per room and day.

A pure accumulator fed with room transitions and a periodic ``tick``; ``drain`` hands the
accumulated deltas to the store (``Store.add_sla``). "Scheduled" means the order was ON; "live"
means the room was LIVE. Days are UTC days; a span that crosses midnight is split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

LIVE = "LIVE"
DOWN_STATES = frozenset({"DEGRADED", "REFRESHING", "RESTARTING", "BACKOFF", "STARTING"})


@dataclass(slots=True)
class _RoomClock:
    scheduled: bool = False
    live: bool = False
    last: datetime | None = None
    down_since: datetime | None = None


@dataclass(slots=True)
class Delta:
    scheduled_s: float = 0.0
    live_s: float = 0.0
    drops: int = 0
    recoveries: list[float] = field(default_factory=list)


class SlaAccumulator:
    def __init__(self) -> None:
        self._rooms: dict[str, _RoomClock] = {}
        self._deltas: dict[tuple[str, date], Delta] = {}

    def _delta(self, room_id: str, day: date) -> Delta:
        return self._deltas.setdefault((room_id, day), Delta())

    def _accrue(self, room_id: str, rc: _RoomClock, now: datetime) -> None:
        if rc.last is None or now <= rc.last:
            rc.last = now if rc.last is None else max(rc.last, now)
            return
        start = rc.last
        while start < now:
            midnight = datetime.combine(
                start.date() + timedelta(days=1), datetime.min.time(), start.tzinfo
            )
            end = min(now, midnight)
            secs = (end - start).total_seconds()
            d = self._delta(room_id, start.date())
            if rc.scheduled:
                d.scheduled_s += secs
            if rc.live and rc.scheduled:
                d.live_s += secs
            start = end
        rc.last = now

    def observe(self, room_id: str, *, state: str, order_on: bool, at: datetime) -> None:
        """Record the room's state as of ``at`` (call on every transition)."""
        rc = self._rooms.setdefault(room_id, _RoomClock())
        self._accrue(room_id, rc, at)
        was_live = rc.live
        rc.live = state == LIVE
        rc.scheduled = order_on
        if was_live and not rc.live and order_on and state in DOWN_STATES:
            self._delta(room_id, at.date()).drops += 1
            rc.down_since = at
        elif rc.live and rc.down_since is not None:
            self._delta(room_id, at.date()).recoveries.append((at - rc.down_since).total_seconds())
            rc.down_since = None
        elif not order_on:
            rc.down_since = None

    def tick(self, now: datetime) -> None:
        for room_id, rc in self._rooms.items():
            self._accrue(room_id, rc, now)

    def forget(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    def drain(self) -> dict[tuple[str, date], Delta]:
        out, self._deltas = self._deltas, {}
        return out

    def down_since(self, room_id: str) -> datetime | None:
        rc = self._rooms.get(room_id)
        return rc.down_since if rc else None
