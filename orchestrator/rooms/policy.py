"""Recovery ladder parameters and backoff arithmetic (pure: no clock, no randomness).

Jitter is an *input*: every function takes ``u`` in [0, 1) that the driver drew from its seeded
source and carried in on the event (``Event.jitter``). ``u = 0.5`` means no jitter, so tests and
documentation can compute exact numbers, and ``u → 1`` gives the worst case.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["Policy", "poll_period"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The numbers of one room's recovery ladder.

    These are the one set of defaults: ``settings.RecoverySettings`` takes its field defaults
    from here and documents each (this module stays pure: it must not import the settings).
    """

    grace_s: float = 10.0
    widen_exit_minutes: int = 10
    refresh_tries: int = 3
    refresh_backoff_s: float = 2.0
    refresh_backoff_factor: float = 1.5
    refresh_confirm_s: float = 10.0
    jitter: float = 0.2
    restart_backoff_s: float = 5.0
    restart_backoff_max_s: float = 300.0
    api_retry_s: float = 2.0
    api_retry_factor: float = 1.5
    quarantine_after: int = 5
    quarantine_window_s: float = 1800.0
    stable_after_s: float = 60.0
    start_confirm_s: float = 120.0
    stop_confirm_s: float = 60.0
    stale_after_s: float = 90.0
    stall_after_s: float = 10.0
    stray_jobs: Literal["stop", "alert"] = "stop"
    unrecovered_alert_s: float = 120.0
    key_refused_markers: tuple[str, ...] = (
        "STREAM_KEY_REFUSED",
        "stream key refused",
        "NetStream.Publish.BadName",
    )
    ingest_unreachable_markers: tuple[str, ...] = (
        "INGEST_UNREACHABLE",
        "connection to the ingest failed",
    )
    ingest_wait_s: float = 120.0
    outputs: int = 1
    """How many RTMP targets the room has: the primary plus its backups."""

    @classmethod
    def from_settings(cls, s: object, *, outputs: int = 1) -> Policy:
        """From a ``settings.RecoverySettings`` (or anything with the same attributes; a field
        it lacks keeps its default here)."""
        names = {f.name for f in fields(cls)} - {"outputs"}
        values: dict[str, Any] = {n: getattr(s, n) for n in names if hasattr(s, n)}
        for n in ("refresh_tries", "quarantine_after"):  # 0 would end a ladder before it starts
            if n in values:
                values[n] = max(1, values[n])
        return cls(**values, outputs=max(1, outputs))

    def key_refused(self, error: str | None) -> bool:
        """Does a job's ``error_info`` say the ingest refuses its stream key? (unconfirmed:
        see ``RecoverySettings.key_refused_markers``)"""
        if not error:
            return False
        text = error.casefold()
        return any(m.casefold() in text for m in self.key_refused_markers if m)

    def ingest_unreachable(self, error: str | None) -> bool:
        """Does a job's ``error_info`` say its ingest cannot be reached? (unconfirmed: see
        ``RecoverySettings.ingest_unreachable_markers``)"""
        if not error:
            return False
        text = error.casefold()
        return any(m.casefold() in text for m in self.ingest_unreachable_markers if m)

    # ------------------------------------------------------------------ backoff

    def jittered(self, delay: float, u: float) -> float:
        """``delay`` scaled by a factor in [1 - jitter, 1 + jitter) chosen by ``u`` in [0, 1)."""
        u = min(max(u, 0.0), 1.0)
        return max(0.0, delay * (1.0 + self.jitter * (2.0 * u - 1.0)))

    def refresh_delay(self, failed_try: int, u: float) -> float:
        """Wait after the ``failed_try``-th (0-based) failed refresh of one output URL."""
        return self.jittered(self.refresh_backoff_s * self.refresh_backoff_factor**failed_try, u)

    def restart_delay(self, retries: int, u: float, retry_after: float | None = None) -> float:
        """Wait before attempt number ``retries`` (1-based) after a failure: exponential, capped.

        A service ``Retry-After`` hint is a floor; the cap still bounds our own growth.
        """
        exponent = max(0, retries - 1)
        base = self.restart_backoff_s * 2.0 ** min(exponent, 30)
        delay = min(self.restart_backoff_max_s, self.jittered(base, u))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def restart_wait(self, retries: int, u: float, retry_after: float | None = None) -> float:
        """Wait before list-and-start attempt number ``retries`` (1-based) since the room was
        last stably LIVE (``stable_after_s``): the first goes at once (a stream that was fine
        until now is not a crash loop, and every second waited is dead air), then
        ``restart_delay`` from its start: 0, 5, 10, 20 s ... by default. A service
        ``Retry-After`` is still a floor."""
        if retries <= 1:
            return max(0.0, retry_after or 0.0)
        return self.restart_delay(retries - 1, u, retry_after)

    def api_retry_wait(self, retries: int, u: float, retry_after: float | None = None) -> float:
        """Like :meth:`restart_wait`, after an attempt that failed on a temporary API error:
        ``api_retry_s * api_retry_factor^(n-2)`` (0, 2, 3, 4.5 … s by default), capped by
        ``restart_backoff_max_s``. A gateway that fails some of the calls lets a start through
        within seconds; doubling from 5 s waited 35 s for a fourth try."""
        if retries <= 1:
            return max(0.0, retry_after or 0.0)
        base = self.api_retry_s * self.api_retry_factor ** min(retries - 2, 60)
        delay = min(self.restart_backoff_max_s, self.jittered(base, u))
        return delay if retry_after is None else max(delay, retry_after)

    @property
    def refresh_attempts(self) -> int:
        """Total REFRESH_OUTPUT_URL attempts of one ladder: tries * outputs."""
        return self.refresh_tries * self.outputs

    def ladder_worst_case_s(self, call_s: float = 0.0) -> float:
        """Longest time from a reported drop until the broken job's stop is sent.

        Grace, an optional RESET_EXIT_CONFIG, every refresh waiting its full confirmation time,
        every backoff at maximum jitter; each API call may take ``call_s`` (its timeout).
        """
        total = self.grace_s
        if self.widen_exit_minutes > 0:
            total += call_s
        for output in range(self.outputs):
            for n in range(self.refresh_tries):
                total += call_s + self.refresh_confirm_s
                last = output == self.outputs - 1 and n == self.refresh_tries - 1
                if not last:
                    total += self.refresh_delay(n, 1.0)
        return total + call_s  # the stop call


def poll_period(jobs: int, *, longest_s: float, shortest_s: float, queries_per_s: float) -> float:
    """Seconds between two polls of a tenant with ``jobs`` running jobs: one query per page
    of 100 spread at ``queries_per_s``, within [``shortest_s``, ``longest_s``] (the longest
    wins if the two cross)."""
    pages = max(1, -(-jobs // 100))
    return min(longest_s, max(shortest_s, pages / queries_per_s))
