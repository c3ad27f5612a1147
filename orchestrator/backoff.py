"""The one retry-delay formula of the daemon: capped exponential growth with jitter.

Every loop that retries (the MQTT link, the relay's link, cloud reads, alert delivery, adoption
at boot, a crashed room worker) takes its delays from here, so that they all behave alike and
are tested once. The arithmetic is pure (:func:`capped`, :func:`jittered`); :class:`Backoff`
adds the attempt counter and the random source, which callers inject for tests.

Jitter spreads the retries of many rooms or instances that failed together (a broker restart,
a 5xx storm), so they do not come back in one burst. ``Retry-After`` from the server is a floor:
waiting less only earns another refusal.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["Backoff", "capped", "jittered", "parse_retry_after"]

_MAX_EXPONENT = 60  # 2.0**60 is finite; beyond it only the cap matters


def capped(attempt: int, *, base_s: float, cap_s: float, factor: float = 2.0) -> float:
    """``min(cap_s, base_s * factor**attempt)`` for ``attempt`` = 0, 1, 2, ..."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    return min(cap_s, base_s * factor ** min(attempt, _MAX_EXPONENT))


def jittered(delay: float, u: float, *, spread: float = 0.5) -> float:
    """``delay`` scaled into ``[delay * (1 - spread), delay)`` by ``u`` in [0, 1).

    ``spread = 0.5`` is "equal jitter": never less than half the nominal delay, so a retry
    loop cannot spin, and on average three quarters of it.
    """
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread must be within [0, 1], got {spread}")
    return delay * (1.0 - spread + spread * u)


@dataclass
class Backoff:
    """Successive delays of one retry loop; :meth:`reset` after a success.

    ``retry_after`` (seconds the server asked for) raises a delay to at least that much, and
    may exceed ``cap_s``: the server knows better than our cap when it will answer again.
    """

    cap_s: float
    base_s: float = 0.5
    factor: float = 2.0
    spread: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.cap_s >= self.base_s and self.factor >= 1.0):
            raise ValueError(
                f"backoff needs 0 < base_s <= cap_s and factor >= 1 "
                f"(base_s={self.base_s}, cap_s={self.cap_s}, factor={self.factor})"
            )

    def peek(self, attempt: int | None = None) -> float:
        """The nominal (un-jittered) delay of ``attempt`` (default: the next one)."""
        n = self.attempt if attempt is None else attempt
        return capped(n, base_s=self.base_s, cap_s=self.cap_s, factor=self.factor)

    def next_delay(self, retry_after: float | None = None) -> float:
        """Delay before the next attempt, and count it."""
        d = jittered(self.peek(), self.rng.random(), spread=self.spread)
        self.attempt += 1
        if retry_after is not None and retry_after > d:
            return retry_after
        return d

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())
