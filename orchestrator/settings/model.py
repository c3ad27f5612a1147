"""The root :class:`Settings` model: every section, the rooms, and the cross-section checks."""

from __future__ import annotations

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.settings.connections import (
    CallbackSettings,
    CloudSettings,
    HttpSettings,
    MqttSettings,
    StoreSettings,
)
from orchestrator.settings.rooms import (
    ProbeSettings,
    RecoverySettings,
    RoomSettings,
    ScheduleSettings,
)
from orchestrator.settings.service import (
    AlertSettings,
    LimitsSettings,
    LogSettings,
    OpsSettings,
    ReloadSettings,
    RetentionSettings,
    ShutdownSettings,
)


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
