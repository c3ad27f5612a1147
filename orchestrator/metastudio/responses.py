"""Response and callback models (lenient: the service adds fields and values without notice)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.errors import InvalidRequest
from orchestrator.metastudio.wire import JobState, RtmpState, Secret, describe_errors

__all__ = [
    "CallbackEvent",
    "CommandResult",
    "CreateSmartLiveRoomResp",
    "ErrorInfo",
    "LiveEventCallback",
    "LiveEventCallbackInfo",
    "LiveWarningInfo",
    "RTCRoomInfoList",
    "RTCUserInfo",
    "ReplyCommandFinish",
    "RtmpStreamStateChange",
    "ShootScriptSwitch",
    "SmartLiveJob",
    "SmartLiveJobBrief",
    "SmartLiveJobBriefList",
    "SmartLiveJobList",
    "SmartLiveRoom",
    "SmartLiveRoomBaseInfo",
    "SmartLiveRoomList",
    "StartSmartLiveResp",
    "parse_callback",
]

# ------------------------------------------------------------------------- responses


class _Response(BaseModel):
    """Lenient base: unknown fields kept. ``request_id`` is the X-Request-Id header (not body)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    request_id: str | None = Field(default=None, exclude=True)


class ErrorInfo(_Response):
    error_code: str | None = None
    error_msg: str | None = None


class RTCUserInfo(_Response):
    """``signature`` is an RTC auth token: hidden from reprs."""

    user_type: str | None = None
    user_id: str | None = None
    signature: Secret | None = None
    ctime: int | None = None


class RTCRoomInfoList(_Response):
    app_id: str | None = None
    room_id: str | None = None
    users: list[RTCUserInfo] | None = None


class LiveEventCallbackInfo(_Response):
    """Callback config as echoed by the service; ``key`` stays secret."""

    live_event_type_callback_url: str | None = None
    auth_type: str | None = None
    key: Secret | None = None
    callback_event_type: list[str] | None = None


class LiveWarningInfo(_Response):
    warning_type: str | None = None


class SmartLiveJob(_Response):
    """A job (§3.2). ``state`` is a :class:`JobState` when known, else the raw string."""

    job_id: str
    room_id: str | None = None
    room_name: str | None = None
    state: JobState | str | None = Field(default=None, union_mode="left_to_right")
    duration: float | None = None
    stream_duration: float | None = None
    start_time: str | None = None
    end_time: str | None = None
    create_time: str | None = None
    lastupdate_time: str | None = None
    error_info: ErrorInfo | None = None
    rtc_room_info: RTCRoomInfoList | None = None
    live_event_report_url: str | None = None
    live_event_callback_config: LiveEventCallbackInfo | None = None
    rtc_callback_config: dict[str, Any] | None = None
    block_reason: str | None = None
    cover_url: str | None = None
    co_streamer_config: dict[str, Any] | None = None
    live_job_log: dict[str, Any] | None = None
    relation_live_platform_info: dict[str, Any] | None = None
    used_resource_type: str | None = None
    is_ai_mark_on: bool | None = None


class SmartLiveJobList(_Response):
    count: int = 0
    smart_live_jobs: list[SmartLiveJob] = Field(default_factory=list)


