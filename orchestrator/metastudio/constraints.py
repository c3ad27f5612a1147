"""The StartSmartLive document's constraints as data, shared by the emulator and our client.

Transcribed from the official page (``/work/shared/seeds/000_04eacd17017e2ff0.txt``; ``line`` is
the line of that file stating the constraint). Where the page and our API reference disagree,
the page wins. The emulator answers a violation with ``400 MSS.00000003``; the client's
``StartSmartLiveReq`` refuses it before sending. Both run :func:`check_start_body`, so they agree
by construction, and ``tests/emulator/test_emulator_constraints.py`` checks every row both ways.

Pure standard library on purpose: importing this must not pull in the emulator's HTTP stack.
It lives with the client (the emulator imports it from here) so that our cloud adapter does not
import the emulator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "APP_USER_ID_PATTERN",
    "START_RULES",
    "START_SMART_LIVE",
    "ConstraintViolation",
    "Row",
    "Rule",
    "check_app_user_id",
    "check_start_body",
]

Kind = Literal["object", "string", "integer", "boolean", "enum", "enum_array", "string_array"]


@dataclass(frozen=True, slots=True)
class Row:
    """One field of the request body and what the document allows for it.

    ``lo``/``hi``: value range for integers, character length for strings, item count for
    string arrays (``None`` = not limited by the document).
    """

    path: str
    kind: Kind
    line: int
    lo: int | None = None
    hi: int | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A constraint spanning fields (or a value rule the table's kinds cannot say)."""

    name: str
    line: int
    text: str


