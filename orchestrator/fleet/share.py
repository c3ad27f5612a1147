"""The shared tenant budget applied: leases change → this instance's rate limits change.

:func:`orchestrator.fleet.budget.tenant_shares` is the arithmetic; :class:`FleetBudget` is the
part the ownership manager calls (``on_change``) whenever what this instance holds may have
changed. It sets the share of every API group on the client's :class:`RateLimits` in place, and
the window scheduler's herd spacing (starts of a window opening at once) to this instance's
share of the start limit, so the fleet together spreads a herd at the tenant's start rate.

Before the first ownership tick the instance knows neither the other instances nor its rooms:
everything is paused (it owns nothing, so it has nothing to call for), never the whole limit,
which another instance may be using in full.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

import structlog

from orchestrator.fleet.budget import ALONE, tenant_shares
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits

__all__ = ["TENANT_READER", "BudgetView", "FleetBudget"]

log = structlog.get_logger(__name__)

TENANT_READER = "tenant-reader"
"""The fleet-wide role (a lease) of the one instance that lists the tenant's jobs."""


class BudgetView(Protocol):
    """What the budget needs of the ownership manager."""

    def budget_view(self, now: datetime | None = None) -> tuple[int, int, int]: ...
    def holds_role(self, role: str, now: datetime | None = None) -> bool: ...


class FleetBudget:
    """This instance's part of the tenant's API limits, kept in step with its leases."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        reader_query_share: Callable[[], float],
        set_herd_rate: Callable[[float], None] | None = None,
        on_shares: Callable[[Mapping[str, float], bool], None] | None = None,
    ) -> None:
        self._limits = limits
        self._reader_query_share = reader_query_share
        self._on_shares = on_shares  # the metrics
        start = limits.specs.get(ApiGroup.START)
        self._start_rate = start.rate if start is not None else 0.0  # the bucket's own limit
        self.set_herd_rate = set_herd_rate
        self.shares: dict[ApiGroup, float] = {group: 0.0 for group in ApiGroup}
        self._last: tuple[int, int, int, bool, float] | None = None
        limits.apply_shares(self.shares)  # paused until the first tick says what we own

    def attach_herd(self, set_herd_rate: Callable[[float], None]) -> None:
        """The window scheduler exists now: give it our share of the start rate from now on."""
        self.set_herd_rate = set_herd_rate
        herd = self._start_rate * self.shares[ApiGroup.START]
        if herd > 0:
            set_herd_rate(herd)

    def update(self, view: BudgetView) -> None:
        """Recompute and apply the shares (cheap; a no-op when nothing changed)."""
        owned, total, live = view.budget_view()
        reader = view.holds_role(TENANT_READER)
        reader_share = self._reader_query_share()  # re-read: a reload may change it
        key = (owned, total, live, reader, reader_share)
        if key == self._last:
            return
        self._last = key
        if live == 0:  # no good read of the lease table yet: nothing is ours
            shares = {group: 0.0 for group in ApiGroup}
        elif live == 1:
            shares = dict(ALONE)
        else:
            shares = tenant_shares(
                owned=owned,
                total=total,
                live_instances=live,
                reader=reader,
                reader_query_share=reader_share,
            )
        self.shares = shares
        self._limits.apply_shares(shares)
        herd = self._start_rate * shares[ApiGroup.START]
        if self.set_herd_rate is not None and herd > 0:
            self.set_herd_rate(herd)
        if self._on_shares is not None:
            self._on_shares({str(g): v for g, v in shares.items()}, reader)
        log.info(
            "api_budget_shared",
            owned=owned,
            rooms=total,
            instances=live,
            reader=reader,
            start_per_s=round(herd, 3),
            query_share=round(shares[ApiGroup.JOB_QUERY], 4),
        )
