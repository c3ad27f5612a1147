"""``liveorch emulate``: serve the MetaStudio emulator until SIGINT/SIGTERM.

Prints the base URL and the credentials to use (the AK/SK are the emulator's own, printed on
purpose: they unlock nothing but this local process). With ``--config`` it creates the rooms of
a liveorch configuration and says how to point the daemon at it (``liveorch run --emulator``,
which reads the credentials from ``/_emulator/credentials``): a first trial of a config takes
two commands and no copying of keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import structlog

from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import DEFAULT_RATE_LIMITS, EmulatorService, rate_limits_for
from orchestrator.errors import ConfigError
from orchestrator.httpserver import serve

__all__ = ["add_arguments", "load_rooms_file", "parse_rate_limits", "run_from_args"]

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="create the [[rooms]] of this liveorch config (ids and names) in the emulator",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8600, help="port (default 8600; 0 = any)")
    parser.add_argument("--project-id", default=None, help="project id (default: random hex)")
    parser.add_argument("--region", default="cn-north-4", help="region name for IAM answers")
    parser.add_argument("--ak", default=None, help="access key accepted (default: generated)")
    parser.add_argument("--sk", default=None, help="secret key accepted (default: generated)")
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and randomness")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated delays run this much faster"
    )
    parser.add_argument("--rooms-file", type=Path, default=None, help="JSON or TOML rooms file")
    parser.add_argument(
        "--room", action="append", default=[], metavar="ID", help="seed a room (repeatable)"
    )
    parser.add_argument(
        "--push-ffmpeg", action="store_true", help="push a real test stream with ffmpeg"
    )
    parser.add_argument(
        "--no-push-error-info",
        dest="push_error_info",
        action="store_false",
        help="do not show an ingest's refusal in a running job's error_info (that the service "
        "does is unconfirmed)",
    )
    parser.add_argument(
        "--callback-uri-mode",
        choices=("path", "full"),
        default=None,
        help="URI used in the MSS_A/MSS_A_HEAD signature (default: the config's "
        "[callbacks] uri_mode, else path)",
    )
    parser.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="GROUP=PER_S",
        help=(
            "per-tenant requests/second of one API group, 0 = unlimited (repeatable; defaults: "
            "the documented limits of --region). Groups: " + ", ".join(DEFAULT_RATE_LIMITS)
        ),
    )


def parse_rate_limits(region: str, overrides: list[str]) -> dict[str, float]:
    """The region's documented limits with ``GROUP=PER_S`` overrides applied."""
    limits = rate_limits_for(region)
    for item in overrides:
        group, sep, raw = item.partition("=")
        group = group.strip()
        if not sep or group not in DEFAULT_RATE_LIMITS:
            raise ConfigError(
                "--rate-limit expects GROUP=PER_S with GROUP one of "
                + ", ".join(DEFAULT_RATE_LIMITS),
                where=group or item,
            )
        try:
            rate = float(raw)
        except ValueError:
            rate = -1.0
        if not rate >= 0 or rate == float("inf"):
            raise ConfigError("--rate-limit rate must be a non-negative number", where=group)
        limits[group] = rate
    return limits


def load_rooms_file(path: Path) -> list[dict[str, Any]]:
    """``{"rooms": [{"room_id": ..., "room_name": ..., <CreateSmartLiveRoomReq fields>}]}``."""
    try:
        raw = path.read_bytes()
        data: Any = (
            tomllib.loads(raw.decode("utf-8")) if path.suffix == ".toml" else json.loads(raw)
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read rooms file ({type(exc).__name__})", where=str(path)
        ) from exc
    rooms = data.get("rooms") if isinstance(data, dict) else data
    if not isinstance(rooms, list) or not all(isinstance(r, dict) for r in rooms):
        raise ConfigError("expected a list of room objects under 'rooms'", where=str(path))
    return rooms


def _config_rooms(path: Path) -> tuple[list[tuple[str, str]], str]:
    """The (id, name) of every ``[[rooms]]`` of a liveorch config, and its callback URI mode."""
    from orchestrator.settings import load_settings

    settings = load_settings(path, require_file=True, check_target=False)
    rooms = [(r.id, r.name or r.id) for r in settings.rooms]
    return rooms, settings.callbacks.uri_mode


def build_service(args: argparse.Namespace) -> EmulatorService:
    # seeded runs get reproducible defaults too; unseeded ones get fresh secrets
    rng = random.Random(args.seed) if args.seed is not None else None

    def token_hex(n: int) -> str:
        return f"{rng.getrandbits(n * 8):0{n * 2}x}" if rng else secrets.token_hex(n)

    rate_limits = parse_rate_limits(args.region, getattr(args, "rate_limit", []))
    ak = args.ak or "EMU" + token_hex(8).upper()
    sk = args.sk or token_hex(20)
    project_id = args.project_id or token_hex(16)
    config_rooms: list[tuple[str, str]] = []
    uri_mode = args.callback_uri_mode
    if getattr(args, "config", None) is not None:
        config_rooms, config_uri_mode = _config_rooms(args.config)
        uri_mode = uri_mode or config_uri_mode
    media = None
    if args.push_ffmpeg:
        from orchestrator.emulator.media import FfmpegPusher

        media = FfmpegPusher()
    service = EmulatorService(
        project_id,
        {ak: sk},
        seed=args.seed,
        time_scale=args.time_scale,
        region=args.region,
        callback_uri_mode=uri_mode or "path",
        media=media,
        rate_limits=rate_limits,
        push_error_info=args.push_error_info,
    )
    if args.rooms_file is not None:
        for room in load_rooms_file(args.rooms_file):
            body = {k: v for k, v in room.items() if k != "room_id"}
            service.add_room(room.get("room_id"), body)
    for room_id, name in config_rooms:
        service.add_room(room_id, {"room_name": name})
    for room_id in args.room:
        service.add_room(room_id)
    return service


def _next_steps(args: argparse.Namespace, base_url: str, rooms: list[str]) -> str:
    """What a person reads: where the emulator is and the one command that uses it."""
    config = getattr(args, "config", None)
    lines = [f"liveorch emulate: MetaStudio emulator at {base_url}, rooms: {', '.join(rooms)}"]
    if config is not None:
        lines.append(
            "liveorch emulate: run the daemon against it: "
            f"liveorch run --config {config} --emulator {base_url}"
        )
    else:
        lines.append(
            "liveorch emulate: run the daemon against it: "
            f"liveorch run --config CONFIG --emulator {base_url}"
        )
    return "\n".join(lines)


async def run_from_args(args: argparse.Namespace) -> int:
    try:
        service = build_service(args)
    except ConfigError as exc:
        print(f"liveorch emulate: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serve(create_app(service), host=args.host, port=args.port) as served:
            ak, sk = next(iter(service.credentials.items()))
            print(
                json.dumps(
                    {
                        "base_url": served.base_url,
                        "project_id": service.project_id,
                        "region": service.region,
                        "ak": ak,
                        "sk": sk,
                        "rooms": sorted(service.rooms),
                        "admin": served.base_url + "/_emulator",
                    }
                ),
                flush=True,
            )
            print(_next_steps(args, served.base_url, sorted(service.rooms)), file=sys.stderr)
            await stop.wait()
    except ConfigError as exc:
        print(f"liveorch emulate: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
