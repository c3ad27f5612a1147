"""The soak's judgement, from the emulator's journal: live time, outages and who is to blame.

Pure functions over real-time intervals (``(start, end)`` in the harness's wall-clock seconds),
so the rules can be read — and tested — apart from the processes that produce the data.

Attribution (issue #24, "strict"): an outage of room R that begins at ``t0`` is *attributed*
(excused from the SLA) only if one of these explains it:

* a fault injected on R itself (a drop, a failed job, a failed job whose next start is a ghost)
  at ``f`` with ``f - lead <= t0 <= f + attribution_s``;
* a call *of R* to act (start, list before a start, command: ``ACTING_OPERATIONS``) that an
  injected API fault *failed* (a 5xx/429 storm, a ghost start's gateway timeout), at ``h`` with
  ``h - lead <= t0 <= h + attribution_s``: the storm must have failed that room's attempt to
  act, not merely been running. A call an injected latency only delayed (answered all the
  same, well within the daemon's read timeout) did not fail and excuses nothing;
* a SIGKILL of the daemon from ``k`` until it was ready again at ``r``: ``t0`` in
  ``[k - lead, r + lead]``, or up to ``r + attribution_s`` for a room whose window opened
  while the daemon was dead (nobody could start it).

A broker restart excuses nothing (MQTT carries commands, not streams), and neither does the
service's own rate limiting (the daemon is configured to the limits). Every other outage is
*unaccounted* and counts against the SLA. The rule used until 2026-12-03 (``loose``) excused an
outage that began within ``attribution_s`` of *any* fault, room-less storms included, for every
room: :func:`excused_share` measures how much of the scheduled timeline each rule excuses.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Interval = tuple[float, float]

__all__ = [
    "ACTING_OPERATIONS",
    "ROOM_FAULTS",
    "Excuse",
    "Interval",
    "LinkTimeline",
    "api_fault_class",
    "clip",
    "excused_share",
    "first_live_after",
    "live_at",
    "merge",
    "percentile",
    "subtract",
    "total",
]

ROOM_FAULTS = frozenset({"drop_held", "drop_forever", "job_failed", "ghost_start"})
# A storm stops no stream: what it can do is keep a room from being started or repaired. So a
# failed call excuses an outage only if it was an attempt to act (a start, the room's job list
# a start checks first, a command such as REFRESH_OUTPUT_URL); a failed read of a running job
# (the poll) excuses nothing — every room polls, so counting polls would excuse nearly every
# room during every storm — and neither does a failed stop (the job keeps pushing).
ACTING_OPERATIONS = frozenset({"start", "list", "command"})


def api_fault_class(status: int) -> str:
    """The injected API fault behind a journal call entry (``cause == "fault"``)."""
    if status == 503:
        return "storm_5xx"
    if status == 429:
        return "storm_429"
    if status == 504:
        return "ghost_call"  # a start answered only by a gateway timeout (its job exists)
    return "latency"  # answered (2xx/4xx) but delayed


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(base: Sequence[Interval], minus: Sequence[Interval]) -> list[Interval]:
    """``base`` minus ``minus`` (both merged and sorted)."""
    out: list[Interval] = []
    j = 0
    for a, b in base:
        cur = a
        while j < len(minus) and minus[j][1] <= cur:
            j += 1
        k = j
        while k < len(minus) and minus[k][0] < b:
            ma, mb = minus[k]
            if ma > cur:
                out.append((cur, ma))
            cur = max(cur, mb)
            if cur >= b:
                break
            k += 1
        if cur < b:
            out.append((cur, b))
    return out


def clip(intervals: Sequence[Interval], within: Sequence[Interval]) -> list[Interval]:
    """The parts of ``intervals`` inside ``within`` (both merged and sorted)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(intervals) and j < len(within):
        a = max(intervals[i][0], within[j][0])
        b = min(intervals[i][1], within[j][1])
        if a < b:
            out.append((a, b))
        if intervals[i][1] < within[j][1]:
            i += 1
        else:
            j += 1
    return out


def live_at(live: Sequence[Interval], t: float) -> bool:
    return any(a <= t < b for a, b in live)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (NaN for no values): p99 of 40 values is the maximum."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def total(intervals: Iterable[Interval]) -> float:
    return sum(b - a for a, b in intervals)


def first_live_after(live: Sequence[Interval], t: float) -> float | None:
    """When the room is (or next becomes) live at or after ``t``; None if never."""
    for a, b in live:
        if b > t:
            return max(a, t)
    return None


@dataclass(slots=True)
class LinkTimeline:
    """Live intervals per room from the journal's RTMP entries (a room is live while one of its
    jobs is CONNECTED), and every moment two jobs pushed one stream key."""

    live: dict[str, list[Interval]] = field(default_factory=dict)
    double_pushers: list[tuple[float, str, list[str]]] = field(default_factory=list)

    @classmethod
    def build(cls, entries: Iterable[Mapping[str, Any]], end: float) -> LinkTimeline:
        state: dict[str, tuple[str, str]] = {}  # connected job → (room, stream key)
        since: dict[str, float] = {}  # room → live since
        spans: dict[str, list[Interval]] = defaultdict(list)
        out = cls()
        for e in entries:
            if e.get("kind") != "rtmp":
                continue
            job, room, key, t = str(e["job_id"]), str(e["room_id"]), str(e["stream_key"]), e["t"]
            was_live = any(r == room for r, _ in state.values())
            if e["state"] == "CONNECTED":
                others = [j for j, (_, k) in state.items() if k == key and j != job]
                if others:
                    out.double_pushers.append((float(t), key, sorted([job, *others])))
                state[job] = (room, key)
            else:
                state.pop(job, None)
            is_live = any(r == room for r, _ in state.values())
            if is_live and not was_live:
                since[room] = float(t)
            elif was_live and not is_live:
                spans[room].append((since.pop(room), float(t)))
        for room, t0 in since.items():
            spans[room].append((t0, end))
        out.live = {room: merge(v) for room, v in spans.items()}
        return out


@dataclass(frozen=True, slots=True)
class Excuse:
    """An outage of ``room`` that begins within [start, end] is attributed to ``kind``."""

    room: str
    kind: str
    start: float
    end: float
    ref: float  # the fault's (or the hit call's) time: recoveries are measured from here


def excused_share(
    scheduled: Mapping[str, Sequence[Interval]], windows: Mapping[str, Sequence[Interval]]
) -> float:
    """Share of the scheduled timeline in which an outage starting then would be excused."""
    sched = sum(total(v) for v in scheduled.values())
    if not sched:
        return float("nan")
    covered = sum(
        total(clip(merge(windows.get(room, ())), merge(v))) for room, v in scheduled.items()
    )
    return covered / sched
