"""The state of one emulated tenant and the helpers every part of the emulator uses.

:class:`~orchestrator.emulator.service.EmulatorService` is built in layers, one module each,
on top of this: limits (rate limits, API faults) → link (the RTMP push and the platform behind
it) → jobs (rooms and smart-live jobs) → commands (job commands, review, warnings) → the service
(lifecycle, IAM, admin views). Each layer only calls the layers below it.
"""

from __future__ import annotations

import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.emulator.callbacks import CallbackDispatcher, UriMode
from orchestrator.emulator.clock import Clock, RealClock
from orchestrator.emulator.model import Bucket, Fault, Job, MediaBackend, Room, rate_limits_for
from orchestrator.emulator.platform import (
    PlatformFaults,
)

__all__ = ["TenantBase"]


class TenantBase:
    """One emulated tenant (project): its configuration, records and random source."""

    def __init__(
        self,
        project_id: str,
        credentials: Mapping[str, str],
        *,
        seed: int | None = None,
        time_scale: float = 1.0,
        clock: Clock | None = None,
        region: str = "cn-north-4",
        waiting_s: float = 1.0,
        connect_s: float = 1.0,
        reconnect_interval_s: float = 5.0,
        script_switch_s: float = 30.0,
        reply_finish_s: float = 3.0,
        rate_limits: Mapping[str, float] | None = None,
        callback_uri_mode: UriMode = "path",
        callback_transport: Any = None,
        callback_retry_delays: tuple[float, ...] = (0.2, 1.0, 3.0),
        media: MediaBackend | None = None,
        wallclock: Callable[[], float] = time.time,
        push_error_info: bool = True,
    ) -> None:
        self.project_id = project_id
        self.region = region
        self.credentials = dict(credentials)
        self.seed = seed
        self.clock: Clock = clock if clock is not None else RealClock(time_scale)
        self.wallclock = wallclock
        self.waiting_s = waiting_s
        self.connect_s = connect_s
        self.reconnect_interval_s = reconnect_interval_s
        self.script_switch_s = script_switch_s
        self.reply_finish_s = reply_finish_s
        self.rate_limits = rate_limits_for(region) if rate_limits is None else dict(rate_limits)
        self.media = media
        self.push_error_info = push_error_info
        """Show an ingest's refusal in a running job's ``error_info`` (see PUSH_ERRORS)."""
        self._rng = random.Random(seed)
        self._report_secret = secrets.token_bytes(16)
        self.callbacks = CallbackDispatcher(
            rng=random.Random(self._rng.getrandbits(64)),
            uri_mode=callback_uri_mode,
            transport=callback_transport,
            wallclock=wallclock,
            retry_delays=callback_retry_delays,
        )
        self.rooms: dict[str, Room] = {}
        self.jobs: dict[str, Job] = {}
        self.tokens: dict[str, float] = {}
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.commands: list[dict[str, Any]] = []
        self.starts = 0
        self._buckets: dict[str, Bucket] = {}
        self.platform = PlatformFaults()
        self._started = False
        # observers of every RTMP state change (job, new state): CLI output, tests, media
        self.rtmp_listeners: list[Callable[[Job, str], None]] = []

    # ----------------------------------------------------------------- helpers

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _hex(self, nbytes: int = 16) -> str:
        return f"{self._rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"

    def now(self) -> float:
        return self.clock.now()

    def record_call(self, operation: str) -> None:
        self.calls[operation] += 1
