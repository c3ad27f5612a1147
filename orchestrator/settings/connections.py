"""The sections for the outside systems the daemon talks to: MetaStudio (``[cloud]``), the
database (``[store]``), the MQTT broker (``[mqtt]``), its own HTTP port (``[http]``) and the
live-event callbacks (``[callbacks]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from orchestrator.names import BRIDGE_ACTION_NAMES, ROOM_ACTION_NAMES, TopicError, check_mqtt_prefix
from orchestrator.settings.fields import Section, header_value, http_url

_STORE_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class CloudSettings(Section):
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

    _urls = field_validator("base_url", "iam_url")(lambda v: http_url(v))
    _header_safe = field_validator("ak", "sk", "security_token", "app_user_id")(
        lambda v: header_value(v)
    )


class StoreSettings(Section):
    url: str = "sqlite+aiosqlite:///var/liveorch.db"
    """SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db (the only
    two drivers the daemon has)."""
    instance_id: str = ""
    """Stable id of this instance (multi-instance leases); default hostname:pid."""
    lease_ttl_s: float = Field(50.0, gt=0)
    """Room lease lifetime (several instances): a dead instance's rooms move after at most this
    plus about two seconds (the survivors wake just after its leases expire). Keep it above
    3 x ``cloud.read_timeout_s`` (so a call still in flight when an instance stalls cannot land
    after another instance took the room) and well above clock skew between hosts. A stream
    keeps running during a failover either way; the TTL only bounds how long its repairs
    pause."""
    join_settle_s: float = Field(3.0, ge=0.0, le=60.0)
    """Several instances: a starting instance announces itself, waits this long, then reads
    who is there and takes its share. Instances started together then split the rooms at once,
    instead of the first taking every room and handing most of them back."""
    max_rooms_per_instance: int | None = Field(None, ge=1)
    """Cap on rooms one instance works on (several instances); default: a fair share."""
    leases: Literal["auto", "on", "off"] = "auto"
    """Room ownership by leases: "auto" = on for PostgreSQL, off for SQLite (one instance owns
    every room, unfenced, as before)."""
    pg_schema: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    """PostgreSQL schema for every table (side-by-side deployments or tests in one database)."""
    reader_query_share: float = Field(0.25, ge=0.0, lt=1.0)
    """Several instances: the part of the tenant's job-query limit kept for the one instance
    that lists the tenant's jobs for the whole fleet (the tenant reader); the rest, and every
    other API group, is shared by leased rooms. docs/scale-out.md."""

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


class MqttSettings(Section):
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


class HttpSettings(Section):
    host: str = Field("127.0.0.1", pattern=r"^[^\s/]+$")
    """Ops + callback server bind address. Loopback by default: expose deliberately."""
    port: int = Field(8680, ge=0, le=65535)
    """0 = any free port (tests)."""
    public_callback_url: str | None = None
    """URL MetaStudio must call (goes into the start request's live_event_callback_config)."""
    allow_unauthenticated_remote: bool = False
    """A bind address beyond loopback without ``ops.token`` would serve /rooms, /metrics and
    the status page to anyone who can reach the port: refused unless this is true."""

    _urls = field_validator("public_callback_url")(lambda v: http_url(v))


class CallbackSettings(Section):
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

    _keys = field_validator("key", "previous_key")(lambda v: header_value(v))
