"""SLA accounting: scheduled seconds, live seconds, drops and recovery times per room and day.

A pure accumulator (no clock: every call carries its time) fed with room transitions and a
periodic ``tick``; ``drain`` hands the accumulated deltas to the store (``Store.add_sla_rows``) and
``restore`` takes them back when the store could not take them, so an outage loses nothing.

* scheduled: the order was ON; live: LIVE while scheduled (so live <= scheduled, always).
* a drop: LIVE → an off-air state (DEGRADED, REFRESHING, RESTARTING, BACKOFF, STARTING or
  QUARANTINED) while the order stays ON; stopping on an order OFF is not a drop.
* a recovery: back to LIVE after a drop; its duration is drop → LIVE (a quarantine included),
  counted on the day it ended. An order OFF while down forgets the drop (nothing to recover).
* a drop begins when the stream stopped, not when the daemon noticed: a read that shows the
  push dead for a while, or the playback probe, gives an earlier ``down_since``. The seconds
  between then and the transition were accrued as live and are taken back (from a day already
  drained too: its next delta carries negative live seconds, which the store adds).
* days are UTC days; a span that crosses midnight is split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

__all__ = ["DOWN_STATES", "LIVE", "Delta", "SlaAccumulator"]

LIVE = "LIVE"
DOWN_STATES = frozenset(
    {"DEGRADED", "REFRESHING", "RESTARTING", "BACKOFF", "STARTING", "QUARANTINED"}
)


@dataclass(slots=True)
class _RoomClock:
    scheduled: bool = False
    live: bool = False
    last: datetime | None = None
    down_since: datetime | None = None
    live_since: datetime | None = None  # a back-dated drop never reaches before this


@dataclass(slots=True)
class Delta:
    """What one room accrued on one UTC day since the last ``drain``."""

    scheduled_s: float = 0.0
    live_s: float = 0.0
    drops: int = 0
    recoveries: list[float] = field(default_factory=list)


class SlaAccumulator:
    """Per-room clocks (what the room is doing since when) and undrained per-day deltas."""

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

    def _unlive(self, room_id: str, start: datetime, end: datetime) -> None:
        """Take back the live seconds accrued in ``[start, end)`` (split at midnights)."""
        while start < end:
            midnight = datetime.combine(
                start.date() + timedelta(days=1), datetime.min.time(), start.tzinfo
            )
            stop = min(end, midnight)
            self._delta(room_id, start.date()).live_s -= (stop - start).total_seconds()
            start = stop

    def observe(
        self,
        room_id: str,
        *,
        state: str,
        order_on: bool,
        at: datetime,
        down_since: datetime | None = None,
    ) -> None:
        """Record the room's state as of ``at`` (aware; call on every transition).

        ``down_since``: when a drop this transition opens really began (the room's
        ``drop_since``); ignored unless earlier than ``at`` and bounded by the room's last
        arrival in LIVE."""
        at = at.astimezone(UTC)
        rc = self._rooms.setdefault(room_id, _RoomClock())
        was_scheduled = rc.scheduled
        self._accrue(room_id, rc, at)
        was_live = rc.live
        rc.live = state == LIVE
        rc.scheduled = order_on
        if rc.live and not was_live:
            rc.live_since = at
        if was_live and not rc.live and order_on and state in DOWN_STATES:
            start = at
            if down_since is not None:
                start = min(at, max(down_since.astimezone(UTC), rc.live_since or at))
            if was_scheduled and start < at:
                self._unlive(room_id, start, at)
            self._delta(room_id, start.date()).drops += 1
            rc.down_since = start
        elif rc.live and rc.down_since is not None:
            self._delta(room_id, at.date()).recoveries.append((at - rc.down_since).total_seconds())
            rc.down_since = None
        elif not order_on:
            rc.down_since = None

    def tick(self, now: datetime) -> None:
        """Accrue every room up to ``now`` (before a drain)."""
        now = now.astimezone(UTC)
        for room_id, rc in self._rooms.items():
            self._accrue(room_id, rc, now)

    def forget(self, room_id: str) -> None:
        """Stop accounting a removed room (its undrained deltas are still drained)."""
        self._rooms.pop(room_id, None)

    def drain(self) -> dict[tuple[str, date], Delta]:
        """Hand over (and reset) the deltas accrued since the last drain."""
        out, self._deltas = self._deltas, {}
        return out

    def restore(self, deltas: dict[tuple[str, date], Delta]) -> None:
        """Take back drained deltas the store did not accept; the next drain carries them."""
        for key, d in deltas.items():
            mine = self._deltas.setdefault(key, Delta())
            mine.scheduled_s += d.scheduled_s
            mine.live_s += d.live_s
            mine.drops += d.drops
            mine.recoveries[:0] = d.recoveries

    def down_since(self, room_id: str) -> datetime | None:
        """When the room's current unrecovered drop began, or None."""
        rc = self._rooms.get(room_id)
        return rc.down_since if rc else None
