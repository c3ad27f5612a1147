"""The streaming platform behind a job's output URL, failing the way real ingests do.

The service's own link (``/_emulator/jobs/{id}/rtmp`` holds, cured by ``REFRESH_OUTPUT_URL``) is
one failure; the push *target* is another, and refreshing to the same target does not cure it:

* ``outage``: every push to that ingest fails until it returns (``for_s`` or a DELETE);
* ``flap``: pushes connect, then drop after ``up_s`` seconds, again and again;
* ``slow``: a connection takes ``delay_s`` seconds longer;
* a revoked stream key: pushes with it are refused on every ingest until restored.

An ingest is the ``host[:port]`` of the RTMP URL, so a backup output on another ingest works.
Pure state on the simulation clock (no randomness, no timers of its own): deterministic under
``--seed`` and compressed by ``--time-scale`` like every other emulator delay (``since`` and
``until`` are clock readings, wall-clock under a real clock: the service divides ``for_s``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "FAULT_KINDS",
    "PUSH_ERRORS",
    "IngestFault",
    "PlatformFaults",
    "ingest_of",
    "key_fingerprint",
]

FaultKind = Literal["outage", "flap", "slow"]
FAULT_KINDS: tuple[FaultKind, ...] = ("outage", "flap", "slow")

PUSH_ERRORS: dict[str, dict[str, str]] = {
    "stream key refused": {
        "error_code": "LIVE.STREAM_KEY_REFUSED",
        "error_msg": "RTMP publish refused by the ingest: stream key refused",
    },
    "ingest outage": {
        "error_code": "LIVE.INGEST_UNREACHABLE",
        "error_msg": "RTMP connection to the ingest failed",
    },
}
"""(unconfirmed) The ``error_info`` a running job shows while its push is refused, by reason.

The documentation calls ``error_info`` the job's "failure reason" and says nothing of a running
job whose ingest refuses it, nor of these codes: that the service reports an ingest's refusal
there (so a refused key can be told from a dead link) is an inference, switched off with
``--no-push-error-info``. Cleared once the push connects."""


def ingest_of(url: str) -> str:
    """``host[:port]`` of an RTMP URL, lower-cased (``""`` when the URL has none)."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def key_fingerprint(key: str) -> str:
    """A stream key's short SHA-256: enough to tell keys apart in the admin API, not a secret."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class IngestFault:
    kind: FaultKind
    since: float
    until: float  # math.inf: until cleared
    up_s: float = 0.0
    delay_s: float = 0.0

    def active(self, now: float) -> bool:
        return self.since <= now < self.until

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "since": self.since}
        out["until"] = None if math.isinf(self.until) else self.until
        if self.kind == "flap":
            out["up_s"] = self.up_s
        if self.kind == "slow":
            out["delay_s"] = self.delay_s
        return out


@dataclass(slots=True)
class PlatformFaults:
    ingests: dict[str, list[IngestFault]] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)

    def add(self, ingest: str, fault: IngestFault) -> None:
        self.ingests.setdefault(ingest.lower(), []).append(fault)

    def clear_ingest(self, ingest: str) -> int:
        return len(self.ingests.pop(ingest.lower(), []))

    def clear(self) -> None:
        self.ingests.clear()
        self.revoked.clear()

    def _active(self, url: str, kind: FaultKind, now: float) -> IngestFault | None:
        faults = self.ingests.get(ingest_of(url))
        if not faults:
            return None
        for fault in faults:
            if fault.kind == kind and fault.active(now):
                return fault
        return None

    def key_refused(self, key: str) -> bool:
        return bool(key) and key in self.revoked

    def refusal(self, url: str, key: str, now: float) -> str | None:
        """Why a push to ``url`` with ``key`` fails now (``None``: it connects)."""
        if key and key in self.revoked:
            return "stream key refused"
        if self._active(url, "outage", now) is not None:
            return "ingest outage"
        return None

    def connect_delay(self, url: str, now: float) -> float:
        fault = self._active(url, "slow", now)
        return fault.delay_s if fault is not None else 0.0

    def flap_up_s(self, url: str, now: float) -> float | None:
        fault = self._active(url, "flap", now)
        return fault.up_s if fault is not None else None

    def view(self, now: float) -> dict[str, Any]:
        return {
            "ingests": {
                ingest: [f.view() | {"active": f.active(now)} for f in faults]
                for ingest, faults in sorted(self.ingests.items())
            },
            "revoked_keys": sorted(key_fingerprint(k) for k in self.revoked),
        }
