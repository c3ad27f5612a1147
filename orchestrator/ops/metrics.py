"""Prometheus metrics, behind methods named for what happened.

Callers say ``metrics.transition("LIVE", "DEGRADED")`` or ``metrics.api_call("start_job",
"200", 0.31)``; they never touch a prometheus_client object, so the metric names, labels and
buckets live in one place and can change without touching the room workers or the client.

Each :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry` (never the
process-global one): several instances (tests, an embedded emulator) never collide, and
``/metrics`` shows exactly our series.

Label values must stay low-cardinality: operations, HTTP/error codes, state names and room
ids. Room ids appear only on the SLA series (one pair per room, removed by
:meth:`Metrics.forget_room`). Nothing secret is ever a label. Every label value that can come
from outside (a callback's event type, a cloud error code, anything a caller passes) goes
through a :class:`~orchestrator.bounds.LabelSet`: known values, else ``other``; one label can
never grow past a few dozen series (2,000 invented event types once cost 92 MB of RSS).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from importlib import metadata

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

from orchestrator.bounds import LabelSet
from orchestrator.callbacks.parse import KNOWN_FIELDS
from orchestrator.rooms.model import RoomState

__all__ = ["Metrics"]

# Recovery (drop → LIVE again) takes from a second (service reconnected by itself) to the
# 5-minute restart backoff cap and beyond; past 10 minutes only "+Inf" matters.
RECOVERY_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600)
# MetaStudio calls: tens of ms on a good day, the start call's 20 s read timeout at worst.
API_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30)
# Callback lag (event time → received): seconds normally, minutes when a relay queued them.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)

_PREFIX = "liveorch"

_STATES = [s.value for s in RoomState]
# Callback results are ours (receiver/relay), but "rejected_<status>" is built from a status.
_CALLBACK_RESULTS = ["accepted", "applied", "duplicate", "stale", "unknown_job", "unknown_room",
                     "for_owner", "handed_over",
                     "store_failed", "rejected_400", "rejected_401", "rejected_413",
                     "rejected_503"]  # fmt: skip
_LEARNED_CODES = 48  # distinct cloud error codes admitted as labels before "other"
_LEARNED_NAMES = 32  # distinct names of our own (operations, rungs, groups): a safety net


class _SlaCollector:
    """The per-room SLA counters as two plain dicts, turned into metric families only when
    scraped. A prometheus ``Counter`` child per room cost a lock, label validation and, the
    first time, a child object per room and counter: 10,000 rooms made the first SLA flush
    about a fifth of a quiet daemon's CPU (py-spy, scale bench)."""

    def __init__(self, prefix: str) -> None:
        self._names = (f"{prefix}_sla_live_seconds", f"{prefix}_sla_scheduled_seconds")
        self._docs = ("Seconds a room was LIVE while scheduled.",
                      "Seconds a room was scheduled to be live.")  # fmt: skip
        self._live: dict[str, float] = {}
        self._scheduled: dict[str, float] = {}
        self._owed: dict[str, float] = {}  # live seconds taken back, not yet offset

    def add(self, room_id: str, live_s: float, scheduled_s: float) -> None:
        # counters only grow: a negative delta (a clock step back) is dropped, never raised
        # in the middle of a flush; a flushed room shows both series, at 0 if need be. Live
        # seconds the SLA took back (a drop found late, see orchestrator.sla) are owed and
        # offset against the room's next live seconds, so the counter meets the store again.
        live_s += self._owed.pop(room_id, 0.0)
        if live_s < 0:
            self._owed[room_id] = live_s
        self._live[room_id] = self._live.get(room_id, 0.0) + max(0.0, live_s)
        self._scheduled[room_id] = self._scheduled.get(room_id, 0.0) + max(0.0, scheduled_s)

    def forget(self, room_id: str) -> None:
        self._owed.pop(room_id, None)
        self._live.pop(room_id, None)
        self._scheduled.pop(room_id, None)

    def describe(self) -> Iterable[CounterMetricFamily]:
        return [
            CounterMetricFamily(n, d, labels=["room"])
            for n, d in zip(self._names, self._docs, strict=True)
        ]

    def collect(self) -> Iterable[CounterMetricFamily]:
        out = []
        for name, doc, values in zip(
            self._names, self._docs, (self._live, self._scheduled), strict=True
        ):
            family = CounterMetricFamily(name, doc, labels=["room"])
            for room_id, value in list(values.items()):  # a copy: a flush may run meanwhile
                family.add_metric([room_id], value)
            out.append(family)
        return out


