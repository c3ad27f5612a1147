"""Loading: the TOML file, the secrets directory and the environment, validated into
:class:`Settings`, with errors that name where."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import ConfigError
from orchestrator.settings.checks import (
    SettingsCheck,
    check_required_secrets,
    check_run_target,
    check_schedules,
)
from orchestrator.settings.locate import DEFAULT_CONFIG, Locator
from orchestrator.settings.model import Settings

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


def _apply_secret_files(data: dict[str, Any], secrets_dir: Path, locate: Locator) -> None:
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
    checks: Sequence[SettingsCheck] = (),
) -> Settings:
    """Load and validate. Raises :class:`ConfigError` naming where (file:line, environment
    variable or secrets file), the field and the reason.

    ``path`` None means ``config/liveorch.toml`` if it exists, else defaults + env only.
    Beyond the model, refuses what ``liveorch run`` would refuse for the configured target
    (no project id, the real cloud without credentials, an unauthenticated remote bind …);
    ``check_target=False`` skips that for tools that never call the cloud (report, preview).
    ``checks`` run with those target checks: what the layers above know to refuse (``liveorch
    run`` and reload pass ``rooms.startreq.check_start_requests``).
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
    locate = Locator(file, text, env_vars)
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
    check_required_secrets(settings, locate)
    check_schedules(settings, locate)
    if check_target:
        check_run_target(settings, locate, checks)
    return settings
