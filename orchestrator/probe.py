"""Stream health probe: catch "green but dead" — the API says CONNECTED, viewers see nothing.

MetaStudio only knows whether its own RTMP push is connected. A platform can accept the push and
still serve nothing (ingest stuck, transcoder dead, stream key banned on the play side). The only
way to see what viewers see is to play the stream. This module does that with ``ffprobe``:

* :func:`probe_once` — one playback check: spawn ``ffprobe`` in its own process group, give it
  ``timeout_s`` in total, kill the whole group on timeout (nothing left behind, always reaped).
  A playback that shows no video stream within the timeout is dead.
* :class:`ProbeTracker` — pure (no I/O, no clock): decides when a room counts as dead. Failures
  must be continuous for ``fail_after_s`` while the room is ``LIVE`` with RTMP ``CONNECTED``; then
  it emits ONE ``RtmpStateReported(rtmp_state="DISCONNECTED", cause="probe:playback_dead")`` and
  the room's state machine treats it like a drop (recovery ladder). A later success resets it
  and emits nothing: the service's own CONNECTED callbacks carry the recovery.
* :class:`ProbeRunner` — the driver: probes every enabled LIVE room each ``interval_s`` (with
  jitter, bounded concurrency, one named task per room in one task group) and posts the
  tracker's event into the room's queue.

Playback URLs often carry auth tokens in the query string: only :func:`safe_url` (scheme, host,
path) is ever logged, and ffprobe's error text is scrubbed of queries before it becomes a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, Protocol
from urllib.parse import urlsplit

import structlog

from orchestrator.rooms.model import RoomSink, RoomState, RtmpStateReported, Snapshot
from orchestrator.settings import ProbeSettings

__all__ = [
    "PROBE_CAUSE",
    "ProbeDecision",
    "ProbeResult",
    "ProbeRunner",
    "ProbeSettings",
    "ProbeTracker",
    "probe_command",
    "probe_once",
    "safe_url",
]

log = structlog.get_logger(__name__)

PROBE_CAUSE = "probe:playback_dead"
"""``cause`` of the event the probe posts; the machine and the audit log can tell it apart."""

_SCHEMES = frozenset({"rtmp", "rtmps", "rtmpt", "rtmpe", "http", "https", "srt"})
_URL_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"]*)[?#][^\s'\"]*")
_MAX_REASON = 200
_REAP_S = 5.0


# The settings module validates the [probe] section and must not import this adapter (it runs
# subprocesses); the model lives there and is re-exported here, where it is used.
@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One playback check. ``reason`` is short and token-free ("ok", "timeout", "no_video", …).

    ``conclusive`` is False when the probe itself could not run (ffprobe missing, unsupported
    URL scheme): such a result says nothing about the stream and never counts as dead.
    """

    ok: bool
    reason: str
    video: bool = False
    audio: bool = False
    conclusive: bool = True