def _version() -> str:
    try:
        return metadata.version("liveorch")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """All of the daemon's metrics. Thread-safe (prometheus_client locks); cheap to call."""

    def __init__(self, *, version: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._state_label = LabelSet(_STATES)
        self._type_label = LabelSet([*KNOWN_FIELDS, "-"])
        self._result_label = LabelSet(_CALLBACK_RESULTS, learn=_LEARNED_NAMES)
        # HTTP statuses always pass; error codes from the cloud's body are learned up to a cap
        self._code_label = LabelSet([str(c) for c in range(100, 600)], learn=_LEARNED_CODES)
        self._name_label = LabelSet([], learn=_LEARNED_NAMES)
        r = self.registry
        p = _PREFIX
        self._rooms = Gauge(f"{p}_rooms", "Rooms by observed state.", ["state"], registry=r)
        self._alerts = Gauge(f"{p}_rooms_alerting", "Rooms with an active alert.", registry=r)
        self._transitions = Counter(
            f"{p}_transitions", "Room state transitions.", ["from_state", "to_state"], registry=r
        )
        self._recoveries = Counter(
            f"{p}_recoveries",
            "Recovery rungs by how the room recovered (self/refresh/backup_output/restart) "
            "and outcome (ok/failed).",
            ["rung", "outcome"],
            registry=r,
        )
        self._recovery_seconds = Histogram(
            f"{p}_recovery_duration_seconds",
            "Time from the stream stopping to LIVE again, by the rung that recovered it.",
            ["rung"],
            buckets=RECOVERY_BUCKETS,
            registry=r,
        )
        self._api_calls = Counter(
            f"{p}_api_calls",
            "MetaStudio API calls by operation and result code (HTTP status or error code).",
            ["operation", "code"],
            registry=r,
        )
        self._api_seconds = Histogram(
            f"{p}_api_call_duration_seconds",
            "MetaStudio API call latency.",
            ["operation"],
            buckets=API_BUCKETS,
            registry=r,
        )
        self._callbacks = Counter(
            f"{p}_callbacks",
            "Live-event callbacks received, by event type and result.",
            ["type", "result"],
            registry=r,
        )
        self._callback_lag = Histogram(
            f"{p}_callback_lag_seconds",
            "Delay between a callback's event time and its receipt.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._rate_wait = Counter(
            f"{p}_rate_limit_wait_seconds",
            "Seconds spent waiting for the client-side rate limiter, by API group.",
            ["group"],
            registry=r,
        )
        self._api_share = Gauge(
            f"{p}_api_share",
            "This instance's fraction of the tenant's API limit, by API group (1 when alone).",
            ["group"],
            registry=r,
        )
        self._reader = Gauge(
            f"{p}_tenant_reader",
            "1 while this instance lists the tenant for the fleet.",
            registry=r,
        )
        self._sla = _SlaCollector(p)
        r.register(self._sla)
        self._mqtt = Gauge(f"{p}_mqtt_connected", "1 while the MQTT link is connected.", registry=r)
        # /readyz's checks as series: Prometheus scrapes /metrics, not /readyz, and an alert on
        # a failing store or unreachable MetaStudio needs them (set on every scrape).
        self._ready = Gauge(
            f"{p}_ready_check", "1 while a /readyz check passes, by check.", ["check"], registry=r
        )
        # RSS, CPU seconds, open fds and start time (for restarts): process_* from /proc,
        # registered here because this registry is not the process-global one.
        ProcessCollector(registry=r)
        build = Gauge(
            f"{p}_build_info",
            "Build information (value is always 1).",
            ["version", "python"],
            registry=r,
        )
        build.labels(version or _version(), platform.python_version()).set(1)
        for state in RoomState:
            self._rooms.labels(state.value).set(0)

    # --- rooms ---------------------------------------------------------------------------

    def rooms(self, states: Iterable[str], *, alerting: int | None = None) -> None:
        """Set the per-state room counts from the current states (one entry per room).

        Every known state is written (zero when absent) so a state that emptied drops to 0
        instead of keeping its last value.
        """
        counts = {state.value: 0 for state in RoomState}
        for state in states:
            key = self._state_label(str(state))
            counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            self._rooms.labels(key).set(n)
        if alerting is not None:
            self._alerts.set(alerting)

    def transition(self, from_: str, to: str) -> None:
        """A room moved from one state to another."""
        self._transitions.labels(self._state_label(from_), self._state_label(to)).inc()

    # --- recovery ------------------------------------------------------------------------

    def recovery(self, rung: str, outcome: str, seconds: float | None = None) -> None:
        """A recovery rung (``self``/``refresh``/``backup_output``/``restart``) ended with
        ``outcome`` (``ok``/``failed``).

        ``seconds`` (stream stopped → LIVE) is recorded only for a successful recovery.
        """
        rung = self._name_label(rung)
        self._recoveries.labels(rung, self._name_label(outcome)).inc()
        if seconds is not None:
            self._recovery_seconds.labels(rung).observe(max(0.0, seconds))

    # --- cloud API -----------------------------------------------------------------------

    def api_call(self, op: str, code: str | int, seconds: float) -> None:
        """One MetaStudio call finished with ``code`` (HTTP status, error code or ``timeout``)."""
        op = self._name_label(op)
        self._api_calls.labels(op, self._code_label(code)).inc()
        self._api_seconds.labels(op).observe(max(0.0, seconds))

    def rate_limit_wait(self, group: str, seconds: float) -> None:
        """The client waited ``seconds`` for a token of API group ``group`` (start/query/write)."""
        if seconds > 0:
            self._rate_wait.labels(self._name_label(group)).inc(seconds)

    def api_shares(self, shares: Mapping[str, float], *, reader: bool) -> None:
        """Several instances: this one's part of each group's tenant limit, and the reader role."""
        for group, share in shares.items():
            self._api_share.labels(self._name_label(group)).set(share)
        self._reader.set(1 if reader else 0)

    # --- callbacks -----------------------------------------------------------------------

    def callback(self, type_: str, result: str, lag_s: float | None = None) -> None:
        """A callback of event ``type_`` was ``accepted``/``duplicate``/``unauthorized``/….

        ``type_`` comes from the (unauthenticated) body: a type we do not know is ``other``."""
        self._callbacks.labels(self._type_label(type_), self._result_label(result)).inc()
        if lag_s is not None:
            self._callback_lag.observe(max(0.0, lag_s))

    def callback_lag(self, seconds: float) -> None:
        """Seconds between the callback being signed (hwTime) and being received."""
        self._callback_lag.observe(max(0.0, seconds))

    # --- SLA -----------------------------------------------------------------------------

    def sla(self, room_id: str, *, live_s: float = 0.0, scheduled_s: float = 0.0) -> None:
        """Add accounted seconds for ``room_id`` (same numbers as ``Store.add_sla_rows``)."""
        self._sla.add(room_id, live_s, scheduled_s)

    def forget_room(self, room_id: str) -> None:
        """Drop a removed room's per-room series (after a reload removed it)."""
        self._sla.forget(room_id)

    # --- MQTT ----------------------------------------------------------------------------

    def mqtt_connected(self, connected: bool) -> None:
        self._mqtt.set(1 if connected else 0)

    # --- readiness -----------------------------------------------------------------------

    def ready_checks(self, checks: Mapping[str, bool]) -> None:
        """The outcome of each ``/readyz`` check (``store``, ``metastudio``, ``mqtt``)."""
        for name, ok in checks.items():
            self._ready.labels(name).set(1 if ok else 0)

    # --- exposition ----------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its Content-Type, for ``/metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
