"""AK/SK rotation without a restart: new credential files + reload (SIGHUP) → new signatures.

docs/operations.md tells operators to rotate AK/SK by replacing ``cloud.ak``/``cloud.sk`` in the
credentials directory and reloading. The reload used to keep the client built at start-up, so
every call kept failing with the revoked key until a restart; this proves the swap.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from orchestrator.app import Daemon
from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService
from orchestrator.errors import OrchestratorError
from orchestrator.httpserver import serve
from orchestrator.settings import load_settings
from tests.support.ports import free_port


@pytest.mark.timeout(60)
async def test_reload_swaps_rotated_aksk(tmp_path: Path) -> None:
    old_ak, old_sk = "OLDAK" + secrets.token_hex(6).upper(), secrets.token_hex(16)
    new_ak, new_sk = "NEWAK" + secrets.token_hex(6).upper(), secrets.token_hex(16)
    project = secrets.token_hex(16)
    service = EmulatorService(project, {old_ak: old_sk}, seed=1)
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "cloud.ak").write_text(old_ak)
    (creds / "cloud.sk").write_text(old_sk)
    async with serve(create_app(service)) as emu:
        cfg = tmp_path / "liveorch.toml"
        cfg.write_text(
            f'secrets_dir = "{creds}"\n'
            f'[cloud]\nbase_url = "{emu.base_url}"\nproject_id = "{project}"\n'
            f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path / "state" / "db.sqlite"}"\n'
            f"[http]\nport = {free_port()}\n"
            '[callbacks]\nkey = "k"\n',
            encoding="utf-8",
        )
        daemon = Daemon(load_settings(cfg, env=False), config_path=cfg)
        task = asyncio.create_task(daemon.run(), name="rotation-daemon")
        try:
            async with asyncio.timeout(20):
                await daemon.ready.wait()
            assert daemon.client is not None
            await daemon.client.list_rooms()  # old key works
            # the cloud revokes the old key; the operator drops the new one in place
            service.credentials = {new_ak: new_sk}
            with pytest.raises(OrchestratorError):
                await daemon.client.list_rooms()
            (creds / "cloud.ak").write_text(new_ak)
            (creds / "cloud.sk").write_text(new_sk)
            await daemon.reload(cause="test:rotate")
            await daemon.client.list_rooms()  # signed with the new key
        finally:
            daemon.stop_requested.set()
            async with asyncio.timeout(20):
                assert await task == 0