def safe_url(url: str) -> str:
    """``scheme://host[:port]/path`` — what may appear in logs (no userinfo, query, fragment)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _scrub(text: str, url: str) -> str:
    """ffprobe echoes the URL in its errors: replace it, and drop any query it printed."""
    text = text.replace(url, safe_url(url))
    text = _URL_QUERY.sub(r"\1?<redacted>", text)
    text = " ".join(text.split())
    return text[:_MAX_REASON]


def probe_command(url: str, *, timeout_s: float, ffprobe: str = "ffprobe") -> list[str]:
    """The ffprobe argv for ``url``.

    ``-rw_timeout`` (µs) is the generic I/O timeout of FFmpeg's protocol layer and works for
    RTMP, HTTP-FLV and HLS alike: a live playback that delivers nothing for half the budget is
    dead, and ffprobe then exits with its own error text before our hard limit. (Never
    ``-timeout`` for RTMP: there it means *listen* and turns the probe into a server.)
    ``-analyzeduration`` is half the budget, at most FFmpeg's default 5 s. A live FLV/RTMP
    playback is read for that long, and the video stream only shows up with the first key
    frame (nginx-rtmp and CDNs hold video back until one), so it must exceed the stream's GOP:
    with a shorter window a healthy stream with 2 s GOPs looks audio-only, i.e. dead.
    """
    rw_us = max(100_000, int(timeout_s * 0.5 * 1_000_000))
    analyze_us = max(100_000, int(min(5.0, timeout_s * 0.5) * 1_000_000))
    return [
        ffprobe, "-v", "error", "-hide_banner",
        "-rw_timeout", str(rw_us),
        "-analyzeduration", str(analyze_us),
        "-show_streams", "-of", "json",
        url,
    ]  # fmt: skip


def _parse(stdout: bytes) -> tuple[bool, bool] | None:
    """(video, audio) from ffprobe's JSON, or None if it is not JSON with a streams list."""
    try:
        doc = json.loads(stdout.decode("utf-8", "replace") or "{}")
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    streams = doc.get("streams", [])
    if not isinstance(streams, list):
        return None
    kinds = {s.get("codec_type") for s in streams if isinstance(s, dict)}
    return "video" in kinds, "audio" in kinds


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL ffprobe's whole process group (it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the group, then drain the pipes and reap: no zombie, no half-open transport."""
    _kill_group(proc)
    try:
        async with asyncio.timeout(_REAP_S):
            await proc.communicate()
    except TimeoutError:
        # A descendant escaped the group and still holds the pipes; the child itself is dead.
        await proc.wait()


async def probe_once(url: str, *, timeout_s: float, ffprobe: str = "ffprobe") -> ProbeResult:
    """Play ``url`` with ffprobe for at most ``timeout_s``; ok when a video stream shows up.

    Never raises for probe outcomes (only on cancellation, after killing and reaping ffprobe).
    """
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        return ProbeResult(False, f"unsupported_scheme:{scheme or '-'}", conclusive=False)
    argv = probe_command(url, timeout_s=timeout_s, ffprobe=ffprobe)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # own process group: a timeout kills everything it spawned
        )
    except OSError as e:
        return ProbeResult(False, f"spawn_failed:{type(e).__name__}", conclusive=False)
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        await _kill_and_reap(proc)
        return ProbeResult(False, "timeout")
    except asyncio.CancelledError:
        # The runner is shutting down: never leave the child running or unreaped.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(_kill_and_reap(proc))
        raise
    parsed = _parse(stdout)
    if proc.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        message = _scrub(lines[-1], url) if lines else "-"
        return ProbeResult(False, f"ffprobe_exit:{proc.returncode}:{message}")
    if parsed is None:
        return ProbeResult(False, "bad_output")
    video, audio = parsed
    if not video:
        return ProbeResult(False, "no_video", video=False, audio=audio)
    return ProbeResult(True, "ok", video=True, audio=audio)


# --- the pure decision --------------------------------------------------------------------------

Transition = Literal["ok", "recovered", "failed", "dead", "still_dead", "ignored"]


@dataclass(frozen=True, slots=True)
class ProbeDecision:
    """What one observation meant. ``event`` is set exactly once per dead episode."""

    transition: Transition
    dead_for_s: float = 0.0
    event: RtmpStateReported | None = None


def _eligible(snap: Snapshot) -> bool:
    """LIVE with a job whose link is CONNECTED (an absent rtmp_state means LIVE ⇒ CONNECTED)."""
    if snap.state is not RoomState.LIVE or not snap.job_id:
        return False
    rtmp = snap.extra.get("rtmp_state")
    return rtmp is None or rtmp == "CONNECTED"


