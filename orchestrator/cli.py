"""Command line: ``liveorch <command>`` (also ``python -m orchestrator``).

User errors (bad config, unreachable daemon) print one clear line to stderr and exit 2;
no traceback. Exit codes: 0 ok, 1 runtime failure, 2 usage/config error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator import __version__, report, status
from orchestrator.callbacks import relay
from orchestrator.emulator import cli as emu_cli
from orchestrator.errors import ConfigError
from orchestrator.schedule import preview

EXIT_OK = 0
EXIT_USAGE = 2


def _err(msg: str) -> None:
    print(f"liveorch: {msg}", file=sys.stderr)


def _load(args: argparse.Namespace, *, check_target: bool = True) -> Any:
    from orchestrator.rooms.startreq import check_start_requests
    from orchestrator.settings import load_settings

    # report and schedule preview never call the cloud: no project id or AK/SK needed there
    return load_settings(
        args.config,
        require_file=args.config is not None,
        check_target=check_target,
        checks=(check_start_requests,),
    )


def cmd_version(args: argparse.Namespace) -> int:
    print(f"liveorch {__version__}")
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from orchestrator.settings import DEFAULT_CONFIG, masked_dump

    settings = _load(args)
    print(json.dumps(masked_dump(settings), indent=2, sort_keys=False))
    if args.config is None and not DEFAULT_CONFIG.exists():
        # "OK (0 rooms)" read as if a file had been checked: say what was checked instead
        print(
            f"liveorch: no config file given and {DEFAULT_CONFIG} not found: checked defaults + "
            f"environment only ({len(settings.rooms)} rooms); pass --config FILE",
            file=sys.stderr,
        )
        return EXIT_OK
    print(f"liveorch: configuration OK ({len(settings.rooms)} rooms)", file=sys.stderr)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator import app

    if args.emulator is not None:
        from orchestrator import trial

        trial.apply_emulator(args.emulator)
        print(
            f"liveorch: running against the emulator at {args.emulator} "
            f"(store: ./{trial.TRIAL_STORE})",
            file=sys.stderr,
        )
    settings = _load(args)
    return app.run(settings, config_path=args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator import demo

    if args.state_dir is not None:
        args.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds the demo store
    return asyncio.run(
        demo.run_demo(duration_s=args.duration, fast=not args.real_time, state_dir=args.state_dir)
    )


def _console_logs() -> None:
    from orchestrator import logging as olog

    olog.configure("info", "auto")


def cmd_emulate(args: argparse.Namespace) -> int:
    _console_logs()
    return asyncio.run(emu_cli.run_from_args(args))


def cmd_relay(args: argparse.Namespace) -> int:
    _console_logs()
    return asyncio.run(relay.run_from_args(args))


def cmd_status(args: argparse.Namespace) -> int:
    return status.run_from_args(args)


def cmd_reset(args: argparse.Namespace) -> int:
    return status.run_reset(args)


def cmd_schedule_preview(args: argparse.Namespace) -> int:
    return preview.run_from_args(args, _load(args, check_target=False))


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator import logging as olog

    # stdout is the report (piped to jq or a spreadsheet); store logs go to stderr
    olog.configure("warning", "auto", stream=sys.stderr)
    return asyncio.run(report.run_from_args(args, _load(args, check_target=False)))


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="TOML config file (default: config/liveorch.toml if present)",
    )


def _subcommand(
    sub: Any,
    name: str,
    help_: str,
    func: Callable[[argparse.Namespace], int],
    add_arguments: Callable[[argparse.ArgumentParser], None],
) -> argparse.ArgumentParser:
    """Register a subcommand whose implementation and arguments live in its own module."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    add_arguments(p)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liveorch",
        description="Keeps MetaStudio smart-live jobs on air, unattended.",
    )
    parser.add_argument("--version", action="version", version=f"liveorch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run the daemon")
    _add_config(p)
    p.add_argument(
        "--emulator",
        metavar="URL",
        default=None,
        help="try the config against `liveorch emulate` at URL (its project id and keys, "
        "store ./liveorch-emulator.db)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate the config and print it (secrets masked)")
    _add_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("demo", help="emulator + daemon in one process, with a forced drop")
    p.add_argument("--duration", type=float, default=90.0, help="seconds to run (default 90)")
    p.add_argument("--real-time", action="store_true", help="do not accelerate emulator time")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="keep the demo's SQLite store here (default: a temporary directory)",
    )
    p.set_defaults(func=cmd_demo)

    _subcommand(sub, "emulate", "serve the MetaStudio emulator", cmd_emulate, emu_cli.add_arguments)
    _subcommand(sub, "relay", "edge receiver: callbacks → MQTT", cmd_relay, relay.add_arguments)
    _subcommand(sub, "status", "show rooms from a running daemon", cmd_status, status.add_arguments)
    _subcommand(
        sub,
        "reset",
        "take a room out of QUARANTINED (ops HTTP, no MQTT needed)",
        cmd_reset,
        status.add_reset_arguments,
    )

    p = sub.add_parser("schedule", help="schedule tools")
    ssub = p.add_subparsers(dest="schedule_command", metavar="SUBCOMMAND")
    ssub.required = True
    sp = _subcommand(
        ssub, "preview", "print the next windows", cmd_schedule_preview, preview.add_arguments
    )
    _add_config(sp)

    rp = _subcommand(sub, "report", "SLA report", cmd_report, report.add_arguments)
    _add_config(rp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        return rc
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
