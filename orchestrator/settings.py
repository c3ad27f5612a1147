"""Configuration: one TOML file, overridden by ``LIVEORCH_…`` env vars, secrets from a directory.

Precedence (highest first): explicit init values, environment (``LIVEORCH_CLOUD__REGION``; nested
delimiter ``__``), the TOML file (``--config``, default ``config/liveorch.toml``), defaults.

Secrets are :class:`pydantic.SecretStr` and can come from files in a secrets directory
(``secrets_dir``, default ``$CREDENTIALS_DIRECTORY`` as set by systemd ``LoadCredential=``):

=========================== ==========================================
file name                   fills
=========================== ==========================================
``cloud.ak`` / ``cloud.sk`` AK/SK (also env ``CLOUD_SDK_AK``/``CLOUD_SDK_SK``)
``cloud.password``          IAM password (token auth)
``cloud.security_token``    temporary-credential security token
``mqtt.password``           MQTT password
``callbacks.key``           global callback HMAC key
``callbacks.previous_key``  previous callback key (accepted during a rotation)
``ops.token``               bearer token for the ops HTTP API
``room.<id>.stream_key``    a room's stream key
``room.<id>.callback_key``  a room's own callback HMAC key
=========================== ==========================================

A file wins over an empty value but never over a value given in TOML/env explicitly.
Every field below documents its default; ``config/liveorch.example.toml`` shows them all.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from orchestrator.errors import ConfigError
from orchestrator.names import (
    BRIDGE_ACTION_NAMES,
    ROOM_ACTION_NAMES,
    ROOM_ID,
    TopicError,
    check_mqtt_prefix,
)
from orchestrator.redaction import is_secret_key
from orchestrator.rooms.policy import Policy
from orchestrator.schedule.holidays import load_holidays
from orchestrator.schedule.windows import (
    DateRange,
    RoomSchedule,
    WindowSpec,
    parse_date_ranges,
    parse_hhmm,
)

DEFAULT_CONFIG = Path("config/liveorch.toml")
_POLICY = Policy()
"""The recovery defaults live with the pure ladder (``rooms.policy``), which must not import
this module; [recovery] documents and validates them here."""


_STORE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _http_url(v: str | None) -> str | None:
    """An http(s) URL with a host, or None (the message never repeats the value: it may hold
    a token)."""
    if v is None:
        return v
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(v)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != -1
    except ValueError:  # e.g. a port that is not a number
        ok = False
    if not ok or any(c.isspace() for c in v):
        raise ValueError("must be an http:// or https:// URL with a host")
    return v


def _header_value(v: Any) -> Any:
    """Secrets and ids that go into HTTP headers: printable ASCII without spaces (a newline from
    an editor would make every signed call fail). The value is never quoted."""
    if v is None:
        return v
    text = v.get_secret_value() if isinstance(v, SecretStr) else str(v)
    if not text or any(not (0x21 <= ord(c) <= 0x7E) for c in text):
        raise ValueError("must be non-empty printable ASCII without spaces or control characters")
    return v


def _timezone(v: str | None) -> str | None:
    if v is None:
        return v
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(v)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown IANA time zone {v!r} (e.g. 'Asia/Shanghai')") from None
    return v


class _Section(BaseModel):
    # inf/nan are valid TOML floats but no timeout, rate or size the daemon uses can be either
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CloudSettings(_Section):
    """How to reach MetaStudio."""

    region: str = Field("cn-north-4", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    """Region id; the endpoint is https://metastudio.{region}.myhuaweicloud.com."""
    base_url: str | None = None
    """Explicit endpoint (e.g. the emulator http://127.0.0.1:8600); overrides region."""
    project_id: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,64}$")
    """IAM project id of the region (required: every API path carries it)."""
    auth: Literal["aksk", "token"] = "aksk"
    """aksk = sign every call with SDK-HMAC-SHA256; token = IAM password token."""
    ak: SecretStr | None = None
    sk: SecretStr | None = None
    security_token: SecretStr | None = None
    iam_url: str = "https://iam.myhuaweicloud.com"
    iam_user: str = ""
    iam_domain: str = ""
    password: SecretStr | None = None
    app_user_id: str | None = None
    """Optional X-App-UserId header."""
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(15.0, gt=0)
    """A call whose answer does not come in time fails; for a start this means 'outcome
    unknown', and the room lists its jobs before trying again (never a blind retry)."""
    read_retry_backoff_s: float = Field(0.5, ge=0)
    """A read (list/show) that failed on a network or temporary error is sent again after this,
    then twice as long (two retries, at most 10 s, Retry-After honoured); writes never are."""
    rate_start_per_s: float = Field(4.0, gt=0)
    rate_query_per_s: float = Field(20.0, gt=0)
    rate_write_per_s: float = Field(4.0, gt=0)
    """Tenant rate limits (documented for cn-north-4; lower for cn-east-3)."""

    _urls = field_validator("base_url", "iam_url")(lambda v: _http_url(v))
    _header_safe = field_validator("ak", "sk", "security_token", "app_user_id")(
        lambda v: _header_value(v)
    )


