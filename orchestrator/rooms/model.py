"""Room state, events and actions: plain frozen data shared by the pure machine and its drivers.

Events are named in the past tense (something happened); actions in the imperative (do this).
Adapters (scheduler, callback receiver, MQTT, poller) only ever *post events* into a room's
queue through :class:`RoomSink`; they never touch a room's state directly.

The types live in ``rooms.state`` (the room and its snapshot), ``rooms.events`` and
``rooms.actions``; this module gathers them so ``from orchestrator.rooms.model import …`` keeps
working for the machine, its drivers and the tests.
"""

from __future__ import annotations

from orchestrator.rooms.actions import (
    Action,
    ClearAlert,
    InsertScript,
    ListJobs,
    RaiseAlert,
    RefreshOutput,
    ResetExitConfig,
    SetTimer,
    ShowJob,
    StartJob,
    StopJob,
)
from orchestrator.rooms.events import (
    CommandFailed,
    CommandSucceeded,
    Event,
    InsertScriptRequested,
    JobObserved,
    JobsListed,
    JobStarted,
    JobStartFailed,
    JobStopped,
    ObservedJob,
    OpResult,
    OrderChanged,
    OutputChanged,
    Poked,
    QueryFailed,
    RefreshRequested,
    Reset,
    RestartRequested,
    Resumed,
    RoomSink,
    RtmpStateReported,
    StopFailed,
    TimerFired,
    WindowClosed,
    WindowOpened,
)
from orchestrator.rooms.state import (
    Op,
    Order,
    PushMark,
    Room,
    RoomState,
    Snapshot,
    Wait,
)

__all__ = [
    "Action",
    "ClearAlert",
    "CommandFailed",
    "CommandSucceeded",
    "Event",
    "InsertScript",
    "InsertScriptRequested",
    "JobObserved",
    "JobStartFailed",
    "JobStarted",
    "JobStopped",
    "JobsListed",
    "ListJobs",
    "ObservedJob",
    "Op",
    "OpResult",
    "Order",
    "OrderChanged",
    "OutputChanged",
    "Poked",
    "PushMark",
    "QueryFailed",
    "RaiseAlert",
    "RefreshOutput",
    "RefreshRequested",
    "Reset",
    "ResetExitConfig",
    "RestartRequested",
    "Resumed",
    "Room",
    "RoomSink",
    "RoomState",
    "RtmpStateReported",
    "SetTimer",
    "ShowJob",
    "Snapshot",
    "StartJob",
    "StopFailed",
    "StopJob",
    "TimerFired",
    "Wait",
    "WindowClosed",
    "WindowOpened",
]
