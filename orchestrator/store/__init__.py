"""Persistence: the Store protocol (``base``), its SQL implementation (``sql``), lease helpers."""

from orchestrator.store.base import (
    FencedOut,
    InboxItem,
    Lease,
    PruneCutoffs,
    RoomWrite,
    SlaRow,
    StartIntent,
    Store,
    StoreError,
    TransitionRecord,
)
from orchestrator.store.leases import (
    MEMBER_PREFIX,
    fair_share,
    is_member_key,
    live_instances,
    member_key,
    plan_balance,
)
from orchestrator.store.sql import DEFAULT_URL, SCHEMA_VERSION, SqlStore, StoreUnavailable

__all__ = [
    "DEFAULT_URL",
    "MEMBER_PREFIX",
    "SCHEMA_VERSION",
    "FencedOut",
    "InboxItem",
    "Lease",
    "PruneCutoffs",
    "RoomWrite",
    "SlaRow",
    "SqlStore",
    "StartIntent",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TransitionRecord",
    "fair_share",
    "is_member_key",
    "live_instances",
    "member_key",
    "plan_balance",
]
