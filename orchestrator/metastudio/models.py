"""Pydantic models of MetaStudio smart-live requests, responses and callbacks (api doc §3 to §8).

Field names are the API's own. Two policies, on purpose:

* **Requests are strict** (``extra="forbid"``, documented ranges and enums) so a bad request is
  refused before any network call. Use :func:`build` (or the client, which re-checks) to get an
  :class:`~orchestrator.errors.InvalidRequest` with a clear, value-free message.
* **Responses are lenient** (``extra="allow"``, everything optional, unknown enum values kept as
  plain strings) because the service adds fields and values without notice.

Secrets (stream keys, callback HMAC keys) are :class:`pydantic.SecretStr`: they print as
``**********`` in reprs, logs and validation errors, and are revealed only by :func:`to_wire`,
which produces the JSON body actually sent.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from orchestrator.metastudio.constraints import ConstraintViolation, check_start_body
from orchestrator.metastudio.responses import (
    CallbackEvent,
    CommandResult,
    CreateSmartLiveRoomResp,
    ErrorInfo,
    LiveEventCallback,
    LiveEventCallbackInfo,
    LiveWarningInfo,
    ReplyCommandFinish,
    RTCRoomInfoList,
    RTCUserInfo,
    RtmpStreamStateChange,
    ShootScriptSwitch,
    SmartLiveJob,
    SmartLiveJobBrief,
    SmartLiveJobBriefList,
    SmartLiveJobList,
    SmartLiveRoom,
    SmartLiveRoomBaseInfo,
    SmartLiveRoomList,
    StartSmartLiveResp,
    parse_callback,
)
from orchestrator.metastudio.wire import (
    _WIRE,
    CallbackEventType,
    Command,
    JobState,
    PlayRole,
    PlayType,
    RtmpState,
    Secret,
    build,
    describe_errors,
    to_wire,
)

__all__ = [
    "CallbackEvent",
    "CleanUpInsertCommand",
    "CoStreamerConfig",
    "Command",
    "CommandResult",
    "ControlSmartLiveReq",
    "CreateSmartLiveRoomReq",
    "CreateSmartLiveRoomResp",
    "ErrorInfo",
    "JobState",
    "LiveEventCallBackConfig",
    "LiveEventCallback",
    "LiveEventCallbackInfo",
    "LiveExitConfig",
    "LiveJobRunConfig",
    "LiveRoomInteractionConfig",
    "LiveWarningInfo",
    "PlayAudioInfo",
    "PlayPolicy",
    "PlayTextInfo",
    "RTCLiveEventCallBackConfig",
    "RTCRoomInfoList",
    "RTCUserInfo",
    "RefreshOutputUrlConfig",
    "ReplyCommandFinish",
    "ReviewConfig",
    "RtmpState",
    "RtmpStreamStateChange",
    "ShootScriptSwitch",
    "SmartLiveJob",
    "SmartLiveJobBrief",
    "SmartLiveJobBriefList",
    "SmartLiveJobList",
    "SmartLiveRoom",
    "SmartLiveRoomBaseInfo",
    "SmartLiveRoomList",
    "StartSmartLiveReq",
    "StartSmartLiveResp",
    "SubtitleConfig",
    "TextConfig",
    "VideoConfig",
    "VoiceConfig",
    "build",
    "describe_errors",
    "params_model_for",
    "parse_callback",
    "to_wire",
]

# ------------------------------------------------------------------------- requests


class _Request(BaseModel):
    """Strict base: unknown fields rejected, assignments validated, inputs hidden in errors."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        hide_input_in_errors=True,
        populate_by_name=True,
    )


class ReviewConfig(_Request):
    no_need_review: bool | None = None


class SubtitleConfig(_Request):
    """Subtitle placement; live streaming does not support subtitles (kept for completeness)."""

    dx: int | None = Field(default=None, ge=0, le=1920)
    dy: int | None = Field(default=None, ge=0, le=1920)
    h: int | None = Field(default=None, ge=0, le=1920)
    w: int | None = Field(default=None, ge=0, le=1920)
    font_name: str | None = Field(default=None, max_length=64)
    font_size: int | None = Field(default=None, ge=0, le=120)
    font_color: str | None = Field(default=None, max_length=7)
    stroke_color: str | None = Field(default=None, max_length=7)
    stroke_thickness: float | None = Field(default=None, ge=0, le=50)
    opacity: float | None = Field(default=None, ge=0, le=1)


