"""``liveorch emulate`` argument handling and room seeding."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator.emulator.cli import add_arguments, build_service, load_rooms_file
from orchestrator.emulator.validation import ApiError
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


def test_rate_limits_follow_region_and_flags() -> None:
    north = build_service(_args("--seed", "1")).rate_limits
    assert (north["start"], north["list_rooms"], north["create_room"]) == (4, 20, 5)
    east = build_service(_args("--seed", "1", "--region", "cn-east-3")).rate_limits
    assert (east["start"], east["list_rooms"], east["create_room"]) == (3, 10, 3)
    tuned = build_service(
        _args("--region", "cn-east-3", "--rate-limit", "start=50", "--rate-limit", "show=0")
    ).rate_limits
    assert (tuned["start"], tuned["show"], tuned["list_rooms"]) == (50, 0, 10)


@pytest.mark.parametrize("bad", ["start", "dance=3", "start=-1", "start=fast", "start=inf"])
def test_bad_rate_limit_flags_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="--rate-limit"):
        build_service(_args("--rate-limit", bad))


async def test_rate_limit_flag_changes_throttling() -> None:
    service = build_service(_args("--rate-limit", "show_room=1", "--room", "r-1"))
    service.show_room("r-1")
    service.check_rate("show_room")
    with pytest.raises(ApiError) as info:
        service.check_rate("show_room")
    assert (info.value.status, info.value.error_code) == (429, "APIGW.0308")