class StoreSettings(_Section):
    url: str = "sqlite+aiosqlite:///var/liveorch.db"
    """SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db (the only
    two drivers the daemon has)."""
    instance_id: str = ""
    """Stable id of this instance (multi-instance leases); default hostname:pid."""
    lease_ttl_s: float = Field(50.0, gt=0)
    """Room lease lifetime (several instances): a dead instance's rooms move after at most this
    plus a third of it. Keep it above 3 x ``cloud.read_timeout_s`` (so a call still in flight
    when an instance stalls cannot land after another instance took the room) and well above
    clock skew between hosts. A stream keeps running during a failover either way; the TTL
    only bounds how long its repairs pause."""
    max_rooms_per_instance: int | None = Field(None, ge=1)
    """Cap on rooms one instance works on (several instances); default: a fair share."""
    leases: Literal["auto", "on", "off"] = "auto"
    """Room ownership by leases: "auto" = on for PostgreSQL, off for SQLite (one instance owns
    every room, unfenced, as before)."""
    pg_schema: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    """PostgreSQL schema for every table (side-by-side deployments or tests in one database)."""

    @field_validator("url")
    @classmethod
    def _store_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(v)
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a database URL (sqlite+aiosqlite:///path or postgresql+asyncpg://…)"
            ) from None
        if url.drivername not in _STORE_DRIVERS:
            raise ValueError(
                f"unsupported driver {url.drivername!r}: use sqlite+aiosqlite or postgresql+asyncpg"
            )
        return v

    @model_validator(mode="after")
    def _schema_needs_pg(self) -> StoreSettings:
        if self.pg_schema is not None and not self.url.startswith("postgresql"):
            raise ValueError("pg_schema needs a PostgreSQL store (store.url postgresql+asyncpg)")
        return self


