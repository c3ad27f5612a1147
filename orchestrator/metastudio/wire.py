"""The wire conventions shared by every MetaStudio model: secrets, enums, validation helpers.

Secrets are :class:`pydantic.SecretStr`: they print as ``**********`` in reprs, logs and
validation errors, and are revealed only by :func:`to_wire`, which produces the JSON body
actually sent. See :mod:`orchestrator.metastudio.models` for the two policies (strict
requests, lenient responses).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    ValidationError,
)

from orchestrator.errors import InvalidRequest

__all__ = [
    "CallbackEventType",
    "Command",
    "JobState",
    "PlayRole",
    "PlayType",
    "RtmpState",
    "Secret",
    "build",
    "describe_errors",
    "to_wire",
]

_WIRE = "wire"


def _serialise_secret(value: SecretStr, info: SerializationInfo) -> str:
    """Reveal the secret only when dumping the wire body (context ``{"wire": True}``)."""
    context = info.context
    if isinstance(context, dict) and context.get(_WIRE):
        return value.get_secret_value()
    return str(value)


Secret = Annotated[SecretStr, PlainSerializer(_serialise_secret, return_type=str)]


# ------------------------------------------------------------------------- enums


class JobState(StrEnum):
    """``SmartLiveJob.state`` (§3.1). There is no CANCELED in the job enum."""

    WAITING = "WAITING"
    PROCESSING = "PROCESSING"
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    BLOCKED = "BLOCKED"


class RtmpState(StrEnum):
    """RTMP link state in ``RTMP_STREAM_STATE_CHANGE`` callbacks (§6.2)."""

    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    RECONNECTING = "RECONNECTING"
    END = "END"


class Command(StrEnum):
    """The ten runtime commands of the latest SDK docstring (§5.1)."""

    INSERT_PLAY_SCRIPT = "INSERT_PLAY_SCRIPT"
    INSERT_PLAY_AUDIO = "INSERT_PLAY_AUDIO"
    REWRITE_PLAY_SCRIPT = "REWRITE_PLAY_SCRIPT"
    REWRITE_INTERACTION_RULES = "REWRITE_INTERACTION_RULES"
    GET_CURRENT_PLAYING_SCRIPTS = "GET_CURRENT_PLAYING_SCRIPTS"
    SHOW_LAYER = "SHOW_LAYER"
    REFRESH_OUTPUT_URL = "REFRESH_OUTPUT_URL"
    GET_LIVE_JOB_CONFIG_INFO = "GET_LIVE_JOB_CONFIG_INFO"
    CLEAN_UP_INSERT_COMMAND = "CLEAN_UP_INSERT_COMMAND"
    RESET_EXIT_CONFIG = "RESET_EXIT_CONFIG"


PlayType = Literal["APPEND", "INSERT", "PLAY_NOW"]
PlayRole = Literal["STREAMER", "CO_STREAMER"]
CallbackEventType = Literal[
    "SHOOT_SCRIPT_SWITCH", "RTMP_STREAM_STATE_CHANGE", "REPLY_COMMAND_FINISH"
]


# ------------------------------------------------------------------------- helpers

M = TypeVar("M", bound=BaseModel)


def describe_errors(exc: ValidationError) -> str:
    """A clear, value-free summary of a validation error (inputs may hold secrets)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def build(model: type[M], data: Any) -> M:
    """Validate ``data`` (a mapping or a model instance) into ``model`` or raise InvalidRequest."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", exclude_none=True, context={_WIRE: True})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(
            f"invalid {model.__name__}: {describe_errors(exc)}", operation=None
        ) from exc


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON body to send: unset fields dropped, secrets revealed (only here)."""
    return model.model_dump(mode="json", exclude_none=True, context={_WIRE: True})
