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
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from orchestrator.errors import ConfigError
from orchestrator.probe import ProbeSettings
from orchestrator.schedule.windows import WindowSpec, parse_date_ranges, parse_hhmm

DEFAULT_CONFIG = Path("config/liveorch.toml")
_ROOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudSettings(_Section):
    """How to reach MetaStudio."""

    region: str = "cn-north-4"
    """Region id; the endpoint is https://metastudio.{region}.myhuaweicloud.com."""
    base_url: str | None = None
    """Explicit endpoint (e.g. the emulator http://127.0.0.1:8600); overrides region."""
    project_id: str = ""
    """IAM project id of the region (required for the real cloud)."""
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
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    """A call whose answer does not come in time fails; for a start this means 'outcome
    unknown', and the room lists its jobs before trying again (never a blind retry)."""
    read_retry_backoff_s: float = Field(0.5, ge=0)
    """A read (list/show) that failed on a network or temporary error is sent again after this,
    then twice as long (two retries, at most 10 s, Retry-After honoured); writes never are."""
    rate_start_per_s: float = 4.0
    rate_query_per_s: float = 20.0
    rate_write_per_s: float = 4.0
    """Tenant rate limits (documented for cn-north-4; lower for cn-east-3)."""


class StoreSettings(_Section):
    url: str = "sqlite+aiosqlite:///var/liveorch.db"
    """SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db."""
    instance_id: str = ""
    """Stable id of this instance (multi-instance leases); default hostname:pid."""
    lease_ttl_s: float = 50.0
    """Room lease lifetime (several instances): a dead instance's rooms move after at most this
    plus a third of it. Keep it above 3 x ``cloud.read_timeout_s`` (so a call still in flight
    when an instance stalls cannot land after another instance took the room) and well above
    clock skew between hosts. A stream keeps running during a failover either way; the TTL
    only bounds how long its repairs pause."""
    max_rooms_per_instance: int | None = None
    """Cap on rooms one instance works on (several instances); default: a fair share."""
    leases: Literal["auto", "on", "off"] = "auto"
    """Room ownership by leases: "auto" = on for PostgreSQL, off for SQLite (one instance owns
    every room, unfenced, as before)."""
    pg_schema: str | None = None
    """PostgreSQL schema for every table (side-by-side deployments or tests in one database)."""


class MqttSettings(_Section):
    enabled: bool = False
    """Off by default: the daemon runs without MQTT when no broker is configured."""
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "liveorch"
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    prefix: str = "liveorch"
    keepalive_s: int = 30
    protocol: Literal["5", "3.1.1"] = "5"
    reconnect_max_s: float = 30.0
    queue_limit: int = 10000
    """Room state updates kept while disconnected (latest per room wins)."""
    acl: dict[str, list[str]] = Field(default_factory=dict)
    """Allow-list of actions per client (payload field "client"); empty = everything allowed."""
    command_max_age_s: float = 300.0
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


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    """Ops + callback server bind address. Loopback by default: expose deliberately."""
    port: int = 8680
    public_callback_url: str | None = None
    """URL MetaStudio must call (goes into the start request's live_event_callback_config)."""


class CallbackSettings(_Section):
    path: str = "/callbacks/metastudio"
    auth_type: Literal["NONE", "MSS_A", "MSS_A_HEAD"] = "MSS_A_HEAD"
    key: SecretStr | None = None
    previous_key: SecretStr | None = None
    uri_mode: Literal["path", "full"] = "path"
    """How 'URI(callback_url)' is interpreted in the MSS_A formula (the docs are ambiguous)."""
    tolerance_s: float = 300.0
    max_future_skew_s: float = Field(30.0, ge=0)
    """How far ahead of our clock a callback's ``hwTime`` may be (clock skew); beyond it the
    callback is refused (401). ``tolerance_s`` alone let a time 299 s ahead in, which then made
    every genuine callback of the job look stale until that time."""
    max_body_bytes: int = 65536
    allow_none: bool = False
    """auth_type NONE is refused unless this is true (and the path should carry a secret token)."""