class VideoConfig(_Request):
    """Output video. For live: bitrate 1000‥8000 kbps and only 1080x1920 or 1920x1080."""

    clip_mode: Literal["RESIZE", "CROP"] | None = None
    codec: Literal["H264", "VP8"] | None = None
    bitrate: int = Field(ge=1000, le=8000)
    width: int
    height: int
    frame_rate: str | None = None
    is_subtitle_enable: bool | None = None
    subtitle_config: SubtitleConfig | None = None
    dx: int | None = Field(default=None, ge=-1920, le=3840)
    dy: int | None = Field(default=None, ge=-1920, le=3840)
    is_enable_super_resolution: bool | None = None
    is_end_at_first_frame: bool | None = None
    output_external_url: str | None = None
    is_vocabulary_config_enable: bool | None = None

    @model_validator(mode="after")
    def _live_resolution(self) -> VideoConfig:
        if (self.width, self.height) not in ((1080, 1920), (1920, 1080)):
            raise ValueError("live video must be 1080x1920 or 1920x1080 (width x height)")
        return self


class LiveExitConfig(_Request):
    """Exit policy (§4.3): also the params of ``RESET_EXIT_CONFIG`` and of the tenant config."""

    max_live_duration: int | None = Field(default=None, ge=0, le=168)
    auto_stop_mode: Literal["FORCE_EXIT", "SEGMENT_END", "SCENE_END", "SCRIPT_END"] | None = None
    max_exception_waiting_duration: int | None = Field(default=None, ge=0, le=60)


class PlayPolicy(_Request):
    repeat_count: int | None = Field(default=None, ge=-1, le=100)
    auto_play_script: bool | None = None
    play_mode: Literal["TEXT", "AUDIO", "NO_PRESET"] | None = None
    random_play_mode: Literal["NONE", "SCENE", "SCRIPT_ITEM", "SCENE_AND_SCRIPT_ITEM"] | None = None
    need_independent_capture_client: bool | None = None
    live_exit_config: LiveExitConfig | None = None
    is_rewrite_delay: bool | None = None


