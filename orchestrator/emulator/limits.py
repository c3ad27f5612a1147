"""Per-tenant rate limits and injected API faults (the gateway's side of every call).

Token buckets run on the simulation clock, so ``--time-scale`` compresses them like every other
delay. Faults fail or delay the next N calls of an operation, or every call for a while (a
storm), optionally only a share of them.
"""

from __future__ import annotations

from orchestrator.emulator.model import FAULT_OPERATIONS, Bucket, Fault
from orchestrator.emulator.tenant import TenantBase
from orchestrator.emulator.validation import (
    ApiError,
    bad_request,
)

__all__ = ["Limits"]


class Limits(TenantBase):
    """Rate limits and fault injection, checked by the HTTP layer before each call."""

    def check_rate(self, group: str) -> None:
        rate = self.rate_limits.get(group)
        if not rate:
            return
        now = self.now()
        bucket = self._buckets.get(group)
        if bucket is None:
            bucket = self._buckets[group] = Bucket(rate, now)
        if not bucket.take(now):
            raise ApiError(429, "APIGW.0308", "The throttling threshold has been reached")

    def take_fault(self, operation: str) -> Fault | None:
        fault_op = "list" if operation in ("list", "list_tenant") else operation
        for fault in self.faults:
            if fault.for_s is None and fault.count <= 0:
                continue
            if fault.operation not in (fault_op, "any"):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue  # this call gets through the partial storm
            if fault.for_s is None:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
            return fault
        return None

    def clear_faults(self) -> int:
        """Remove every pending fault; return how many there were."""
        n = len(self.faults)
        self.faults.clear()
        return n

    def add_fault(self, fault: Fault) -> None:
        if fault.operation not in FAULT_OPERATIONS:
            raise bad_request(f"operation must be one of {', '.join(FAULT_OPERATIONS)}")
        if fault.count < 1:
            raise bad_request("count must be >= 1")
        if not 0.0 < fault.probability <= 1.0:
            raise bad_request("probability must be in (0, 1]")
        if fault.for_s is not None:
            if not fault.for_s > 0:
                raise bad_request("for_s must be > 0")

            def end() -> None:  # by identity: two storms may have equal fields
                self.faults[:] = [f for f in self.faults if f is not fault]

            self.clock.call_later(fault.for_s, end)  # simulated seconds, like every delay
        self.faults.append(fault)
