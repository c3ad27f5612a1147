"""How the tenant's API limits are shared between instances (pure arithmetic).

MetaStudio throttles per tenant, not per client (api doc §11.3): three instances that each
used the documented 20 queries/s would send 60 and throttle one another exactly when many rooms
need attention. So each instance uses a share of every group's limit:

* the calls a room needs (starts, stops, commands, its own reads) follow the rooms: an
  instance owning ``owned`` of ``total`` configured rooms gets ``owned / total`` of the group.
  Leases are exclusive, so the shares of all instances never add up to more than 1, whatever
  the number of instances; rooms nobody holds (their owner just died) leave their part idle
  until the leases move, which is the safe direction;
* the tenant-wide job listing is done by one elected reader for the whole fleet, so a fixed
  part of the job-query limit (``reader_query_share``) goes to whoever holds the reader lease
  and the rest is split by rooms.

An instance alone (no leases, or the only live member) keeps the whole limit.
"""

from __future__ import annotations

from orchestrator.metastudio.ratelimit import ApiGroup

__all__ = ["ALONE", "tenant_shares"]

ALONE: dict[ApiGroup, float] = {group: 1.0 for group in ApiGroup}


def tenant_shares(
    *,
    owned: int,
    total: int,
    live_instances: int,
    reader: bool,
    reader_query_share: float = 0.25,
) -> dict[ApiGroup, float]:
    """This instance's fraction of each group's tenant limit."""
    if not 0.0 <= reader_query_share < 1.0:
        raise ValueError(f"reader_query_share must be within [0, 1), got {reader_query_share}")
    if owned < 0 or total < 0 or owned > total:
        raise ValueError(f"owned rooms ({owned}) must be within [0, total ({total})]")
    if live_instances <= 1:
        return dict(ALONE)
    rooms = owned / total if total else 0.0
    shares = {group: rooms for group in ApiGroup}
    shares[ApiGroup.JOB_QUERY] = (1.0 - reader_query_share) * rooms + (
        reader_query_share if reader else 0.0
    )
    return shares