class LiveEventCallBackConfig(_Request):
    """Where and how the service posts live events (§6.1). ``key`` is the HMAC secret."""

    live_event_type_callback_url: str | None = Field(default=None, max_length=2048)
    auth_type: Literal["NONE", "MSS_A", "MSS_A_HEAD", "MEITUAN_DEFAULT"] | None = None
    key: Secret | None = None
    callback_event_type: list[CallbackEventType] | None = None

    @field_validator("key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) > 32:
            raise ValueError("callback key must be at most 32 characters")
        return value


class RTCLiveEventCallBackConfig(_Request):
    rtc_callback_event_type: list[Literal["LIVE_PROGRESS", "REPLY_COMMAND_FINISH"]] | None = None


class VoiceConfig(_Request):
    """Voice of the co-streamer; ranges from the StartSmartLive page (seed lines 1357-1419)."""

    voice_asset_id: str = Field(min_length=1, max_length=256)
    speed: int | None = Field(default=None, ge=50, le=200)
    pitch: int | None = Field(default=None, ge=50, le=200)
    volume: int | None = Field(default=None, ge=90, le=240)


class CoStreamerConfig(_Request):
    voice_config: VoiceConfig | None = None
    streamer_action: Literal["SILENCE", "VOLUME_DOWN"] | None = None


class LiveJobRunConfig(_Request):
    allow_resource_type: Literal["PERIOD", "ONDEMAND", "UNLIMITED", "ONE_TIME"] | None = None
    single_job_in_room: bool | None = None


def _one_target(urls: list[str] | None, keys: list[SecretStr] | None) -> None:
    """The service supports exactly one RTMP target: one URL with one (aligned) stream key."""
    if urls is None and keys is None:
        return
    if urls is None or len(urls) != 1:
        raise ValueError("exactly one output_url is supported (output_urls must have 1 item)")
    if keys is None or len(keys) != 1:
        raise ValueError("exactly one stream_key is supported (stream_keys must have 1 item)")
    if not urls[0].strip():
        raise ValueError("output_url must not be empty")


def _plain(value: Any) -> Any:
    """JSON-like view of request input that may hold models and secrets (for the table check)."""
    if isinstance(value, BaseModel):
        return to_wire(value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class StartSmartLiveReq(_Request):
    """Start-job body (§4). Every field is optional: the room's defaults apply."""

    video_config: VideoConfig | None = None
    play_policy: PlayPolicy | None = None
    output_urls: list[str] | None = None
    stream_keys: list[Secret] | None = None
    interaction_callback_url: str | None = Field(default=None, max_length=2048)
    live_event_callback_config: LiveEventCallBackConfig | None = None
    rtc_callback_config: RTCLiveEventCallBackConfig | None = None
    view_mode: Literal["LANDSCAPE", "VERTICAL"] | None = None
    co_streamer_config: CoStreamerConfig | None = None
    job_run_config: LiveJobRunConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _document_table(cls, data: Any) -> Any:
        # the same table the emulator enforces, on the JSON the caller meant, before pydantic's
        # lax coercion can turn "true" into True or "5" into 5
        if isinstance(data, dict):
            try:
                check_start_body(_plain(data))
            except ConstraintViolation as exc:
                raise ValueError(str(exc)) from None
        return data

    @model_validator(mode="after")
    def _single_target(self) -> StartSmartLiveReq:
        _one_target(self.output_urls, self.stream_keys)
        return self


class TextConfig(_Request):
    text: str = Field(min_length=1, max_length=131072)


class PlayTextInfo(_Request):
    """``INSERT_PLAY_SCRIPT`` params (§5.2); the service defaults ``play_type`` to PLAY_NOW."""

    text_config: TextConfig
    play_type: PlayType | None = None
    play_role: PlayRole | None = None
    rule_index: str | None = Field(default=None, max_length=64)


class PlayAudioInfo(_Request):
    """``INSERT_PLAY_AUDIO`` params (§5.2); the service defaults ``play_type`` to APPEND."""

    audio_url: str = Field(min_length=1, max_length=2048)
    play_type: PlayType | None = None
    play_role: PlayRole | None = None
    rule_index: str | None = Field(default=None, max_length=64)


class RefreshOutputUrlConfig(_Request):
    """``REFRESH_OUTPUT_URL`` params. Field names mirror the start body (unconfirmed, §5.3)."""

    output_urls: list[str]
    stream_keys: list[Secret]

    @model_validator(mode="after")
    def _single_target(self) -> RefreshOutputUrlConfig:
        _one_target(self.output_urls, self.stream_keys)
        return self


class CleanUpInsertCommand(_Request):
    """``CLEAN_UP_INSERT_COMMAND`` params; empty/absent ids = all unplayed (unconfirmed, §5.5)."""

    command_ids: list[str] | None = None


_PARAMS_FOR: dict[Command, type[BaseModel]] = {
    Command.REFRESH_OUTPUT_URL: RefreshOutputUrlConfig,
    Command.RESET_EXIT_CONFIG: LiveExitConfig,
    Command.INSERT_PLAY_SCRIPT: PlayTextInfo,
    Command.INSERT_PLAY_AUDIO: PlayAudioInfo,
    Command.CLEAN_UP_INSERT_COMMAND: CleanUpInsertCommand,
}


def params_model_for(command: Command) -> type[BaseModel] | None:
    """The typed params model of a command, or None when its params are untyped/unpublished."""
    return _PARAMS_FOR.get(command)


class ControlSmartLiveReq(_Request):
    """Command body (§5). ``params`` is checked against the command's typed model when known;
    REWRITE_* wrapping keys and SHOW_LAYER params are unpublished (unconfirmed), so free-form.
    """

    command: Command
    params: dict[str, Any] | SerializeAsAny[BaseModel] | None = None
    review_config: ReviewConfig | None = None

    @model_validator(mode="after")
    def _typed_params(self) -> ControlSmartLiveReq:
        model = _PARAMS_FOR.get(self.command)
        if model is None or self.params is None:
            return self
        if isinstance(self.params, model):
            return self
        raw = self.params
        if isinstance(raw, BaseModel):
            raw = raw.model_dump(mode="json", exclude_none=True, context={_WIRE: True})
        object.__setattr__(self, "params", model.model_validate(raw))
        return self


class LiveRoomInteractionConfig(_Request):
    play_type: PlayType | None = None
    ignore_current_sentence: bool | None = None


class CreateSmartLiveRoomReq(_Request):
    """Create/update-room body (§8.1). Script, rule and overlay trees are free-form objects here
    (their schemas are deep and we only pass them through); top-level fields are checked.
    """

    room_name: str = Field(min_length=1, max_length=256)
    room_description: str | None = Field(default=None, max_length=1024)
    room_type: Literal["NORMAL", "TEMP", "TEMPLATE"] | None = None
    scene_scripts: list[dict[str, Any]] | None = None
    interaction_config: LiveRoomInteractionConfig | None = None
    interaction_rules: list[dict[str, Any]] | None = None
    play_policy: PlayPolicy | None = None
    video_config: VideoConfig | None = None
    output_urls: list[str] | None = None
    stream_keys: list[Secret] | None = None
    backup_model_asset_ids: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=5
    )
    live_event_callback_config: dict[str, Any] | None = None
    rtc_callback_config: RTCLiveEventCallBackConfig | None = None
    review_config: ReviewConfig | None = None
    shared_config: dict[str, Any] | None = None
    view_mode: Literal["LANDSCAPE", "VERTICAL"] | None = None
    co_streamer_config: CoStreamerConfig | None = None
    priv_data: str | None = Field(default=None, max_length=8192)
    relation_live_platform_info: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _single_target(self) -> CreateSmartLiveRoomReq:
        _one_target(self.output_urls, self.stream_keys)
        return self