@dataclass(frozen=True, slots=True)
class ProbeTracker:
    """One room's dead-playback bookkeeping. Frozen: :meth:`observe` returns the next tracker.

    A *dead episode* belongs to one LIVE period of one job: the key is (job id, the snapshot's
    ``since``). When the room leaves LIVE, changes job or re-enters LIVE (e.g. after the ladder
    refreshed the output), the count starts again — so a room that "recovered" to CONNECTED but
    is still dead to viewers is reported again after another ``fail_after_s``.
    """

    fail_after_s: float = 30.0
    episode: tuple[str, datetime | None] | None = None
    dead_since: datetime | None = None
    fired: bool = False

    def reset(self) -> ProbeTracker:
        return ProbeTracker(fail_after_s=self.fail_after_s)

    def observe(
        self, result: ProbeResult, now: datetime, snap: Snapshot
    ) -> tuple[ProbeTracker, ProbeDecision]:
        """Fold one probe result taken at ``now`` for the room described by ``snap``."""
        job_id = snap.job_id
        if job_id is None or not _eligible(snap):
            return self.reset(), ProbeDecision("ignored")
        key = (job_id, snap.since)
        state = self if self.episode == key else replace(self.reset(), episode=key)
        if not result.conclusive:
            return state, ProbeDecision("ignored", state._dead_for(now))
        if result.ok:
            if state.dead_since is None:
                return state, ProbeDecision("ok")
            dead_for = state._dead_for(now)
            return replace(state, dead_since=None, fired=False), ProbeDecision(
                "recovered", dead_for
            )
        dead_since = state.dead_since if state.dead_since is not None else now
        state = replace(state, dead_since=dead_since)
        dead_for = state._dead_for(now)
        if state.fired:
            return state, ProbeDecision("still_dead", dead_for)
        if dead_for < self.fail_after_s:
            return state, ProbeDecision("failed", dead_for)
        # our own observation, not a callback: the room acts on it like on a read (a push
        # that looks fine in the job reads is exactly what the probe exists to catch)
        event = RtmpStateReported(
            job_id=job_id,
            rtmp_state="DISCONNECTED",
            at=now,
            cause=PROBE_CAUSE,
            observed=True,
            down_s=dead_for,
        )
        return replace(state, fired=True), ProbeDecision("dead", dead_for, event)

    def _dead_for(self, now: datetime) -> float:
        if self.dead_since is None:
            return 0.0
        return max(0.0, (now - self.dead_since).total_seconds())


# --- the driver ----------------------------------------------------------------------------------


class _Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime) -> None: ...


class ProbeFn(Protocol):
    """The shape of :func:`probe_once` (the runner's seam)."""

    def __call__(
        self, url: str, *, timeout_s: float, ffprobe: str = "ffprobe"
    ) -> Awaitable[ProbeResult]: ...


Observer = Callable[[str, ProbeResult, ProbeDecision], None]
Targets = Callable[[], Mapping[str, tuple[str, ProbeSettings]]]


