"""The peer liveorch is compared with: what a user writes with the official SDK and cron.

Every ``interval_s`` (60 s in real life), for each room: show the job; when it is not
``PROCESSING``, stop it (ignoring errors) and start a new one. No callbacks, no refresh, no
backoff, no listing before a start. Written plainly on purpose: it is the baseline, not a
strawman, so it does restart failed jobs and it survives API errors by trying again next tick.

It runs in a thread (the SDK is synchronous) and stops when :attr:`stop` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._common import AK, PROJECT, SK

__all__ = ["NaivePoller"]


@dataclass
class NaivePoller:
    base_url: str
    rooms: Sequence[str]
    interval_s: float = 60.0
    stop: threading.Event = field(default_factory=threading.Event)
    jobs: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    errors: int = 0
    restarts: int = 0

    def _client(self) -> Any:
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkmetastudio.v1 import MetaStudioClient

        creds = BasicCredentials(AK, SK, PROJECT)
        return (
            MetaStudioClient.new_builder()
            .with_credentials(creds)
            .with_endpoints([self.base_url])
            .build()
        )

    def _start(self, client: Any, room: str) -> None:
        from huaweicloudsdkmetastudio.v1 import StartSmartLiveReq, StartSmartLiveRequest

        self.calls += 1
        resp = client.start_smart_live(
            StartSmartLiveRequest(room_id=room, body=StartSmartLiveReq())
        )
        self.jobs[room] = resp.job_id

    def _check(self, client: Any, room: str) -> None:
        from huaweicloudsdkcore.exceptions.exceptions import SdkException
        from huaweicloudsdkmetastudio.v1 import ShowSmartLiveRequest, StopSmartLiveRequest

        try:
            job_id = self.jobs.get(room)
            if job_id is None:
                self._start(client, room)
                return
            self.calls += 1
            job = client.show_smart_live(ShowSmartLiveRequest(room_id=room, job_id=job_id))
            if job.state == "PROCESSING":
                return
            self.calls += 1
            try:
                client.stop_smart_live(StopSmartLiveRequest(room_id=room, job_id=job_id))
            except SdkException:
                self.errors += 1
            self.restarts += 1
            self._start(client, room)
        except SdkException:
            self.errors += 1  # try again next tick, like a cron job would

    def run(self) -> None:
        """The cron loop: tick, sleep ``interval_s``, until :attr:`stop` is set."""
        client = self._client()
        while not self.stop.is_set():
            for room in self.rooms:
                if self.stop.is_set():
                    return
                self._check(client, room)
            self.stop.wait(self.interval_s)
