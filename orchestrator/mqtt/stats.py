"""The bridge's counters, shared by its parts (connection loop, outbox, command intake)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BridgeStats"]


@dataclass(slots=True)
class BridgeStats:
    """Counters for /metrics and /readyz (read them; the bridge writes them)."""

    connected: bool = False
    connects: int = 0
    connection_losses: int = 0
    commands_received: int = 0
    commands_rejected: int = 0
    commands_replayed: int = 0
    retained_ignored: int = 0
    relay_received: int = 0
    relay_failed: int = 0
    states_dropped: int = 0
    events_dropped: int = 0
    replies_dropped: int = 0