class ProbeRunner:
    """Probes every enabled LIVE room each ``interval_s`` and posts the tracker's events.

    ``rooms()`` is re-read every ``refresh_s`` (config reloads add and remove rooms) and before
    every probe of a room. ``observer`` (optional) sees every folded result — a hook for metrics
    and tests. ``probe`` is the seam to :func:`probe_once`.
    """

    def __init__(
        self,
        sink: RoomSink,
        *,
        rooms: Targets,
        snapshot: Callable[[str], Snapshot | None],
        clock: _Clock,
        max_concurrency: int = 8,
        refresh_s: float = 15.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
        probe: ProbeFn = probe_once,
        observer: Observer | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._sink = sink
        self._rooms = rooms
        self._snapshot = snapshot
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._refresh_s = refresh_s
        self._jitter = jitter
        self._rng = rng if rng is not None else random.Random()  # jitter only, never secrets
        self._probe = probe
        self._observer = observer
        self._trackers: dict[str, ProbeTracker] = {}
        self._active: set[str] = set()

    def tracker(self, room_id: str) -> ProbeTracker | None:
        """The room's current tracker (read-only view for status pages and tests)."""
        return self._trackers.get(room_id)

    async def run(self) -> None:
        """Run until cancelled: one task per probed room, all in one task group."""
        sem = asyncio.Semaphore(self._max_concurrency)
        async with asyncio.TaskGroup() as tg:
            while True:
                for room_id, (url, settings) in self._rooms().items():
                    if room_id in self._active or not url or not settings.enabled:
                        continue
                    self._active.add(room_id)
                    tg.create_task(self._room_loop(room_id, sem), name=f"probe:{room_id}")
                await self._clock.sleep_until(
                    self._clock.now() + timedelta(seconds=self._refresh_s)
                )

    def _target(self, room_id: str) -> tuple[str, ProbeSettings] | None:
        target = self._rooms().get(room_id)
        if target is None or not target[0] or not target[1].enabled:
            return None
        return target

    def _spread(self, interval_s: float) -> float:
        return interval_s * (1.0 + self._jitter * (2.0 * self._rng.random() - 1.0))

    async def _room_loop(self, room_id: str, sem: asyncio.Semaphore) -> None:
        """Probe one room until it is removed or disabled. Errors are logged, never fatal."""
        try:
            target = self._target(room_id)
            if target is None:
                return
            # Spread the first probes of many rooms over one interval.
            first = self._rng.random() * target[1].interval_s
            await self._clock.sleep_until(self._clock.now() + timedelta(seconds=first))
            while (target := self._target(room_id)) is not None:
                url, settings = target
                started = self._clock.now()
                try:
                    await self._tick(room_id, url, settings, sem)
                except Exception:
                    # A bug in a provider or sink must not stop probing (or other rooms).
                    log.exception("probe_tick_error", room_id=room_id, url=safe_url(url))
                due = started + timedelta(seconds=self._spread(settings.interval_s))
                await self._clock.sleep_until(due)
        finally:
            self._active.discard(room_id)
            self._trackers.pop(room_id, None)

    async def _tick(
        self, room_id: str, url: str, settings: ProbeSettings, sem: asyncio.Semaphore
    ) -> None:
        snap = self._snapshot(room_id)
        if snap is None or not _eligible(snap):
            # Not LIVE: nothing to check, and any count so far no longer applies.
            self._trackers.pop(room_id, None)
            return
        async with sem:
            result = await self._probe(url, timeout_s=settings.timeout_s, ffprobe=settings.ffprobe)
        snap = self._snapshot(room_id)  # the room may have moved on while we probed
        if snap is None:
            return
        tracker = self._trackers.get(room_id) or ProbeTracker(fail_after_s=settings.fail_after_s)
        if tracker.fail_after_s != settings.fail_after_s:
            tracker = replace(tracker, fail_after_s=settings.fail_after_s)
        tracker, decision = tracker.observe(result, self._clock.now(), snap)
        self._trackers[room_id] = tracker
        self._report(room_id, url, result, decision)
        if decision.event is not None:
            posted = self._sink.post(room_id, decision.event)
            log.error(
                "probe_dead",
                room_id=room_id,
                job_id=decision.event.job_id,
                url=safe_url(url),
                reason=result.reason,
                dead_for_s=round(decision.dead_for_s, 1),
                posted=posted,
            )
        if self._observer is not None:
            self._observer(room_id, result, decision)

    def _report(self, room_id: str, url: str, result: ProbeResult, decision: ProbeDecision) -> None:
        if decision.transition == "recovered":
            log.info(
                "probe_recovered",
                room_id=room_id,
                url=safe_url(url),
                was_dead_for_s=round(decision.dead_for_s, 1),
            )
        elif not result.ok:
            log.warning(
                "probe_failed",
                room_id=room_id,
                url=safe_url(url),
                reason=result.reason,
                conclusive=result.conclusive,
                dead_for_s=round(decision.dead_for_s, 1),
            )
