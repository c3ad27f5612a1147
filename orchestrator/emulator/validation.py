"""Request validation exactly against the documented constraints (api doc §3 to §8).

The emulator checks bodies itself instead of trusting a client-side model so that it answers a
malformed call the way the service does: ``400 MSS.00000003`` with an ``error_msg`` naming the
offending field. Every function is pure and raises :class:`ApiError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.metastudio.constraints import ConstraintViolation, check_start_body

__all__ = [
    "COMMANDS",
    "JOB_STATES",
    "RTMP_STATES",
    "ApiError",
    "bad_request",
    "parse_rfc3339",
    "validate_batch_confirm",
    "validate_command",
    "validate_confirm_room",
    "validate_exit_config",
    "validate_list_query",
    "validate_room_body",
    "validate_start_body",
]

INVALID = "MSS.00000003"
JOB_STATES = ("WAITING", "PROCESSING", "SUCCEED", "FAILED", "BLOCKED")
RTMP_STATES = ("CONNECTING", "CONNECTED", "DISCONNECTED", "RECONNECTING", "END")
COMMANDS = (
    "INSERT_PLAY_SCRIPT",
    "INSERT_PLAY_AUDIO",
    "REWRITE_PLAY_SCRIPT",
    "REWRITE_INTERACTION_RULES",
    "GET_CURRENT_PLAYING_SCRIPTS",
    "SHOW_LAYER",
    "REFRESH_OUTPUT_URL",
    "GET_LIVE_JOB_CONFIG_INFO",
    "CLEAN_UP_INSERT_COMMAND",
    "RESET_EXIT_CONFIG",
)
_AUTH_TYPES = ("NONE", "MSS_A", "MSS_A_HEAD", "MEITUAN_DEFAULT")
_CALLBACK_EVENTS = ("SHOOT_SCRIPT_SWITCH", "RTMP_STREAM_STATE_CHANGE", "REPLY_COMMAND_FINISH")
_PLAY_TYPES = ("APPEND", "INSERT", "PLAY_NOW")
_ROLES = ("STREAMER", "CO_STREAMER")
_STOP_MODES = ("FORCE_EXIT", "SEGMENT_END", "SCENE_END", "SCRIPT_END")
_SORT_KEYS = ("create_time", "update_time", "asset_order")
_MAX_INT = 2147483647


class ApiError(Exception):
    """An answer the emulated service gives instead of success: status + documented error body.

    This is the *service's* reply (rendered by the app as ``{"error_code","error_msg"}``), not
    an orchestrator failure, hence not part of :mod:`orchestrator.errors`.
    """

    def __init__(self, status: int, error_code: str, error_msg: str) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        super().__init__(f"{status} {error_code}: {error_msg}")


def bad_request(msg: str) -> ApiError:
    return ApiError(400, INVALID, f"Invalid parameter: {msg}")


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be an object")
    return value


def _opt_obj(body: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = body.get(key)
    return None if value is None else _obj(value, f"{where}.{key}" if where else key)


def _str(value: Any, where: str, *, lo: int = 0, hi: int = 2048) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{where} must be a string")
    if not lo <= len(value) <= hi:
        raise bad_request(f"{where} length must be within [{lo}, {hi}]")
    return value


def _int(value: Any, where: str, *, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{where} must be an integer")
    if not lo <= value <= hi:
        raise bad_request(f"{where} must be within [{lo}, {hi}]")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{where} must be a boolean")
    return value


def _enum(value: Any, where: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise bad_request(f"{where} must be one of {', '.join(allowed)}")
    return str(value)


def _str_list(value: Any, where: str, *, max_items: int, hi: int = 2048) -> list[str]:
    if not isinstance(value, list):
        raise bad_request(f"{where} must be an array")
    if len(value) > max_items:
        raise bad_request(f"{where} supports at most {max_items} item(s)")
    return [_str(item, f"{where}[{i}]", hi=hi) for i, item in enumerate(value)]


def validate_outputs(body: Mapping[str, Any], where: str = "") -> tuple[list[str], list[str]]:
    """``output_urls`` (one RTMP URL at present) and positionally aligned ``stream_keys``."""
    prefix = f"{where}." if where else ""
    urls = _str_list(body.get("output_urls") or [], f"{prefix}output_urls", max_items=1)
    keys = _str_list(body.get("stream_keys") or [], f"{prefix}stream_keys", max_items=1)
    for i, url in enumerate(urls):
        if not url.startswith(("rtmp://", "rtmps://")):
            raise bad_request(f"{prefix}output_urls[{i}] must be an rtmp:// or rtmps:// URL")
    if keys and len(keys) != len(urls):
        raise bad_request(f"{prefix}stream_keys must align with output_urls")
    return urls, keys


def validate_exit_config(value: Any, where: str) -> dict[str, Any]:
    cfg = _obj(value, where)
    if "max_live_duration" in cfg and cfg["max_live_duration"] is not None:
        _int(cfg["max_live_duration"], f"{where}.max_live_duration", lo=0, hi=168)
    if (
        "max_exception_waiting_duration" in cfg
        and cfg["max_exception_waiting_duration"] is not None
    ):
        _int(
            cfg["max_exception_waiting_duration"],
            f"{where}.max_exception_waiting_duration",
            lo=0,
            hi=60,
        )
    if cfg.get("auto_stop_mode") is not None:
        _enum(cfg["auto_stop_mode"], f"{where}.auto_stop_mode", _STOP_MODES)
    return cfg


def validate_callback_config(value: Any, where: str) -> dict[str, Any]:
    cfg = _obj(value, where)
    if cfg.get("live_event_type_callback_url") is not None:
        url = _str(cfg["live_event_type_callback_url"], f"{where}.live_event_type_callback_url")
        if url and not url.startswith(("http://", "https://")):
            raise bad_request(f"{where}.live_event_type_callback_url must be an HTTP(S) URL")
    if cfg.get("auth_type") is not None:
        _enum(cfg["auth_type"], f"{where}.auth_type", _AUTH_TYPES)
    if cfg.get("key") is not None:
        _str(cfg["key"], f"{where}.key", hi=32)
    if cfg.get("auth_type") in ("MSS_A", "MSS_A_HEAD") and not cfg.get("key"):
        raise bad_request(f"{where}.key is required for auth_type {cfg['auth_type']}")
    if cfg.get("callback_event_type") is not None:
        events = cfg["callback_event_type"]
        if not isinstance(events, list):
            raise bad_request(f"{where}.callback_event_type must be an array")
        for i, event in enumerate(events):
            _enum(event, f"{where}.callback_event_type[{i}]", _CALLBACK_EVENTS)
    return cfg


def _validate_video(value: Any) -> None:
    cfg = _obj(value, "video_config")
    for field in ("bitrate", "width", "height"):
        if field not in cfg:
            raise bad_request(f"video_config.{field} is required")
    _int(cfg["bitrate"], "video_config.bitrate", lo=1000, hi=8000)
    size = (
        _int(cfg["width"], "video_config.width", lo=1, hi=_MAX_INT),
        _int(cfg["height"], "video_config.height", lo=1, hi=_MAX_INT),
    )
    if size not in ((1080, 1920), (1920, 1080)):
        raise bad_request("video_config width x height must be 1080x1920 or 1920x1080")
    if cfg.get("clip_mode") is not None:
        _enum(cfg["clip_mode"], "video_config.clip_mode", ("RESIZE", "CROP"))
    if cfg.get("codec") is not None:
        _enum(cfg["codec"], "video_config.codec", ("H264", "VP8"))
    if cfg.get("is_subtitle_enable"):
        raise bad_request(
            "video_config.is_subtitle_enable: live streaming does not support subtitles"
        )


def _validate_play_policy(value: Any) -> None:
    cfg = _obj(value, "play_policy")
    if cfg.get("repeat_count") is not None:
        _int(cfg["repeat_count"], "play_policy.repeat_count", lo=-1, hi=_MAX_INT)
    for flag in ("auto_play_script", "need_independent_capture_client", "is_rewrite_delay"):
        if cfg.get(flag) is not None:
            _bool(cfg[flag], f"play_policy.{flag}")
    if cfg.get("play_mode") is not None:
        _enum(cfg["play_mode"], "play_policy.play_mode", ("TEXT", "AUDIO", "NO_PRESET"))
    if cfg.get("random_play_mode") is not None:
        _enum(
            cfg["random_play_mode"],
            "play_policy.random_play_mode",
            ("NONE", "SCENE", "SCRIPT_ITEM", "SCENE_AND_SCRIPT_ITEM"),
        )
    if cfg.get("live_exit_config") is not None:
        validate_exit_config(cfg["live_exit_config"], "play_policy.live_exit_config")


def validate_start_body(body: Any) -> dict[str, Any]:
    """``StartSmartLiveReq`` (§4): every field optional, but each one present must be valid.

    The document's own table (:mod:`orchestrator.metastudio.constraints`) is checked first; the
    checks after it cover what the page leaves to other pages and the SDK model
    (``live_exit_config``, ``job_run_config``, required video fields).
    """
    req = _obj(body, "request body")
    try:
        check_start_body(req)
    except ConstraintViolation as exc:
        raise bad_request(str(exc)) from None
    if req.get("video_config") is not None:
        _validate_video(req["video_config"])
    if req.get("play_policy") is not None:
        _validate_play_policy(req["play_policy"])
    validate_outputs(req)
    if req.get("interaction_callback_url") is not None:
        _str(req["interaction_callback_url"], "interaction_callback_url")
    if req.get("live_event_callback_config") is not None:
        validate_callback_config(req["live_event_callback_config"], "live_event_callback_config")
    if req.get("view_mode") is not None:
        _enum(req["view_mode"], "view_mode", ("LANDSCAPE", "VERTICAL"))
    run = _opt_obj(req, "job_run_config", "")
    if run is not None:
        if run.get("single_job_in_room") is not None:
            _bool(run["single_job_in_room"], "job_run_config.single_job_in_room")
        if run.get("allow_resource_type") is not None:
            _enum(
                run["allow_resource_type"],
                "job_run_config.allow_resource_type",
                ("PERIOD", "ONDEMAND", "UNLIMITED", "ONE_TIME"),
            )
    return req


def validate_room_body(body: Any) -> dict[str, Any]:
    """``CreateSmartLiveRoomReq`` (§8.1), the fields the emulator acts on."""
    req = _obj(body, "request body")
    if "room_name" not in req:
        raise bad_request("room_name is required")
    _str(req["room_name"], "room_name", lo=1, hi=256)
    if req.get("room_description") is not None:
        _str(req["room_description"], "room_description", hi=1024)
    if req.get("room_type") is not None:
        _enum(req["room_type"], "room_type", ("NORMAL", "TEMP", "TEMPLATE"))
    if req.get("priv_data") is not None:
        _str(req["priv_data"], "priv_data", hi=8192)
    if req.get("video_config") is not None:
        _validate_video(req["video_config"])
    if req.get("play_policy") is not None:
        _validate_play_policy(req["play_policy"])
    validate_outputs(req)
    if req.get("live_event_callback_config") is not None:
        validate_callback_config(req["live_event_callback_config"], "live_event_callback_config")
    scenes = req.get("scene_scripts")
    if scenes is not None:
        if not isinstance(scenes, list):
            raise bad_request("scene_scripts must be an array")
        for i, scene in enumerate(scenes):
            sc = _obj(scene, f"scene_scripts[{i}]")
            _str(sc.get("script_name"), f"scene_scripts[{i}].script_name", lo=1, hi=256)
            if not isinstance(sc.get("shoot_scripts"), list):
                raise bad_request(f"scene_scripts[{i}].shoot_scripts is required")
    return req


def _validate_play_item(params: dict[str, Any], *, audio: bool) -> None:
    if audio:
        _str(params.get("audio_url"), "params.audio_url", lo=1)
    else:
        text_cfg = _obj(params.get("text_config"), "params.text_config")
        _str(text_cfg.get("text"), "params.text_config.text", lo=1, hi=131072)
    if params.get("play_type") is not None:
        _enum(params["play_type"], "params.play_type", _PLAY_TYPES)
    if params.get("play_role") is not None:
        _enum(params["play_role"], "params.play_role", _ROLES)
    if params.get("rule_index") is not None:
        _str(params["rule_index"], "params.rule_index", hi=64)


def validate_command(body: Any) -> tuple[str, dict[str, Any]]:
    """``ControlSmartLiveReq`` (§5): one of the ten commands and its ``params`` shape."""
    req = _obj(body, "request body")
    if "command" not in req:
        raise bad_request("command is required")
    command = _enum(req["command"], "command", COMMANDS)
    raw_params = req.get("params")
    params = {} if raw_params is None else _obj(raw_params, "params")
    if command in ("INSERT_PLAY_SCRIPT", "INSERT_PLAY_AUDIO"):
        _validate_play_item(params, audio=command == "INSERT_PLAY_AUDIO")
    elif command == "REFRESH_OUTPUT_URL":
        urls, keys = validate_outputs(params, "params")
        if len(urls) != 1:
            raise bad_request("params.output_urls must hold exactly one RTMP URL")
        del keys
    elif command == "RESET_EXIT_CONFIG":
        validate_exit_config(params, "params")
    elif command == "REWRITE_PLAY_SCRIPT":
        if not isinstance(params.get("scene_scripts"), list):
            raise bad_request("params.scene_scripts must be an array")
    elif command == "REWRITE_INTERACTION_RULES":
        if not isinstance(params.get("interaction_rules"), list):
            raise bad_request("params.interaction_rules must be an array")
    elif command == "CLEAN_UP_INSERT_COMMAND" and params.get("command_ids") is not None:
        _str_list(params["command_ids"], "params.command_ids", max_items=1000, hi=64)
    return command, params


def validate_confirm_room(body: Any) -> dict[str, Any]:
    """``ConfirmSmarLiveRoomReq``: ``action`` confirm|reject, optional ``script_version``."""
    req = _obj(body, "request body")
    _enum(req.get("action"), "action", ("confirm", "reject"))
    if req.get("script_version") is not None:
        _str(req["script_version"], "script_version", hi=256)
    return req


def validate_batch_confirm(body: Any) -> dict[str, Any]:
    """``BatchConfirmLiveCommandsReq``: which REWRITE_* command, confirm|reject, optional ids."""
    req = _obj(body, "request body")
    _enum(req.get("command"), "command", ("REWRITE_PLAY_SCRIPT", "REWRITE_INTERACTION_RULES"))
    _enum(req.get("action"), "action", ("confirm", "reject"))
    if req.get("command_ids") is not None:
        _str_list(req["command_ids"], "command_ids", max_items=1000, hi=64)
    return req


def parse_rfc3339(value: str, where: str) -> float:
    """RFC 3339 (``Z`` or offset) to Unix seconds; naive values are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"{where} must be an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _query_int(query: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request(f"{key} must be an integer") from exc
    if not lo <= value <= hi:
        raise bad_request(f"{key} must be within [{lo}, {hi}]")
    return value


def validate_list_query(query: Mapping[str, str]) -> dict[str, Any]:
    """Paging, state filter, sorting and creation window of the job list ops (§3.3)."""
    out: dict[str, Any] = {
        "offset": _query_int(query, "offset", 0, 0, _MAX_INT),
        "limit": _query_int(query, "limit", 10, 1, 100),
    }
    states: list[str] = []
    for raw in (query.get("state") or "").split(","):
        state = raw.strip()
        if state:
            states.append(_enum(state, "state", JOB_STATES))
    out["states"] = states
    out["sort_key"] = _enum(query.get("sort_key") or "create_time", "sort_key", _SORT_KEYS)
    out["sort_dir"] = _enum(query.get("sort_dir") or "asc", "sort_dir", ("asc", "desc"))
    for key in ("create_since", "create_until"):
        bound = query.get(key)
        out[key] = parse_rfc3339(bound, key) if bound else None
    out["room_name"] = query.get("room_name") or None
    return out
