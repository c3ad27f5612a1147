"""The sections about the daemon's own running: shutdown, reload, the ops API, alerts, logs,
retention and the size limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from orchestrator.settings.fields import Section, http_url


class ShutdownSettings(Section):
    stop_jobs: bool = False
    """Stop running jobs on SIGTERM (default: leave them streaming)."""
    timeout_s: float = Field(20.0, gt=0)


class ReloadSettings(Section):
    stop_removed: bool = False
    """On reload, stop jobs of rooms removed from the config (default: leave them alone)."""


class OpsSettings(Section):
    token: SecretStr | None = None
    """When set, /rooms, /metrics and the status page require `Authorization: Bearer <token>`."""
    api_reachable_s: float = Field(120.0, gt=0)
    """/readyz fails if no MetaStudio call succeeded within this many seconds."""


class AlertSettings(Section):
    webhook_url: str | None = None
    webhook_retries: int = Field(5, ge=0, le=100)

    _urls = field_validator("webhook_url")(lambda v: http_url(v))


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class RetentionSettings(Section):
    """How long the store keeps what grows with traffic; a supervised task prunes it every
    ``interval_s``. Days may be fractions (tests and benches shrink them). Rows that still
    matter are never pruned: rooms, leases, schedule overrides, active alerts, pending start
    intents."""

    inbox_days: float = Field(7.0, gt=0)
    """Callback inbox rows (pending ones too: a callback this old is no hint any more). Must
    exceed ``callbacks.tolerance_s``: the inbox is what refuses a replayed callback."""
    replies_days: float = Field(7.0, gt=0)
    """MQTT command replies (idempotency). Must exceed ``mqtt.command_max_age_s``: an id whose
    reply was pruned could otherwise be carried out twice."""
    transitions_days: float = Field(90.0, gt=0)
    """The audit log of room state changes."""
    sla_days: float = Field(400.0, gt=0)
    """Per-room daily SLA rows (a year of reports, plus a month)."""
    jobs_days: float = Field(30.0, gt=0)
    """Jobs seen, by when they were last seen."""
    start_intents_days: float = Field(30.0, gt=0)
    """Resolved start intents (a pending one is never pruned: it guards a duplicate push)."""
    alerts_days: float = Field(30.0, gt=0)
    """Cleared alerts, by when they were cleared."""
    interval_s: float = Field(3600.0, gt=0)
    """How often the prune runs (and once at startup)."""


class LimitsSettings(Section):
    """Caps on what a caller can make us hold: connections, time, stored and logged bytes."""

    http_max_connections: int = Field(256, gt=0)
    """Open connections to the ops/callback server; one more is closed at once (its file
    descriptor is freed at once). Also kept below the process's open-files limit, so a flood
    of idle sockets can never take the descriptors cloud calls need."""
    http_header_timeout_s: float = Field(10.0, gt=0)
    """A request's line and headers must arrive within this (slowloris); a connection that
    sends nothing is closed after it too."""
    http_body_timeout_s: float = Field(30.0, gt=0)
    """A request's body must arrive within this after its headers."""
    http_keepalive_s: float = Field(5.0, gt=0)
    """An idle keep-alive connection is closed after this."""
    callback_stored_bytes: int = Field(8192, gt=0)
    """A stored callback (inbox payload) is cut to about this many bytes of JSON (genuine
    ones are well under 1 KiB); what routes it (type, job, room, state) is kept."""
    stored_text_bytes: int = Field(16384, gt=0)
    """Other stored free text from outside (transition causes and details, alert messages,
    command replies) is cut to about this."""
    log_field_max_chars: int = Field(4096, gt=0)
    """A logged string field is cut to this many characters (a traceback to 4x)."""
    log_repeat_interval_s: float = Field(10.0, gt=0)
    log_repeat_burst: int = Field(20, gt=0)
    """Warning/error lines of one kind pass this many times per interval; the rest are counted
    and reported in one summary line."""
