"""``liveorch emulate`` argument handling and room seeding."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator.emulator.cli import add_arguments, build_service, load_rooms_file
from orchestrator.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_rooms_from_file_and_flags(tmp_path: Path) -> None:
    rooms = tmp_path / "rooms.toml"
    rooms.write_text(
        '[[rooms]]\nroom_id = "r-a"\nroom_name = "Alpha"\noutput_urls = ["rtmp://x/live"]\n'
    )
    args = _args(
        "--rooms-file",
        str(rooms),
        "--room",
        "r-b",
        "--ak",
        "A",
        "--sk",
        "S",
        "--project-id",
        "p1",
        "--seed",
        "3",
        "--callback-uri-mode",
        "full",
    )
    service = build_service(args)
    assert set(service.rooms) == {"r-a", "r-b"}
    assert service.rooms["r-a"].room_name == "Alpha"
    assert service.credentials == {"A": "S"}
    assert service.project_id == "p1"
    assert service.callbacks.uri_mode == "full"


def test_bad_rooms_file(tmp_path: Path) -> None:
    bad = tmp_path / "rooms.json"
    bad.write_text('{"rooms": 3}')
    with pytest.raises(ConfigError):
        load_rooms_file(bad)
    with pytest.raises(ConfigError):
        load_rooms_file(tmp_path / "missing.json")
