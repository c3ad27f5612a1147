"""Why a room changed state, in words an operator reads on the status page and in ``status``.

Pure: a function of the event that caused a transition and the room before and after it. The
supervisor stores the sentence with the audit row (``detail["why"]``), because only the event
object knows e.g. which RTMP state a callback reported; older rows without it are described
from what the row kept (:func:`describe_record`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.rooms import model as m

__all__ = ["describe_record", "explain", "who"]

_STALL = re.compile(r"push stalled: stream_duration (\d+)s behind duration")


def who(cause: str) -> str:
    """``mqtt:panel:cmd-1`` → ``via MQTT (panel)``; ``ops:reset`` → ``via ops HTTP``."""
    kind, _, rest = cause.partition(":")
    if kind == "mqtt":
        client, _, _cmd = rest.rpartition(":")
        return f"via MQTT ({client})" if client else "via MQTT"
    if kind == "ops":
        return "via ops HTTP"
    if kind == "signal":
        return f"on {rest}" if rest else "on a signal"
    return f"({cause})" if cause else ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _from_error(last_error: str | None) -> str | None:
    if not last_error:
        return None
    stall = _STALL.match(last_error)
    if stall:
        return f"push stalled {stall.group(1)} s, no callback"
    return last_error


def _schedule(cause: str, opened: bool) -> str:
    kind = cause.partition(":")[2].split(" ", 1)[0]
    if not opened:
        return {
            "rollover": "planned rollover before the 168 h job limit",
            "reload": "schedule window removed by a reload",
        }.get(kind, "schedule window closed")
    return {
        "catch_up": "schedule window open at daemon start (catch-up)",
        "rollover": "planned rollover before the 168 h job limit",
    }.get(kind, "schedule window opened")


def explain(event: m.Event, before: m.Room, after: m.Room) -> str:
    """One short sentence: what made ``before`` become ``after``."""
    cause = event.cause
    error = _from_error(after.last_error)
    if isinstance(event, m.RtmpStateReported):
        if cause.startswith("probe:"):
            return "playback probe: stream dead while the API says CONNECTED"
        return f"callback {event.rtmp_state}"
    if isinstance(event, m.OrderChanged):
        if cause == "shutdown":
            return "daemon shutdown with stop_jobs = true"
        if cause.startswith("reload:"):
            return "room removed from the config (reload)"
        return _join(f"operator {'start' if event.order is m.Order.ON else 'stop'}", who(cause))
    if isinstance(event, m.WindowOpened):
        return _schedule(cause, opened=True)
    if isinstance(event, m.WindowClosed):
        return _schedule(cause, opened=False)
    if isinstance(event, m.Reset):
        return _join("operator reset", who(cause))
    if isinstance(event, m.RestartRequested):
        return _join("operator restart", who(cause))
    if isinstance(event, m.RefreshRequested):
        return _join("operator refresh", who(cause))
    if isinstance(event, m.OutputChanged):
        return "output URL or stream key changed"
    if isinstance(event, m.Resumed):
        return "daemon (re)attached to the room: re-checking its job"
    if isinstance(event, m.TimerFired):
        return _timer(before, after, error)
    if isinstance(event, m.JobsListed):
        if cause.startswith("startup") or cause.startswith("list:startup"):
            return "daemon start: running job adopted" if after.job_id else "daemon start: no job"
        return "job list: running job adopted" if after.job_id else "job list read"
    if isinstance(event, m.JobStarted):
        return "start accepted by MetaStudio"
    if isinstance(event, m.JobObserved):
        src = "poll" if cause.startswith("poll") else "job read"
        if after.state is m.RoomState.LIVE:
            return f"{src}: pushing (CONNECTED)"
        if error and after.last_error and _STALL.match(after.last_error):
            return error  # says itself that a read found it
        if after.state is m.RoomState.DEGRADED and event.rtmp_state and not error:
            return f"{src}: RTMP {event.rtmp_state}"
        return f"{src}: {error}" if error else f"{src}: job {event.state or 'gone'}"
    if isinstance(event, m.JobStopped):
        return "job stopped"
    if isinstance(event, m.CommandSucceeded):
        return f"{event.command} accepted"
    if isinstance(event, m.JobStartFailed | m.StopFailed | m.QueryFailed | m.CommandFailed):
        return error or event.error
    return error or _join(type(event).__name__, who(cause))


def _timer(before: m.Room, after: m.Room, error: str | None) -> str:
    wait = before.wait
    if wait is m.Wait.GRACE:
        return "still down after the grace period: repairing"
    if wait is m.Wait.REFRESH_BACKOFF:
        return "next refresh try"
    if wait is m.Wait.RETRY:
        return "backoff over: trying again"
    if wait in (m.Wait.STALE, m.Wait.PUSH_CHECK):
        return "watchdog: job re-read"
    return error or "timer"


def describe_record(
    event: str, cause: str, from_state: str, to_state: str, detail: Mapping[str, Any]
) -> str:
    """The sentence for an audit row: the stored one, else the best the row allows."""
    why = detail.get("why")
    if isinstance(why, str) and why:
        return why
    error = _from_error(detail.get("last_error") if isinstance(detail, Mapping) else None)
    if event == "RtmpStateReported":
        return "playback probe: stream dead" if cause.startswith("probe:") else "callback"
    if event in ("Reset", "RestartRequested", "RefreshRequested"):
        verb = {"Reset": "reset", "RestartRequested": "restart", "RefreshRequested": "refresh"}
        return _join("operator", verb[event], who(cause))
    if event == "OrderChanged":
        return _join("operator order", who(cause))
    if event in ("WindowOpened", "WindowClosed"):
        return _schedule(cause, opened=event == "WindowOpened")
    if error and to_state != "LIVE":
        return error
    return _join(event, f"({cause})" if cause else "")