class MqttSettings(_Section):
    enabled: bool = False
    """Off by default: the daemon runs without MQTT when no broker is configured."""
    host: str = Field("127.0.0.1", pattern=r"^[^\s/]+$")
    port: int = Field(1883, ge=1, le=65535)
    client_id: str = Field("liveorch", pattern=r"^[^\x00-\x20]{1,128}$")
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    prefix: str = "liveorch"
    """Every topic's first segments: '/'-separated [A-Za-z0-9_.-], no wildcards, not '$…'."""
    keepalive_s: int = Field(30, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    reconnect_max_s: float = Field(30.0, gt=0)
    queue_limit: int = Field(10000, ge=1)
    """Room state updates kept while disconnected (latest per room wins)."""
    acl: dict[str, list[str]] = Field(default_factory=dict)
    """Allow-list of actions per client (payload field "client"); empty = everything allowed."""
    command_max_age_s: float = Field(300.0, gt=0)
    """Commands with `sent_at` older than this are refused as expired."""
    command_max_skew_s: float = Field(30.0, ge=0)
    """Commands with `sent_at` further ahead of our clock than this are refused (clock_skew):
    a future `sent_at` would otherwise never expire."""
    max_payload_bytes: int = Field(1024 * 1024, ge=256, le=16 * 1024 * 1024)
    """Commands larger than this are refused (payload_too_large) before they are parsed. The
    default fits the largest valid command: insert_script's 131,072 characters of CJK text,
    even \\u-escaped (6 bytes each)."""
    reply_topic_prefixes: list[str] = Field(default_factory=lambda: ["panel/replies"])
    """Where v5 response topics may point: a topic equal to or below one of these. Anything
    else, and every topic under `prefix` but the `.../command/reply` ones, is refused."""
    callbacks_topic: str = "liveorch/callbacks/in"
    consume_relay: bool = False
    """Consume callbacks published by `liveorch relay` on callbacks_topic."""
    ha_discovery: bool = False
    """Publish Home Assistant MQTT discovery: one device per room (docs/mqtt.md)."""
    ha_discovery_prefix: str = Field(
        "homeassistant", pattern=r"^[A-Za-z0-9_.\-]{1,64}(/[A-Za-z0-9_.\-]{1,64})*$"
    )
    """Home Assistant's discovery prefix (its MQTT integration's setting): '/'-separated
    segments of [A-Za-z0-9_.-], no wildcards."""

    @field_validator("reply_topic_prefixes")
    @classmethod
    def _check_reply_prefixes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.strip("/") or any(c in p for c in "+#\x00") or p.startswith("$"):
                raise ValueError(f"{p!r} is not a topic prefix (no wildcards, not empty)")
        return [p.rstrip("/") for p in v]

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        try:
            check_mqtt_prefix(v)
        except TopicError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("callbacks_topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or "\x00" in v or "#" in v or "+" in v:
            raise ValueError("must be a topic name: non-empty, no wildcards (# +), no NUL")
        return v

    @field_validator("acl")
    @classmethod
    def _acl(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        known = ROOM_ACTION_NAMES | BRIDGE_ACTION_NAMES | {"*"}
        for client, actions in v.items():
            unknown = sorted(set(actions) - known)
            if unknown:  # a typo would silently deny the action forever
                raise ValueError(
                    f"client {client!r}: unknown action(s) {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(known))})"
                )
        return v

    @model_validator(mode="after")
    def _ca_file(self) -> MqttSettings:
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"ca_file {self.ca_file!r} is not a readable file")
        return self


class HttpSettings(_Section):
    host: str = Field("127.0.0.1", pattern=r"^[^\s/]+$")
    """Ops + callback server bind address. Loopback by default: expose deliberately."""
    port: int = Field(8680, ge=0, le=65535)
    """0 = any free port (tests)."""
    public_callback_url: str | None = None
    """URL MetaStudio must call (goes into the start request's live_event_callback_config)."""
    allow_unauthenticated_remote: bool = False
    """A bind address beyond loopback without ``ops.token`` would serve /rooms, /metrics and
    the status page to anyone who can reach the port: refused unless this is true."""

    _urls = field_validator("public_callback_url")(lambda v: _http_url(v))


class CallbackSettings(_Section):
    path: str = Field("/callbacks/metastudio", pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
    """Absolute URL path (leading /) of the callback route; no query, fragment or spaces."""
    auth_type: Literal["NONE", "MSS_A", "MSS_A_HEAD"] = "MSS_A_HEAD"
    key: SecretStr | None = None
    previous_key: SecretStr | None = None
    uri_mode: Literal["path", "full"] = "path"
    """How 'URI(callback_url)' is interpreted in the MSS_A formula (the docs are ambiguous)."""
    tolerance_s: float = Field(300.0, gt=0)
    max_future_skew_s: float = Field(30.0, ge=0)
    """How far ahead of our clock a callback's ``hwTime`` may be (clock skew); beyond it the
    callback is refused (401). ``tolerance_s`` alone let a time 299 s ahead in, which then made
    every genuine callback of the job look stale until that time."""
    max_body_bytes: int = Field(65536, ge=1024)
    """A genuine callback is a few hundred bytes; below 1 KiB every one would be refused."""
    allow_none: bool = False
    """auth_type NONE is refused unless this is true (and the path should carry a secret token)."""

    _keys = field_validator("key", "previous_key")(lambda v: _header_value(v))


class ProbeSettings(BaseModel):
    """How one room's playback is probed. A global ``[probe]`` section, overridable per room."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Probe rooms that have a ``playback_url`` (rooms without one are never probed)."""
    interval_s: float = Field(default=15.0, gt=0)
    """Time between the starts of two probes of one room (±10 % jitter)."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Hard limit of one probe; no video stream by then = dead. The process group is killed."""
    fail_after_s: float = Field(default=30.0, ge=0)
    """Playback must be dead continuously this long (LIVE + CONNECTED) before the room is told."""
    ffprobe: str = "ffprobe"
    """ffprobe executable (name on $PATH or absolute path)."""


class RecoverySettings(_Section):
    """The recovery ladder. Every number can be overridden per room."""

    grace_s: float = Field(_POLICY.grace_s, ge=0)
    """DEGRADED: wait this long for the service's own reconnect before refreshing."""
    widen_exit_minutes: int = Field(_POLICY.widen_exit_minutes, ge=0)
    """RESET_EXIT_CONFIG max_exception_waiting_duration before the first refresh (0 = don't)."""
    refresh_tries: int = Field(_POLICY.refresh_tries, ge=0)
    """REFRESH_OUTPUT_URL attempts per output URL (current, then each backup)."""
    refresh_backoff_s: float = Field(_POLICY.refresh_backoff_s, ge=0)
    refresh_backoff_factor: float = Field(_POLICY.refresh_backoff_factor, ge=1)
    refresh_confirm_s: float = Field(_POLICY.refresh_confirm_s, ge=0)
    """How long a refresh may take to bring the link back to CONNECTED."""
    jitter: float = Field(_POLICY.jitter, ge=0, le=1)
    """± fraction applied to every backoff."""
    restart_backoff_s: float = Field(_POLICY.restart_backoff_s, ge=0)
    """Restart attempts since the room was last LIVE: the first at once, then this, doubling."""
    restart_backoff_max_s: float = Field(_POLICY.restart_backoff_max_s, ge=0)
    api_retry_s: float = Field(_POLICY.api_retry_s, ge=0)
    """A list-and-start that failed on a temporary API error (5xx, 429) is retried after this,
    growing by api_retry_factor up to restart_backoff_max_s; Retry-After is a floor."""
    api_retry_factor: float = Field(_POLICY.api_retry_factor, ge=1)
    quarantine_after: int = Field(_POLICY.quarantine_after, ge=0)
    """K consecutive failed restarts within quarantine_window_s → QUARANTINED."""
    quarantine_window_s: float = Field(_POLICY.quarantine_window_s, ge=0)
    stable_after_s: float = Field(_POLICY.stable_after_s, ge=0)
    """A room that reached LIVE has recovered (the restart backoff and the quarantine count
    start over) only once it has stayed LIVE this long: a job that fails sooner was a failed
    restart, so a job that dies seconds after every start backs off and is quarantined instead
    of restarting at once forever (0 = recovered on reaching LIVE)."""
    start_confirm_s: float = Field(_POLICY.start_confirm_s, ge=0)
    """A started job must be PROCESSING+CONNECTED within this, or it is restarted."""
    stop_confirm_s: float = Field(_POLICY.stop_confirm_s, ge=0)
    stale_after_s: float = Field(_POLICY.stale_after_s, gt=0)
    """LIVE with no confirming observation for this long → re-read the job."""
    stall_after_s: float = Field(_POLICY.stall_after_s, ge=0)
    """A read of the job shows its ``stream_duration`` fell this many seconds behind its
    ``duration`` since the last read that showed it pushing, with no link callback meanwhile:
    the push is dead and the callbacks were lost → handled as a drop (0 = off). Relies on the
    service advancing ``stream_duration`` while live (unconfirmed); until two reads show it
    advancing with ``duration``, the check stays unarmed."""
    poll_interval_s: float = Field(30.0, gt=0)
    """The longest time between two polls (the paged tenant job list, 100 jobs a page). A
    smaller tenant is polled more often — pages / ``poll_queries_per_s``, never more often than
    ``poll_min_interval_s`` — so a failure whose callbacks were lost is seen sooner where the
    query budget allows it: 10 rooms every 5 s (0.2 queries/s), 10,000 every 30 s (3.3/s)."""
    poll_min_interval_s: float = Field(5.0, gt=0)
    poll_queries_per_s: float = Field(3.0, gt=0)
    """Queries per second the poll may spend (the tenant's limit is 20/s for all queries)."""
    stray_jobs: Literal["stop", "alert"] = _POLICY.stray_jobs
    """Extra jobs found in a room we own: stop them, or only alert."""
    unrecovered_alert_s: float = Field(_POLICY.unrecovered_alert_s, ge=0)
    """Alert when a drop is not recovered within this many seconds."""
    key_refused_markers: tuple[str, ...] = _POLICY.key_refused_markers
    """(unconfirmed) How a refused stream key is told from a dead link: a read of the job,
    while its link is down, whose ``error_info`` (code or message) contains one of these
    (case-insensitive). The documentation only calls ``error_info`` the job's "failure
    reason"; that the service fills it for a running job whose ingest refuses the key, and
    with which words, is an inference (the emulator does so). A refused key is not retried:
    the ladder moves to a backup output, else ends QUARANTINED ("stream key refused") instead
    of restarting with the same key. Empty: never tell them apart."""


class ScheduleSettings(_Section):
    timezone: str = "UTC"
    """Default IANA time zone for rooms that don't set one."""
    min_remaining_s: float = Field(120.0, ge=0)
    """Catch-up: booting inside a window starts now unless less than this remains."""
    misfire_grace_s: float = Field(60.0, ge=0)
    holidays_file: str | None = None
    """TOML file of named holiday lists: name = ["2026-10-01", "2026-10-01..2026-10-07"]."""
    rollover_before_h: float = Field(160.0, gt=0, lt=168)
    """Plan a rollover before the service's 168 h job limit."""

    _tz = field_validator("timezone")(lambda v: _timezone(v))


class OutputTarget(_Section):
    url: str = Field(pattern=r"^rtmps?://[^\s/]+")
    stream_key: SecretStr = SecretStr("")


class RoomSettings(_Section):
    id: str
    """MetaStudio room id."""
    name: str = ""
    output_url: str = Field("", pattern=r"^(rtmps?://[^\s/]+\S*)?$")
    """rtmp:// or rtmps:// push URL (empty: the room's own configured output)."""
    stream_key: SecretStr | None = None
    backup_outputs: list[OutputTarget] = Field(default_factory=list)
    timezone: str | None = None
    windows: list[WindowSpec] = Field(default_factory=list)
    """Window specs (see schedule.windows): cron+duration|end_cron, start+end, always."""
    overlap: Literal["merge", "skip"] = "merge"
    """Overlapping windows: merge them, or skip the later one."""
    exclude: list[str] = Field(default_factory=list)
    holidays: list[str] = Field(default_factory=list)
    daily_restart: str | None = None
    callback_key: SecretStr | None = None
    recovery: dict[str, Any] = Field(default_factory=dict)
    """Per-room overrides of [recovery] fields."""
    start: dict[str, Any] = Field(default_factory=dict)
    """Extra fields of the start request (video_config, play_policy, …)."""
    playback_url: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
    """Optional playback URL for the stream health probe (a URL: a typo would read as a dead
    stream and restart a healthy job)."""
    probe: dict[str, Any] = Field(default_factory=dict)
    """Per-room overrides of [probe] fields."""

    _tz = field_validator("timezone")(lambda v: _timezone(v))

    @model_validator(mode="after")
    def _check(self) -> RoomSettings:
        if not ROOM_ID.match(self.id):
            raise ValueError(f"room id {self.id!r} must be 1-128 of [A-Za-z0-9_.-]")
        parse_date_ranges(self.exclude)
        if self.daily_restart:
            parse_hhmm(self.daily_restart)
        return self

    @field_validator("recovery", "probe")
    @classmethod
    def _overrides(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # a field validator, so an error is located at the room's recovery/probe table
        model: type[BaseModel] = (
            RecoverySettings if info.field_name == "recovery" else ProbeSettings
        )
        unknown = set(v) - set(model.model_fields)
        if unknown:
            raise ValueError(f"unknown {info.field_name} override(s): {', '.join(sorted(unknown))}")
        try:
            model.model_validate(v)  # values checked like the global section
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{name}: {first['msg']}") from None
        return v


class ShutdownSettings(_Section):
    stop_jobs: bool = False
    """Stop running jobs on SIGTERM (default: leave them streaming)."""
    timeout_s: float = Field(20.0, gt=0)


class ReloadSettings(_Section):
    stop_removed: bool = False
    """On reload, stop jobs of rooms removed from the config (default: leave them alone)."""


class OpsSettings(_Section):
    token: SecretStr | None = None
    """When set, /rooms, /metrics and the status page require `Authorization: Bearer <token>`."""
    api_reachable_s: float = Field(120.0, gt=0)
    """/readyz fails if no MetaStudio call succeeded within this many seconds."""


class AlertSettings(_Section):
    webhook_url: str | None = None
    webhook_retries: int = Field(5, ge=0, le=100)

    _urls = field_validator("webhook_url")(lambda v: _http_url(v))


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class RetentionSettings(_Section):
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


class LimitsSettings(_Section):
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


class Settings(BaseSettings):
    """Everything the daemon reads at start (and on SIGHUP)."""

    model_config = SettingsConfigDict(
        env_prefix="LIVEORCH_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    cloud: CloudSettings = CloudSettings()
    store: StoreSettings = StoreSettings()
    mqtt: MqttSettings = MqttSettings()
    http: HttpSettings = HttpSettings()
    callbacks: CallbackSettings = CallbackSettings()
    recovery: RecoverySettings = RecoverySettings()
    schedule: ScheduleSettings = ScheduleSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    reload: ReloadSettings = ReloadSettings()
    ops: OpsSettings = OpsSettings()
    alerts: AlertSettings = AlertSettings()
    probe: ProbeSettings = ProbeSettings()
    log: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()
    limits: LimitsSettings = LimitsSettings()
    rooms: list[RoomSettings] = Field(default_factory=list)
    secrets_dir: str | None = None

    _room_index: tuple[int, int, dict[str, RoomSettings]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_rooms(self) -> Settings:
        seen: set[str] = set()
        for r in self.rooms:
            if r.id in seen:
                raise ValueError(f"room id {r.id!r} appears twice")
            seen.add(r.id)
        return self

    @model_validator(mode="after")
    def _retention_keeps_guards(self) -> Settings:
        day = 86400.0
        if self.retention.replies_days * day <= self.mqtt.command_max_age_s:
            raise ValueError(
                f"retention.replies_days ({self.retention.replies_days}) must exceed "
                f"mqtt.command_max_age_s ({self.mqtt.command_max_age_s} s): a command whose "
                "reply was pruned while it is still accepted could run twice"
            )
        if self.retention.inbox_days * day <= self.callbacks.tolerance_s:
            raise ValueError(
                f"retention.inbox_days ({self.retention.inbox_days}) must exceed "
                f"callbacks.tolerance_s ({self.callbacks.tolerance_s} s): the inbox refuses "
                "replayed callbacks for as long as they are accepted"
            )
        return self

    def room(self, room_id: str) -> RoomSettings | None:
        # The supervisor asks before every event: a linear scan made each poll O(rooms²)
        # (10,000 rooms: 10^8 comparisons). Index once per rooms list (frozen model; a
        # model_copy with new rooms has a new list, so the key changes).
        cached = self._room_index
        if cached is None or cached[0] != id(self.rooms) or cached[1] != len(self.rooms):
            cached = (id(self.rooms), len(self.rooms), {r.id: r for r in self.rooms})
            self._room_index = cached
        return cached[2].get(room_id)

    def recovery_for(self, room_id: str) -> RecoverySettings:
        room = self.room(room_id)
        if room is None or not room.recovery:
            return self.recovery
        # validate, don't model_copy(update=): per-room overrides get the same type checks
        return RecoverySettings.model_validate({**self.recovery.model_dump(), **room.recovery})

    def probe_for(self, room_id: str) -> ProbeSettings:
        room = self.room(room_id)
        if room is None or not room.probe:
            return self.probe
        return ProbeSettings.model_validate({**self.probe.model_dump(), **room.probe})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file (plus secret files) arrives as init values; env must win over it.
        return (env_settings, init_settings)


_GLOBAL_SECRET_FILES: dict[str, tuple[str, str]] = {
    "cloud.ak": ("cloud", "ak"),
    "cloud.sk": ("cloud", "sk"),
    "cloud.password": ("cloud", "password"),
    "cloud.security_token": ("cloud", "security_token"),
    "mqtt.password": ("mqtt", "password"),
    "callbacks.key": ("callbacks", "key"),
    "callbacks.previous_key": ("callbacks", "previous_key"),
    "ops.token": ("ops", "token"),
}


_TABLE_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(#.*)?$")
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")


def _key_parts(raw: str) -> list[str]:
    return [p.strip("\"'") for p in re.findall(_KEY_PART, raw)]


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line of every key and table by its full path, arrays of tables by index: ``http.port``
    and ``mqtt.port`` are different keys, ``rooms.1`` is the second ``[[rooms]]`` (a search for
    the last key name blamed the first ``port =`` or ``[[rooms]]`` of the file)."""
    lines: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    arrays: dict[tuple[str | int, ...], int] = {}
    in_multiline = False
    for i, line in enumerate(text.splitlines(), start=1):
        quotes = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = quotes % 2 == 0
            continue
        header = _TABLE_HEADER.match(line)
        if header is not None:
            aot = header.group(1) == "[["
            parts = _key_parts(header.group(2))
            resolved: list[str | int] = []
            for j, part in enumerate(parts):
                resolved.append(part)
                key = tuple(resolved)
                if aot and j == len(parts) - 1:
                    arrays[key] = arrays.get(key, -1) + 1
                    resolved.append(arrays[key])
                elif key in arrays:  # [rooms.recovery] belongs to the latest [[rooms]]
                    resolved.append(arrays[key])
            table = tuple(resolved)
            lines.setdefault(table, i)
            continue
        m = _KEY_LINE.match(line)
        if m is not None:
            lines.setdefault((*table, *_key_parts(m.group(1))), i)
        in_multiline = quotes % 2 == 1
    return lines


class _Locator:
    """Says where a value came from: an environment variable, a secrets file or file:line."""

    def __init__(self, file: Path | None, text: str, env: Mapping[str, str]) -> None:
        self.file = file
        self._lines = _key_lines(text) if text else {}
        self._env = {k.upper(): k for k in env if k.upper().startswith("LIVEORCH_")}
        self.origins: dict[tuple[str | int, ...], str] = {}
        """Values filled from outside the file (secrets files, CLOUD_SDK_* variables)."""

    @property
    def file_where(self) -> str:
        if self.file is not None:
            return str(self.file)
        return f"no config file ({DEFAULT_CONFIG} not found; defaults + environment only)"

    def __call__(self, loc: tuple[int | str, ...]) -> str:
        parts = [str(p) for p in loc]
        for n in range(len(parts), 0, -1):  # env wins over the file: blame the variable
            name = "LIVEORCH_" + "__".join(parts[:n]).upper()
            if name in self._env:
                return f"environment variable {self._env[name]}"
        for n in range(len(loc), 0, -1):
            origin = self.origins.get(tuple(loc[:n]))
            if origin is not None:
                return origin
        for n in range(len(loc), 0, -1):
            line = self._lines.get(tuple(loc[:n]))
            if line is not None:
                return f"{self.file_where}:{line}"
        return self.file_where


def _read_secret_file(f: Path) -> str:
    """A secret's text. Errors name the file and the problem, never a byte of the content."""
    where = f"secrets file {f}"
    try:
        raw = f.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read: {reason}", where=where) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(
            "UTF-16 text (a Windows editor's 'Unicode'): save it as UTF-8 without a BOM",
            where=where,
        )
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped, not kept in the key
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (invalid byte at offset {exc.start}): save it as UTF-8", where=where
        ) from None
    if "\x00" in text:
        raise ConfigError(
            "contains NUL bytes (UTF-16 text without a byte-order mark?): save it as UTF-8",
            where=where,
        )
    return text.strip()


def _apply_secret_files(data: dict[str, Any], secrets_dir: Path, locate: _Locator) -> None:
    """Fill empty secret fields from files; explicit TOML/env values win."""
    if not secrets_dir.is_dir():
        raise ConfigError(f"secrets directory {secrets_dir} does not exist", where="secrets_dir")
    for fname, (section, key) in _GLOBAL_SECRET_FILES.items():
        f = secrets_dir / fname
        if f.is_file():
            sec = data.setdefault(section, {})
            if not isinstance(sec, dict):
                continue  # a malformed section: validation reports it with its line
            if not sec.get(key):
                sec[key] = _read_secret_file(f)
                locate.origins[(section, key)] = f"secrets file {f}"
    rooms = data.get("rooms", [])
    for i, room in enumerate(rooms if isinstance(rooms, list) else []):
        if not isinstance(room, dict):
            continue  # validation reports it
        rid = room.get("id")
        if not isinstance(rid, str):
            continue
        for key in ("stream_key", "callback_key"):
            f = secrets_dir / f"room.{rid}.{key}"
            if f.is_file() and not room.get(key):
                room[key] = _read_secret_file(f)
                locate.origins[("rooms", i, key)] = f"secrets file {f}"


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", where=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}): TOML files must be UTF-8", where=str(path)
        ) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", where=str(path)) from exc


#: pydantic's "String should match pattern '…'" says nothing an operator can act on
_PATTERN_HINTS = {
    "region": "a region id such as cn-north-4",
    "project_id": "an IAM project id: letters, digits, _ and -",
    "pg_schema": "a plain SQL identifier: letters, digits and _, not starting with a digit",
    "host": "a host name or IP address without spaces or /",
    "client_id": "1-128 printable characters without spaces",
    "path": "an absolute URL path starting with / (no spaces, query or fragment)",
    "url": "an rtmp:// or rtmps:// URL",
    "output_url": "an rtmp:// or rtmps:// URL (or empty)",
    "playback_url": "a URL (scheme://…) without spaces",
}


def _reason(err: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        return "unknown key (check spelling; see config/liveorch.example.toml)"
    if err["type"] == "string_pattern_mismatch":
        names = [p for p in loc if isinstance(p, str)]
        hint = _PATTERN_HINTS.get(names[-1] if names else "")
        if hint:
            return f"must be {hint}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def load_settings(
    path: Path | str | None = None,
    *,
    env: bool = True,
    require_file: bool = False,
    check_target: bool = True,
) -> Settings:
    """Load and validate. Raises :class:`ConfigError` naming where (file:line, environment
    variable or secrets file), the field and the reason.

    ``path`` None means ``config/liveorch.toml`` if it exists, else defaults + env only.
    Beyond the model, refuses what ``liveorch run`` would refuse for the configured target
    (no project id, the real cloud without credentials, an unauthenticated remote bind …);
    ``check_target=False`` skips that for tools that never call the cloud (report, preview).
    """
    file: Path | None = Path(path) if path is not None else None
    if file is None and DEFAULT_CONFIG.exists():
        file = DEFAULT_CONFIG
    data: dict[str, Any] = {}
    text = ""
    if file is not None:
        if not file.exists() and not require_file and path is None:
            file = None
        else:
            data, text = _read_toml(file)
    env_vars: Mapping[str, str] = os.environ if env else {}
    locate = _Locator(file, text, env_vars)
    secrets_dir = data.get("secrets_dir") or env_vars.get("LIVEORCH_SECRETS_DIR")
    secrets_dir = secrets_dir or env_vars.get("CREDENTIALS_DIRECTORY")
    if secrets_dir:
        if not isinstance(secrets_dir, str):
            raise ConfigError("secrets_dir: must be a directory path (a string)", where=str(file))
        _apply_secret_files(data, Path(secrets_dir), locate)
    for env_name, key in (("CLOUD_SDK_AK", "ak"), ("CLOUD_SDK_SK", "sk")):
        if env_vars.get(env_name):
            cloud = data.setdefault("cloud", {})
            if isinstance(cloud, dict) and key not in cloud:  # else validation reports it
                cloud[key] = env_vars[env_name]
                locate.origins[("cloud", key)] = f"environment variable {env_name}"
    try:
        settings = Settings(**data) if env else Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        field_path = ".".join(str(p) for p in loc) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{field_path}: {_reason(first)}{more}", where=locate(loc)) from None
    _check_required_secrets(settings, locate)
    _check_schedules(settings, locate)
    if check_target:
        _check_target(settings, locate)
    return settings


def schedule_for_room(
    room: RoomSettings,
    settings: Settings,
    holiday_lists: Mapping[str, tuple[DateRange, ...]] | None = None,
) -> RoomSchedule:
    """Build a room's :class:`RoomSchedule` from settings (the app, ``schedule preview`` and
    the load-time check below use this one function)."""
    sch = settings.schedule
    lists = holiday_lists if holiday_lists is not None else load_holidays(sch.holidays_file)
    return RoomSchedule.build(
        room.windows,
        timezone=room.timezone or sch.timezone,
        exclude=room.exclude,
        holidays=room.holidays,
        holiday_lists=lists,
        daily_restart=room.daily_restart,
        overlap=getattr(room, "overlap", "merge"),
        min_remaining_s=sch.min_remaining_s,
        rollover_before_h=sch.rollover_before_h,
    )


def _check_schedules(s: Settings, locate: _Locator) -> None:
    """Build every room's schedule once: unknown holiday lists or a bad holidays file fail here."""
    lists = load_holidays(s.schedule.holidays_file)
    for i, room in enumerate(s.rooms):
        try:
            schedule_for_room(room, s, lists)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"rooms.{room.id}: {exc}", where=locate(("rooms", i))) from None


def _check_required_secrets(s: Settings, locate: _Locator) -> None:
    if s.cloud.auth == "aksk" and (s.cloud.ak is None) != (s.cloud.sk is None):
        raise ConfigError(
            "cloud.ak and cloud.sk must be given together",
            where=locate(("cloud", "ak" if s.cloud.ak is not None else "sk")),
        )
    if s.cloud.auth == "token" and s.cloud.password is None:
        raise ConfigError(
            "cloud.auth = 'token' needs cloud.password (file cloud.password in the secrets dir)",
            where=locate(("cloud", "auth")),
        )
    if s.ops.token is not None and not s.ops.token.get_secret_value().strip():
        # an empty token (e.g. an empty ops.token file) would silently switch auth off
        raise ConfigError(
            "ops.token is empty: set a token, or remove the key to run the ops API without one",
            where=locate(("ops", "token")),
        )
    if s.callbacks.auth_type == "NONE" and not s.callbacks.allow_none:
        raise ConfigError(
            "callbacks.auth_type NONE accepts unsigned callbacks; set callbacks.allow_none = true "
            "deliberately (and put a secret token in the callback path)",
            where=locate(("callbacks", "auth_type")),
        )
    for i, room in enumerate(s.rooms):
        if room.output_url and room.stream_key is None:
            raise ConfigError(
                f"rooms.{room.id}.stream_key is missing (put it in the secrets dir as "
                f"room.{room.id}.stream_key, or in the config)",
                where=locate(("rooms", i, "output_url")),
            )


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only this machine can reach the port."""
    import ipaddress

    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_target(s: Settings, locate: _Locator) -> None:
    """What ``liveorch run`` needs for the configured target, checked before it starts."""
    c = s.cloud
    real_cloud = c.base_url is None
    if not c.project_id:
        raise ConfigError(
            "cloud.project_id: required (every MetaStudio API path carries it; for "
            "`liveorch emulate` use the project id it prints)",
            where=locate(("cloud", "project_id")),
        )
    if c.auth == "aksk" and real_cloud and c.ak is None:
        raise ConfigError(
            "cloud.ak/cloud.sk: the real cloud needs AK/SK (secrets files cloud.ak and cloud.sk, "
            "or CLOUD_SDK_AK/CLOUD_SDK_SK); set cloud.base_url for an emulator",
            where=locate(("cloud",)),
        )
    if c.auth == "token" and not (c.iam_user and c.iam_domain):
        raise ConfigError(
            "cloud.iam_user/cloud.iam_domain: required for cloud.auth = 'token'",
            where=locate(("cloud", "auth")),
        )
    if s.http.public_callback_url and s.callbacks.auth_type != "NONE" and s.callbacks.key is None:
        for i, room in enumerate(s.rooms):
            if room.callback_key is None:
                # the start request would carry no key: MetaStudio refuses it, every start fails
                raise ConfigError(
                    f"callbacks.key: required for auth_type {s.callbacks.auth_type} with "
                    f"http.public_callback_url (room {room.id} has no callback_key; secrets file "
                    "callbacks.key)",
                    where=locate(("rooms", i)),
                )
    from orchestrator.errors import InvalidRequest
    from orchestrator.rooms.startreq import RoomConfig, build_start_request

    for i, room in enumerate(s.rooms):
        try:  # the start request every start of this room would send: refused by us, not later
            build_start_request(RoomConfig.build(s, room))
        except InvalidRequest as exc:
            raise ConfigError(
                f"rooms.{i}.start: {exc.message}", where=locate(("rooms", i, "start"))
            ) from None
    if (
        not is_loopback_host(s.http.host)
        and s.ops.token is None
        and not s.http.allow_unauthenticated_remote
    ):
        raise ConfigError(
            f"http.host {s.http.host!r} is reachable from other machines and ops.token is not "
            "set: /rooms, /metrics and the status page would be open to anyone. Set ops.token "
            "(secrets file ops.token), or http.allow_unauthenticated_remote = true deliberately",
            where=locate(("http", "host")),
        )


_SECRET_QUERY_KEYS = frozenset({"sig", "auth", "apikey", "access_token", "code", "pass", "pwd"})
_TOKEN_LIKE = re.compile(r"^[A-Za-z0-9_\-.~=%+]{16,}$")


def _token_like(part: str) -> bool:
    """A path or query value that looks like a credential: a long opaque chunk with letters
    and digits (webhook URLs carry their token in the path, e.g. …/services/T0/B0/<token>);
    words joined by - or _ (a directory or route name) are not."""
    if not _TOKEN_LIKE.match(part):
        return False
    if not (any(ch.isdigit() for ch in part) and any(ch.isalpha() for ch in part)):
        return False
    return max(len(w) for w in re.split(r"[-_.~]", part)) >= 16


#: schemes whose path is a route (may hold a token); a database URL's path is a file name
_ROUTE_SCHEMES = frozenset({"http", "https", "rtmp", "rtmps", "ws", "wss"})


def url_secrets(url: str) -> list[str]:
    """The credential parts of ``url``: userinfo password, secret-named query values and
    token-like path segments or query values."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found: list[str] = []
    if password:
        found += [password, unquote(password)]
    if parts.scheme in _ROUTE_SCHEMES:
        found += [seg for seg in parts.path.split("/") if _token_like(seg)]
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_secret_key(key) or key.lower() in _SECRET_QUERY_KEYS or _token_like(value):
            found.append(value)
    return [f for f in dict.fromkeys(found) if f]


def mask_url(url: str) -> str:
    """``url`` with every part :func:`url_secrets` finds replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"  # unparseable: print nothing of it
    netloc = parts.netloc
    if password:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    path = parts.path
    if parts.scheme in _ROUTE_SCHEMES:
        path = "/".join("***" if _token_like(seg) else seg for seg in path.split("/"))
    query = parts.query
    if query:
        items = []
        for item in query.split("&"):
            key, sep, value = item.partition("=")
            secret = is_secret_key(key) or key.lower() in _SECRET_QUERY_KEYS
            items.append(f"{key}{sep}***" if sep and (secret or _token_like(value)) else item)
        query = "&".join(items)
    if "://" not in url:
        return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))
    # by hand: urlunsplit drops the empty authority of sqlite:////abs/path
    out = f"{parts.scheme}://{netloc}{path}"
    out += f"?{query}" if query else ""
    return out + (f"#{parts.fragment}" if parts.fragment else "")


def _mask_urls(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    return value


def config_url_secrets(s: Settings) -> list[str]:
    """Credentials inside the configured URLs (for the log redactor)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and "://" in value:
            found.extend(url_secrets(value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(s.model_dump(mode="json"))
    return found


def masked_dump(s: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-able data with every secret masked: secret fields
    by type, credentials inside URLs (store.url password, webhook tokens) by :func:`mask_url`."""
    dumped: dict[str, Any] = _mask_urls(s.model_dump(mode="json"))
    return dumped
