"""Fakes for the ops tests: a snapshot provider and an in-memory store (our own seams).

Imported as ``tests.support.ops_fakes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from orchestrator.ops.http import Readiness, SnapshotRooms, ops_routes
from orchestrator.ops.metrics import Metrics
from orchestrator.rooms.model import Order, RoomState, Snapshot
from orchestrator.store.base import SlaRow, Store, StoreError, TransitionRecord

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "ops-token-s3cret"


@dataclass
class FakeStore:
    transitions_: list[TransitionRecord] = field(default_factory=list)
    sla_rows: list[SlaRow] = field(default_factory=list)
    broken: bool = False

    async def ping(self) -> None:
        if self.broken:
            raise StoreError("disk on fire at sqlite:////secret/path")

    async def transitions(
        self, room_id: str | None = None, *, since: datetime | None = None, limit: int = 100
    ) -> list[TransitionRecord]:
        if self.broken:
            raise StoreError("down")
        out = [
            t
            for t in self.transitions_
            if (room_id is None or t.room_id == room_id) and (since is None or t.at >= since)
        ]
        return out[-limit:]

    async def sla(self, since: date, room_id: str | None = None) -> list[SlaRow]:
        if self.broken:
            raise StoreError("down")
        return [
            r for r in self.sla_rows if r.day >= since and (room_id is None or r.room_id == room_id)
        ]


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
    store: FakeStore
    metrics: Metrics
    readiness: Readiness
    clock: list[float]

    def routes(self, token: str | None = None, now: datetime = NOW, **extra: Any) -> list[Any]:
        from pydantic import SecretStr

        return ops_routes(
            rooms=SnapshotRooms(self.rooms.provider),
            store=cast(Store, self.store),
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
    store = FakeStore(
        transitions_=[
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