class SmartLiveJobBrief(BaseModel):
    """The few fields the poller reads of each listed job; the rest of the answer is skipped,
    not kept (parsing whole pages of :class:`SmartLiveJob` was a quarter of a quiet 10,000-room
    daemon's CPU). ``rtmp_state`` is not in the real API; the emulator may add it."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    room_id: str | None = None
    state: str | None = None
    rtmp_state: str | None = None
    duration: float | None = None
    stream_duration: float | None = None


class SmartLiveJobBriefList(BaseModel):
    model_config = ConfigDict(extra="ignore")

    count: int = 0
    smart_live_jobs: list[SmartLiveJobBrief] = Field(default_factory=list)


class StartSmartLiveResp(_Response):
    job_id: str
    rtc_room_info: RTCRoomInfoList | None = None
    live_event_report_url: str | None = None
    live_event_callback_config: LiveEventCallbackInfo | None = None
    live_warning_info: list[LiveWarningInfo] | None = None
    limit_duration: int | None = None


class CommandResult(_Response):
    """Command answer; the value set of ``result`` is not documented (unconfirmed)."""

    command_id: str | None = None
    command: str | None = None
    result: Any = None


class SmartLiveRoomBaseInfo(_Response):
    room_id: str
    room_name: str | None = None
    room_type: str | None = None
    room_state: str | None = None
    view_mode: str | None = None
    last_job_status: str | None = None
    last_job_start_time: str | None = None
    last_job_end_time: str | None = None
    create_time: str | None = None
    update_time: str | None = None
    confirm_state: str | None = None


class SmartLiveRoomList(_Response):
    count: int = 0
    smart_live_rooms: list[SmartLiveRoomBaseInfo] = Field(default_factory=list)


class SmartLiveRoom(_Response):
    """Show-room answer (§8.3): the create fields plus server fields; stream keys stay secret."""

    room_id: str | None = None
    room_name: str | None = None
    room_type: str | None = None
    room_state: str | None = None
    confirm_state: str | None = None
    script_version: str | None = None
    output_urls: list[str] | None = None
    stream_keys: list[Secret] | None = None
    live_event_callback_config: LiveEventCallbackInfo | None = None
    video_config: dict[str, Any] | None = None
    play_policy: dict[str, Any] | None = None
    create_time: str | None = None
    update_time: str | None = None
    error_info: ErrorInfo | None = None


class CreateSmartLiveRoomResp(_Response):
    room_id: str


# ------------------------------------------------------------------------- callbacks


class _Event(_Response):
    room_id: str | None = None
    job_id: str | None = None


class RtmpStreamStateChange(_Event):
    output_url: str | None = None
    stream_key: Secret | None = None
    state: RtmpState | str | None = Field(default=None, union_mode="left_to_right")


class ShootScriptSwitch(_Event):
    """Paragraph switch; product/live-id key names inside ``message`` are unconfirmed."""

    scene_script_name: str | None = None
    shoot_script_sequence_no: str | None = None
    shoot_script_title: str | None = None

    @field_validator("shoot_script_sequence_no", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) else value


class ReplyCommandFinish(_Event):
    reply_id: str | None = None


CallbackEvent = RtmpStreamStateChange | ShootScriptSwitch | ReplyCommandFinish

_EVENT_MODELS: dict[str, type[_Event]] = {
    "RTMP_STREAM_STATE_CHANGE": RtmpStreamStateChange,
    "SHOOT_SCRIPT_SWITCH": ShootScriptSwitch,
    "REPLY_COMMAND_FINISH": ReplyCommandFinish,
}


class LiveEventCallback(BaseModel):
    """Callback body (§6.2): ``message`` is a JSON string, decoded into ``event``.

    Known event types become typed models; unknown types keep the decoded object as a dict.
    """

    model_config = ConfigDict(extra="allow", hide_input_in_errors=True)

    event_type: str
    message: str = Field(repr=False)
    event: CallbackEvent | dict[str, Any] | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _decode_message(self) -> LiveEventCallback:
        try:
            decoded = json.loads(self.message)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise ValueError("message is not a JSON-encoded string") from None
        if not isinstance(decoded, dict):
            raise ValueError("message must encode a JSON object")
        model = _EVENT_MODELS.get(self.event_type)
        object.__setattr__(
            self, "event", model.model_validate(decoded) if model is not None else decoded
        )
        return self


def parse_callback(body: bytes | str) -> LiveEventCallback:
    """Parse a callback body; raises InvalidRequest with a value-free message when malformed."""
    try:
        return LiveEventCallback.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid callback: {describe_errors(exc)}") from exc