class RecoverySettings(_Section):
    """The recovery ladder. Every number can be overridden per room."""

    grace_s: float = Field(10.0, ge=0)
    """DEGRADED: wait this long for the service's own reconnect before refreshing."""
    widen_exit_minutes: int = Field(10, ge=0)
    """RESET_EXIT_CONFIG max_exception_waiting_duration before the first refresh (0 = don't)."""
    refresh_tries: int = Field(3, ge=0)
    """REFRESH_OUTPUT_URL attempts per output URL (current, then each backup)."""
    refresh_backoff_s: float = Field(2.0, ge=0)
    refresh_backoff_factor: float = Field(1.5, ge=1)
    refresh_confirm_s: float = Field(10.0, ge=0)
    """How long a refresh may take to bring the link back to CONNECTED."""
    jitter: float = Field(0.2, ge=0, le=1)
    """± fraction applied to every backoff."""
    restart_backoff_s: float = Field(5.0, ge=0)
    """Restart attempts since the room was last LIVE: the first at once, then this, doubling."""
    restart_backoff_max_s: float = Field(300.0, ge=0)
    api_retry_s: float = Field(2.0, ge=0)
    """A list-and-start that failed on a temporary API error (5xx, 429) is retried after this,
    growing by api_retry_factor up to restart_backoff_max_s; Retry-After is a floor."""
    api_retry_factor: float = Field(1.5, ge=1)
    quarantine_after: int = Field(5, ge=0)
    """K consecutive failed restarts within quarantine_window_s → QUARANTINED."""
    quarantine_window_s: float = Field(1800.0, ge=0)
    stable_after_s: float = Field(60.0, ge=0)
    """A room that reached LIVE has recovered (the restart backoff and the quarantine count
    start over) only once it has stayed LIVE this long: a job that fails sooner was a failed
    restart, so a job that dies seconds after every start backs off and is quarantined instead
    of restarting at once forever (0 = recovered on reaching LIVE)."""
    start_confirm_s: float = Field(120.0, ge=0)
    """A started job must be PROCESSING+CONNECTED within this, or it is restarted."""
    stop_confirm_s: float = Field(60.0, ge=0)
    stale_after_s: float = Field(90.0, gt=0)
    """LIVE with no confirming observation for this long → re-read the job."""
    stall_after_s: float = Field(10.0, ge=0)
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
    stray_jobs: Literal["stop", "alert"] = "stop"
    """Extra jobs found in a room we own: stop them, or only alert."""
    unrecovered_alert_s: float = Field(120.0, ge=0)
    """Alert when a drop is not recovered within this many seconds."""
    key_refused_markers: tuple[str, ...] = (
        "STREAM_KEY_REFUSED",
        "stream key refused",
        "NetStream.Publish.BadName",
    )
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
    min_remaining_s: float = 120.0
    """Catch-up: booting inside a window starts now unless less than this remains."""
    misfire_grace_s: float = 60.0
    holidays_file: str | None = None
    """TOML file of named holiday lists: name = ["2026-10-01", "2026-10-01..2026-10-07"]."""
    rollover_before_h: float = 160.0
    """Plan a rollover before the service's 168 h job limit."""


class OutputTarget(_Section):
    url: str
    stream_key: SecretStr = SecretStr("")


class RoomSettings(_Section):
    id: str
    """MetaStudio room id."""
    name: str = ""
    output_url: str = ""
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
    playback_url: str | None = None
    """Optional playback URL for the stream health probe."""
    probe: dict[str, Any] = Field(default_factory=dict)
    """Per-room overrides of [probe] fields."""

    @model_validator(mode="after")
    def _check(self) -> RoomSettings:
        if not _ROOM_ID.match(self.id):
            raise ValueError(f"room id {self.id!r} must be 1-128 of [A-Za-z0-9_.-]")
        parse_date_ranges(self.exclude)
        if self.daily_restart:
            parse_hhmm(self.daily_restart)
        unknown = set(self.recovery) - set(RecoverySettings.model_fields)
        if unknown:
            raise ValueError(f"unknown recovery override(s): {', '.join(sorted(unknown))}")
        unknown = set(self.probe) - set(ProbeSettings.model_fields)
        if unknown:
            raise ValueError(f"unknown probe override(s): {', '.join(sorted(unknown))}")
        RecoverySettings.model_validate(self.recovery)  # values checked like the global section
        ProbeSettings.model_validate(self.probe)
        return self


class ShutdownSettings(_Section):
    stop_jobs: bool = False
    """Stop running jobs on SIGTERM (default: leave them streaming)."""
    timeout_s: float = 20.0


class ReloadSettings(_Section):
    stop_removed: bool = False
    """On reload, stop jobs of rooms removed from the config (default: leave them alone)."""


class OpsSettings(_Section):
    token: SecretStr | None = None
    """When set, /rooms, /metrics and the status page require `Authorization: Bearer <token>`."""
    api_reachable_s: float = 120.0
    """/readyz fails if no MetaStudio call succeeded within this many seconds."""


