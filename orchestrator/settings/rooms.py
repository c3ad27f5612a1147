"""The sections about rooms: the playback probe, the recovery ladder, the schedule defaults and
the ``[[rooms]]`` entries themselves."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.names import ROOM_ID
from orchestrator.rooms.policy import Policy
from orchestrator.schedule.windows import WindowSpec, parse_date_ranges, parse_hhmm
from orchestrator.settings.fields import Section, iana_timezone

_POLICY = Policy()
"""The recovery defaults live with the pure ladder (``rooms.policy``), which must not import
this module; [recovery] documents and validates them here."""


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


class RecoverySettings(Section):
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
    ingest_unreachable_markers: tuple[str, ...] = _POLICY.ingest_unreachable_markers
    """(unconfirmed) How an unreachable ingest is told from other dead links: a read of the
    job, while its link is down, whose ``error_info`` contains one of these (case-insensitive;
    the emulator writes ``LIVE.INGEST_UNREACHABLE`` "RTMP connection to the ingest failed",
    the documentation says nothing of it). With a backup output, the ladder leaves the output
    the job pushes to at once (a refresh to the next one; after one try on any other); with
    none left, it keeps refreshing instead of restarting until ``ingest_wait_s``. Empty:
    never tell them apart (refresh each output ``refresh_tries`` times, then restart)."""
    ingest_wait_s: float = Field(_POLICY.ingest_wait_s, ge=0)
    """An unreachable ingest on every output (see ``ingest_unreachable_markers``): the restart
    that ends an exhausted ladder is held, refreshes go on and the ``unrecovered`` alert is
    raised at once, until the drop is this old; then the restart goes ahead (the bound on what
    a wrong hint can cost). 0 = never hold."""


class ScheduleSettings(Section):
    timezone: str = "UTC"
    """Default IANA time zone for rooms that don't set one."""
    min_remaining_s: float = Field(120.0, ge=0)
    """Catch-up: booting inside a window starts now unless less than this remains."""
    misfire_grace_s: float = Field(60.0, ge=0)
    holidays_file: str | None = None
    """TOML file of named holiday lists: name = ["2026-10-01", "2026-10-01..2026-10-07"]."""
    rollover_before_h: float = Field(160.0, gt=0, lt=168)
    """Plan a rollover before the service's 168 h job limit."""

    _tz = field_validator("timezone")(lambda v: iana_timezone(v))


class OutputTarget(Section):
    url: str = Field(pattern=r"^rtmps?://[^\s/]+")
    stream_key: SecretStr = SecretStr("")


class RoomSettings(Section):
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

    _tz = field_validator("timezone")(lambda v: iana_timezone(v))

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
