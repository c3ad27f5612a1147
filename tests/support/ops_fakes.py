"""Fakes for the ops tests: a snapshot provider (our own seam) and the in-memory store.

Imported as ``tests.support.ops_fakes``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.ops.http import Readiness, SnapshotRooms, ops_routes
from orchestrator.ops.metrics import Metrics
from orchestrator.rooms.model import Order, RoomState, Snapshot
from orchestrator.store.base import SlaRow, StoreError, TransitionRecord
from orchestrator.store.memory import MemoryStore

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "ops-token-s3cret"


# What a broken store says: the readiness check must not repeat it (it names a path).
OUTAGE = StoreError("disk on fire at sqlite:////secret/path")


def memory_store(transitions: list[TransitionRecord], sla_rows: list[SlaRow]) -> MemoryStore:
    """The in-memory store holding these rows (``store.outage = OUTAGE`` breaks it)."""
    store = MemoryStore()
    store.data.transitions = list(transitions)
    store.data.sla = {(r.room_id, r.day): r for r in sla_rows}
    return store


class Rooms:
    """A mutable set of snapshots the tests change between requests."""

    def __init__(self) -> None:
        self.snaps: dict[str, Snapshot] = {}

    def put(self, room_id: str, state: RoomState, **kw: Any) -> None:
        base = Snapshot(
            room_id=room_id,
            state=state,
            order=Order.ON if state != RoomState.IDLE else Order.OFF,
            job_id=kw.pop("job_id", None),
            since=kw.pop("since", NOW - timedelta(minutes=5)),
            attempt=kw.pop("attempt", 0),
            next_retry_at=kw.pop("next_retry_at", None),
            last_error=kw.pop("last_error", None),
            alert=kw.pop("alert", None),
            extra=kw.pop("extra", {}),
        )
        self.snaps[room_id] = replace(base, **kw)

    def provider(self) -> list[Snapshot]:
        return list(self.snaps.values())


@dataclass
class OpsFixture:
    rooms: Rooms
    store: MemoryStore
    metrics: Metrics
    readiness: Readiness
    clock: list[float]

    def routes(self, token: str | None = None, now: datetime = NOW, **extra: Any) -> list[Any]:
        from pydantic import SecretStr

        return ops_routes(
            rooms=SnapshotRooms(self.rooms.provider),
            store=self.store,
            metrics=self.metrics,
            readiness=self.readiness,
            token=SecretStr(token) if token else None,
            now=lambda: now,
            **extra,
        )


def make_ops() -> OpsFixture:
    clock = [1000.0]
    rooms = Rooms()
    rooms.put(
        "room-a",
        RoomState.LIVE,
        job_id="job-1",
        extra={
            "stream_key": "sk-STREAMKEY",
            "output_url": "rtmp://push.example.com/live/STREAMKEY?auth_key=abc",
            "next_window": {
                "start": "2026-11-25T20:00:00+00:00",
                "end": "2026-11-25T23:00:00+00:00",
            },
        },
    )
    rooms.put(
        "room-b",
        RoomState.BACKOFF,
        attempt=2,
        next_retry_at=NOW + timedelta(seconds=40),
        last_error="CloudUnavailable status=503",
    )
    store = memory_store(
        transitions=[
            TransitionRecord("room-a", NOW - timedelta(hours=30), "UNKNOWN", "IDLE", "Reconciled"),
            TransitionRecord(
                "room-a", NOW - timedelta(hours=3), "IDLE", "STARTING", "WindowOpened"
            ),
            TransitionRecord(
                "room-a", NOW - timedelta(hours=2, minutes=58), "STARTING", "LIVE", "JobObserved"
            ),
            TransitionRecord(
                "room-a",
                NOW - timedelta(hours=1),
                "LIVE",
                "DEGRADED",
                "RtmpStateReported",
                cause="callback",
                detail={"hwSecret": "nope", "rtmp_state": "DISCONNECTED"},
            ),
            TransitionRecord(
                "room-a", NOW - timedelta(minutes=55), "DEGRADED", "LIVE", "RtmpStateReported"
            ),
        ],
        sla_rows=[
            SlaRow("room-a", NOW.date(), 10800.0, 10500.0, 1, 1, 300.0, 300.0),
            SlaRow("room-a", NOW.date() - timedelta(days=1), 100.0, 0.0, 0, 0, 0.0, 0.0),
        ],
    )
    readiness = Readiness(api_reachable_s=120.0, clock=lambda: clock[0])
    return OpsFixture(rooms, store, Metrics(version="test"), readiness, clock)
