"""Pure helpers for sharing rooms between instances through lease rows (no I/O, no clock reads).

Why a membership key: an instance that has just joined holds no room lease, so nobody could see
it in the lease table and it would never get a share. Each instance therefore also renews a lease
on its own pseudo-room :func:`member_key` in the same ``acquire_leases`` batch. Member keys are
never counted against ``max_rooms`` and never balanced.

How a rebalance runs without interrupting a stream: every instance reads ``store.leases()``,
calls :func:`plan_balance` and releases the rooms listed for itself (the job keeps running; only
supervision moves), then keeps acquiring with ``max_rooms=fair_share(...)`` so it does not take
them back. The newcomer acquires the released rooms and adopts their running jobs (list-and-adopt).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from orchestrator.store.base import Lease

__all__ = [
    "MEMBER_PREFIX",
    "ROLE_PREFIX",
    "fair_share",
    "is_member_key",
    "live_instances",
    "member_key",
    "plan_balance",
]

MEMBER_PREFIX = "~member:"

ROLE_PREFIX = "~role:"
"""Pseudo-rooms leased for a fleet-wide role (``orchestrator.ownership``): like membership keys,
never counted against ``max_rooms`` (a reader holding its role would take one room less)."""


def member_key(owner: str) -> str:
    """The pseudo-room an instance leases to announce that it is alive."""
    return MEMBER_PREFIX + owner


def is_member_key(room_id: str) -> bool:
    return room_id.startswith(MEMBER_PREFIX)


def live_instances(leases: Iterable[Lease], now: datetime) -> list[str]:
    """Owners with at least one unexpired lease (room or membership), sorted."""
    return sorted({lease.owner for lease in leases if lease.owner and lease.expires_at > now})


def fair_share(n_rooms: int, n_instances: int) -> int:
    """Most rooms one instance should hold so that ``n_instances`` cover ``n_rooms``."""
    if n_instances <= 0:
        return n_rooms
    return math.ceil(n_rooms / n_instances)


def plan_balance(
    leases: Sequence[Lease], instances: Sequence[str], now: datetime
) -> dict[str, list[str]]:
    """Rooms each live instance should release so every instance ends near its fair share.

    Only unexpired room leases count (expired ones are free for anyone already). Rooms held by
    an owner that is not in ``instances`` are counted as belonging to nobody. An instance over
    ``fair_share`` releases its excess, highest room ids first (deterministic, so a repeated plan
    releases the same rooms). Owners with nothing to release are absent from the result.
    """
    live = set(instances)
    held: dict[str, list[str]] = {}
    n_rooms = 0
    for lease in leases:
        if is_member_key(lease.room_id) or not lease.owner:
            continue
        n_rooms += 1
        if lease.owner in live and lease.expires_at > now:
            held.setdefault(lease.owner, []).append(lease.room_id)
    target = fair_share(n_rooms, len(live))
    plan: dict[str, list[str]] = {}
    for owner, rooms in held.items():
        excess = len(rooms) - target
        if excess > 0:
            plan[owner] = sorted(rooms)[-excess:]
    return plan
