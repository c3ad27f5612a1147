"""The start-request check comes from above the settings: the loader runs what it is given.

``settings`` imports nothing above it (import-linter), so the check that every room's start
request is valid lives in ``rooms.startreq`` and reaches ``load_settings`` as a ``checks``
entry: from the CLI (``liveorch run``/``check-config``, see test_cli_config) and from reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from orchestrator.control import CommandError
from orchestrator.errors import ConfigError
from orchestrator.overrides import Overrides
from orchestrator.reload import ConfigReload
from orchestrator.rooms.startreq import check_start_requests
from orchestrator.rooms.supervisor import RoomSupervisor
from orchestrator.settings import Settings, load_settings
from orchestrator.upkeep import SlaBook

_TARGET = "[cloud]\nbase_url = 'http://127.0.0.1:8600'\nproject_id = 'p1'\n"
_BAD_START = _TARGET + "[[rooms]]\nid = 'a'\nstart = { video_config = { width = 5 } }\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_check_is_reported_at_the_line_of_the_start_template(tmp_path: Path) -> None:
    path = _write(tmp_path, _BAD_START)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=False, checks=(check_start_requests,))
    assert str(info.value).startswith(f"{path}:6: rooms.0.start: invalid StartSmartLiveReq")


def test_the_loader_alone_knows_nothing_of_the_cloud_request(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, _BAD_START), env=False)
    assert [r.id for r in settings.rooms] == ["a"]


def test_no_check_without_target_checks(tmp_path: Path) -> None:
    path = _write(tmp_path, _BAD_START)
    load_settings(path, env=False, check_target=False, checks=(check_start_requests,))


async def test_reload_refuses_a_start_template_every_start_would_fail(tmp_path: Path) -> None:
    current = load_settings(_write(tmp_path, _TARGET), env=False)
    _write(tmp_path, _BAD_START)
    installed: list[Settings] = []
    reload = ConfigReload(
        tmp_path / "c.toml",
        settings=lambda: current,
        install=installed.append,
        register=lambda _s: None,
        # refused before any part is touched: these are never used
        rooms=cast(RoomSupervisor, None),
        sla=cast(SlaBook, None),
        overrides=cast(Overrides, None),
        leases=False,
        status=lambda: "ready",
    )
    with pytest.raises(CommandError) as info:
        await reload("test")
    assert info.value.code == "bad_config"
    assert "rooms.0.start: invalid StartSmartLiveReq" in info.value.message
    assert installed == []