class AlertSettings(_Section):
    webhook_url: str | None = None
    webhook_retries: int = 5


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


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


def _field_line(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line number of the last named key of ``loc`` in the TOML text."""
    names = [p for p in loc if isinstance(p, str)]
    if not names:
        return None
    key = names[-1]
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=|^\s*\[+\s*{re.escape(key)}\s*\]+")
    for i, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return i
    return None


def _apply_secret_files(data: dict[str, Any], secrets_dir: Path) -> None:
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
                sec[key] = f.read_text(encoding="utf-8").strip()
    rooms = data.get("rooms", [])
    for room in rooms if isinstance(rooms, list) else []:
        if not isinstance(room, dict):
            continue  # validation reports it
        rid = room.get("id")
        if not isinstance(rid, str):
            continue
        for key in ("stream_key", "callback_key"):
            f = secrets_dir / f"room.{rid}.{key}"
            if f.is_file() and not room.get(key):
                room[key] = f.read_text(encoding="utf-8").strip()


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


def load_settings(
    path: Path | str | None = None, *, env: bool = True, require_file: bool = False
) -> Settings:
    """Load and validate. Raises :class:`ConfigError` naming the file, line, field and reason.

    ``path`` None means ``config/liveorch.toml`` if it exists, else defaults + env only.
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
    env_vars = os.environ if env else {}
    secrets_dir = data.get("secrets_dir") or env_vars.get("LIVEORCH_SECRETS_DIR")
    secrets_dir = secrets_dir or env_vars.get("CREDENTIALS_DIRECTORY")
    if secrets_dir:
        if not isinstance(secrets_dir, str):
            raise ConfigError("secrets_dir: must be a directory path (a string)", where=str(file))
        _apply_secret_files(data, Path(secrets_dir))
    for env_name, key in (("CLOUD_SDK_AK", "ak"), ("CLOUD_SDK_SK", "sk")):
        if env_vars.get(env_name):
            cloud = data.setdefault("cloud", {})
            if isinstance(cloud, dict):  # else validation reports the malformed section
                cloud.setdefault(key, env_vars[env_name])
    where = str(file) if file else "<defaults+env>"
    try:
        settings = Settings(**data) if env else Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        field_path = ".".join(str(p) for p in loc) or "(top level)"
        line = _field_line(text, loc) if text else None
        at = f"{where}:{line}" if line else where
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; see config/liveorch.example.toml)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{field_path}: {msg}{more}", where=at) from None
    _check_required_secrets(settings, where)
    _check_schedules(settings, where)
    return settings


def _check_schedules(s: Settings, where: str) -> None:
    """Build every room's schedule once: unknown holiday lists or a bad holidays file fail here."""
    from orchestrator.schedule.holidays import load_holidays
    from orchestrator.schedule.preview import schedule_for_room

    lists = load_holidays(s.schedule.holidays_file)
    for room in s.rooms:
        try:
            schedule_for_room(room, s, lists)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"rooms.{room.id}: {exc}", where=where) from None


def _check_required_secrets(s: Settings, where: str) -> None:
    if s.cloud.auth == "aksk" and (s.cloud.ak is None) != (s.cloud.sk is None):
        raise ConfigError("cloud.ak and cloud.sk must be given together", where=where)
    if s.cloud.auth == "token" and s.cloud.password is None:
        raise ConfigError(
            "cloud.auth = 'token' needs cloud.password (file cloud.password in the secrets dir)",
            where=where,
        )
    if s.ops.token is not None and not s.ops.token.get_secret_value().strip():
        # an empty token (e.g. an empty ops.token file) would silently switch auth off
        raise ConfigError(
            "ops.token is empty: set a token, or remove the key to run the ops API without one",
            where=where,
        )
    if s.callbacks.auth_type == "NONE" and not s.callbacks.allow_none:
        raise ConfigError(
            "callbacks.auth_type NONE accepts unsigned callbacks; set callbacks.allow_none = true "
            "deliberately (and put a secret token in the callback path)",
            where=where,
        )
    for room in s.rooms:
        if room.output_url and room.stream_key is None:
            raise ConfigError(
                f"rooms.{room.id}.stream_key is missing (put it in the secrets dir as "
                f"room.{room.id}.stream_key, or in the config)",
                where=where,
            )


def masked_dump(s: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-able data with every secret masked."""
    return s.model_dump(mode="json")