class ConstraintViolation(ValueError):
    """A body breaks a row or rule; ``path`` names the field, the message never echoes values."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path} {message}")


_CALLBACK_EVENTS = ("SHOOT_SCRIPT_SWITCH", "RTMP_STREAM_STATE_CHANGE", "REPLY_COMMAND_FINISH")
# a positive FPS as a decimal string; the page fixes avatar video at 25 FPS (line 725) but does
# not say other values are refused, so any plausible rate passes and "abc" / 25 (a number) fail
_FPS = r"[1-9][0-9]{0,2}(\.[0-9]{1,3})?"

START_SMART_LIVE: tuple[Row, ...] = (
    # table 3: StartSmartLiveReq
    Row("video_config", "object", 469),
    Row("play_policy", "object", 477),
    Row("output_urls", "string_array", 497, lo=0, hi=1),
    Row("stream_keys", "string_array", 521, lo=0, hi=1),
    Row("interaction_callback_url", "string", 543, lo=0, hi=2048),
    Row("live_event_callback_config", "object", 551),
    Row("rtc_callback_config", "object", 557),
    Row("view_mode", "enum", 575, enum=("LANDSCAPE", "VERTICAL")),
    Row("co_streamer_config", "object", 585),
    # table 4: VideoConfig
    Row("video_config.clip_mode", "enum", 613, enum=("RESIZE", "CROP")),
    Row("video_config.codec", "enum", 635, enum=("H264", "VP8")),
    Row("video_config.bitrate", "integer", 655, lo=1000, hi=8000),
    Row("video_config.width", "integer", 687, lo=0, hi=3840),
    Row("video_config.height", "integer", 713, lo=0, hi=3840),
    Row("video_config.frame_rate", "string", 721, lo=1, hi=7, pattern=_FPS),
    Row("video_config.is_subtitle_enable", "boolean", 733),
    Row("video_config.subtitle_config", "object", 755),
    Row("video_config.dx", "integer", 781, lo=-1920, hi=3840),
    Row("video_config.dy", "integer", 805, lo=-1920, hi=3840),
    Row("video_config.is_enable_super_resolution", "boolean", 809),
    Row("video_config.is_end_at_first_frame", "boolean", 831),
    Row("video_config.output_external_url", "string", 853),
    # table 5: SubtitleConfig
    Row("video_config.subtitle_config.dx", "integer", 888, lo=0, hi=1920),
    Row("video_config.subtitle_config.dy", "integer", 908, lo=0, hi=1920),
    Row("video_config.subtitle_config.font_name", "string", 924, lo=0, hi=64),
    Row("video_config.subtitle_config.font_size", "integer", 944, lo=0, hi=120),
    Row("video_config.subtitle_config.h", "integer", 964, lo=0, hi=1920),
    Row("video_config.subtitle_config.w", "integer", 982, lo=0, hi=1920),
    # table 6: PlayPolicy
    Row("play_policy.repeat_count", "integer", 1014, lo=-1, hi=100),
    Row("play_policy.auto_play_script", "boolean", 1022),
    Row("play_policy.play_mode", "enum", 1056, enum=("TEXT", "AUDIO", "NO_PRESET")),
    Row(
        "play_policy.random_play_mode",
        "enum",
        1080,
        enum=("NONE", "SCENE", "SCRIPT_ITEM", "SCENE_AND_SCRIPT_ITEM"),
    ),
    Row("play_policy.need_independent_capture_client", "boolean", 1094),
    # table 7: LiveEventCallBackConfig
    # "为https地址" (line 1130); plain http is accepted too, for local receivers (docs/emulator.md)
    Row(
        "live_event_callback_config.live_event_type_callback_url",
        "string",
        1138,
        lo=0,
        hi=2048,
        pattern=r"(https?://\S+)?",
    ),
    Row(
        "live_event_callback_config.auth_type",
        "enum",
        1158,
        enum=("NONE", "MSS_A", "MSS_A_HEAD", "MEITUAN_DEFAULT"),
    ),
    Row("live_event_callback_config.key", "string", 1190, lo=0, hi=32),
    Row(
        "live_event_callback_config.callback_event_type",
        "enum_array",
        1212,
        enum=_CALLBACK_EVENTS,
    ),
    # table 8: RTCLiveEventCallBackConfig
    Row(
        "rtc_callback_config.rtc_callback_event_type",
        "enum_array",
        1263,
        enum=("LIVE_PROGRESS", "REPLY_COMMAND_FINISH"),
    ),
    # table 9: CoStreamerConfig
    Row("co_streamer_config.voice_config", "object", 1305),
    Row("co_streamer_config.streamer_action", "enum", 1323, enum=("SILENCE", "VOLUME_DOWN")),
    # table 10: VoiceConfig
    Row("co_streamer_config.voice_config.voice_asset_id", "string", 1357, lo=1, hi=256),
    Row("co_streamer_config.voice_config.speed", "integer", 1379, lo=50, hi=200),
    Row("co_streamer_config.voice_config.pitch", "integer", 1399, lo=50, hi=200),
    Row("co_streamer_config.voice_config.volume", "integer", 1419, lo=90, hi=240),
)

START_RULES: tuple[Rule, ...] = (
    Rule("live_resolution", 679, "live video is 1080x1920 or 1920x1080 (width x height)"),
    Rule("live_no_subtitles", 741, "live streaming does not support subtitles"),
    Rule("keys_align", 509, "stream_keys correspond to output_urls"),
    Rule("rtmp_output", 497, "output_urls are RTMP push addresses"),
)

# table 2: "第三方用户ID。不允许输入中文。" (no Chinese). Other non-ASCII text is allowed.
APP_USER_ID_LINE = 455
# CJK punctuation, ideographs (ext. A, unified, compatibility) and full-width forms
APP_USER_ID_PATTERN = re.compile(
    r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)

_MISSING = object()


def _lookup(body: Mapping[str, Any], path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return _MISSING
        node = node.get(part, _MISSING)
        if node is _MISSING or node is None:
            return _MISSING
    return node


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(row: Row, n: int, what: str) -> None:
    if (row.lo is not None and n < row.lo) or (row.hi is not None and n > row.hi):
        lo = "-inf" if row.lo is None else row.lo
        hi = "inf" if row.hi is None else row.hi
        raise ConstraintViolation(row.path, f"{what} must be within [{lo}, {hi}]")


def check_row(row: Row, value: Any) -> None:
    """Raise :class:`ConstraintViolation` when ``value`` (present, not null) breaks ``row``."""
    kind = row.kind
    if kind == "object":
        if not isinstance(value, Mapping):
            raise ConstraintViolation(row.path, "must be an object")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise ConstraintViolation(row.path, "must be a boolean")
    elif kind == "integer":
        if not _is_int(value):
            raise ConstraintViolation(row.path, "must be an integer")
        _check_range(row, value, "value")
    elif kind == "string":
        if not isinstance(value, str):
            raise ConstraintViolation(row.path, "must be a string")
        _check_range(row, len(value), "length")
        if row.pattern is not None and not re.fullmatch(row.pattern, value):
            raise ConstraintViolation(row.path, "has an invalid format")
    elif kind == "enum":
        if not isinstance(value, str) or value not in row.enum:
            raise ConstraintViolation(row.path, f"must be one of {', '.join(row.enum)}")
    elif kind in ("enum_array", "string_array"):
        if not isinstance(value, list):
            raise ConstraintViolation(row.path, "must be an array")
        _check_range(row, len(value), "item count")
        for item in value:
            if kind == "enum_array" and item not in row.enum:
                raise ConstraintViolation(row.path, f"items must be among {', '.join(row.enum)}")
            if not isinstance(item, str):
                raise ConstraintViolation(row.path, "items must be strings")


def check_start_body(body: Mapping[str, Any], rows: Sequence[Row] = START_SMART_LIVE) -> None:
    """Check every row and rule of the StartSmartLive document against a JSON body."""
    for row in rows:
        value = _lookup(body, row.path)
        if value is not _MISSING:
            check_row(row, value)
    video = body.get("video_config")
    if isinstance(video, Mapping):
        size = (video.get("width"), video.get("height"))
        if None not in size and size not in ((1080, 1920), (1920, 1080)):
            raise ConstraintViolation(
                "video_config", "width x height must be 1080x1920 or 1920x1080 for live"
            )
        if video.get("is_subtitle_enable") is True:
            raise ConstraintViolation(
                "video_config.is_subtitle_enable", "must be false: live does not support subtitles"
            )
    urls = body.get("output_urls") or []
    keys = body.get("stream_keys") or []
    for url in urls:
        if not url.startswith(("rtmp://", "rtmps://")):
            raise ConstraintViolation("output_urls", "items must be rtmp:// or rtmps:// URLs")
    if keys and len(keys) != len(urls):
        raise ConstraintViolation("stream_keys", "must align with output_urls")


def check_app_user_id(value: str) -> None:
    """``X-App-UserId`` must not contain Chinese (line 455)."""
    if APP_USER_ID_PATTERN.search(value):
        raise ConstraintViolation("X-App-UserId", "must not contain Chinese characters")
