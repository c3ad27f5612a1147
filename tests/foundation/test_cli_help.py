"""Every option of every ``liveorch`` subcommand explains itself; usage errors exit 2."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cli


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _options() -> list[tuple[str, argparse.Action, str]]:
    out = []
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            label = " ".join(path) + " " + "/".join(action.option_strings or [action.dest])
            out.append((label, action, parser.format_help()))
    return out


def test_every_subcommand_is_reached() -> None:
    names = {" ".join(p) for p, _ in _parsers(cli.build_parser())}
    assert {"run", "emulate", "relay", "status", "reset", "report", "schedule preview"} <= names


@pytest.mark.parametrize(("label", "action", "usage"), _options(), ids=lambda v: str(v)[:40])
def test_option_has_help_and_a_readable_metavar(
    label: str, action: argparse.Action, usage: str
) -> None:
    assert action.help and action.help.strip(), f"{label}: no help text"
    shown = action.metavar or action.dest.upper()
    if action.option_strings and action.nargs != 0:
        assert not str(shown).endswith("_"), f"{label}: metavar {shown!r}"
        assert f"{shown}_" not in usage


def test_report_bad_since_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    rc = cli.main(["report", "--since", "last week", "--store", store])
    assert rc == 2
    assert "use 7d, 24h, 2w or YYYY-MM-DD" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_schedule_preview_unknown_room_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "liveorch.example.toml"
    rc = cli.main(["schedule", "preview", "--config", str(example), "--room", "nope"])
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "liveorch: no room 'nope' in the configuration"
    assert captured.out == ""


@pytest.mark.parametrize("command", [["reset", "room-a"], ["status"]])
def test_unreachable_daemon_exits_2(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main([*command, "--url", "http://127.0.0.1:9"])
    assert rc == 2
    assert "cannot reach the daemon at http://127.0.0.1:9" in capsys.readouterr().err


def test_run_emulator_without_an_emulator_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = cli.main(["run", "--emulator", "http://127.0.0.1:9"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no emulator answers at http://127.0.0.1:9" in err
    assert "Traceback" not in err
    rc = cli.main(["run", "--emulator", "http://metastudio.example.com"])
    assert rc == 2
    assert "expected the loopback URL" in capsys.readouterr().err
