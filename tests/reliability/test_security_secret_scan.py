"""Secret scan: a full run (emulator + daemon in one process, real mosquitto) leaks no secret.

Known secret values — AK, SK, stream keys (primary, backup, and one handed over at run time by
``set_output``), callback key, ops token — go into the config. The run goes live, survives a
held RTMP drop (refresh), answers good and bad MQTT commands (one failing command carries a
stream key in its payload), and serves the ops API. Then every output is scanned: the daemon's
JSON log (debug level), every MQTT payload under ``prefix/#``, ``/rooms``, ``/rooms/{id}``,
``/metrics`` and the error replies. None may contain any secret. State files must be 0600 in a
0700 directory.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from orchestrator import logging as olog
from orchestrator.app import Daemon, register_secrets
from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService
from orchestrator.httpserver import serve
from orchestrator.rooms.model import RoomState
from orchestrator.rooms.supervisor import Transition
from orchestrator.settings import Settings
from tests.support.mqtt import MqttRecorder, recording
from tests.support.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.external_service]

TIMEOUT = 30.0
ROOM, ROOM2 = "scan-a", "scan-b"


def _secret(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(12)}"


@pytest.fixture
async def mqtt_watch(
    require_service: Callable[[str], None],
) -> AsyncIterator[tuple[str, aiomqtt.Client, MqttRecorder]]:
    """The recorder (tests/support/mqtt.py) on ``prefix/#``; retained topics cleared after."""
    require_service("mosquitto")
    prefix = f"scan-{uuid.uuid4().hex[:10]}"
    async with recording(
        prefix, topics=[f"{prefix}/#"], protocol=aiomqtt.ProtocolVersion.V311, timeout=TIMEOUT
    ) as rec:
        yield prefix, rec.client, rec


def _texts(rec: MqttRecorder) -> list[tuple[str, str]]:
    """Every message as (topic, payload text), for the scan."""
    return [
        (m.topic.value, (m.payload if isinstance(m.payload, bytes) else str(m.payload).encode())
         .decode(errors="replace"))
        for m in rec.messages
    ]  # fmt: skip


async def _wait_state(daemon: Daemon, changed: asyncio.Event, room: str, want: RoomState) -> None:
    async with asyncio.timeout(TIMEOUT):
        while daemon.supervisor is None or daemon.supervisor.snapshot(room).state is not want:
            changed.clear()
            await changed.wait()


@pytest.mark.timeout(120)
async def test_no_secret_in_any_output(
    tmp_path: Path, mqtt_watch: tuple[str, aiomqtt.Client, MqttRecorder]
) -> None:
    prefix, client, collector = mqtt_watch
    ak, sk = "SCANAK" + secrets.token_hex(8).upper(), _secret("sk")
    keys = {
        "ak": ak,
        "sk": sk,
        "stream_key": _secret("streamkey"),
        "stream_key2": _secret("streamkey2"),
        "backup_key": _secret("backupkey"),
        "callback_key": _secret("cbkey"),
        "ops_token": _secret("opstoken"),
        "runtime_key": _secret("runtimekey"),
    }
    project = uuid.uuid4().hex
    service = EmulatorService(project, {ak: sk}, seed=3, time_scale=20.0)
    for rid in (ROOM, ROOM2):
        service.add_room(rid)
    state_dir = tmp_path / "state"
    port = free_port()
    log = io.StringIO()
    async with serve(create_app(service)) as emu:
        settings = Settings.model_validate(
            {
                "cloud": {"base_url": emu.base_url, "project_id": project, "ak": ak, "sk": sk},
                "store": {"url": f"sqlite+aiosqlite:///{state_dir / 'liveorch.db'}"},
                "http": {
                    "port": port,
                    "public_callback_url": f"http://127.0.0.1:{port}/callbacks/metastudio",
                },
                "callbacks": {"auth_type": "MSS_A_HEAD", "key": keys["callback_key"]},
                "ops": {"token": keys["ops_token"]},
                "mqtt": {"enabled": True, "prefix": prefix, "client_id": f"{prefix}-daemon"},
                "recovery": {
                    "grace_s": 0.5,
                    "refresh_backoff_s": 0.2,
                    "refresh_confirm_s": 3.0,
                    "poll_interval_s": 2.0,
                    "stale_after_s": 5.0,
                },
                "log": {"level": "debug", "format": "json"},
                "rooms": [
                    {
                        "id": ROOM,
                        "output_url": "rtmp://push.example.com/live",
                        "stream_key": keys["stream_key"],
                        "backup_outputs": [
                            {
                                "url": "rtmp://backup.example.com/live",
                                "stream_key": keys["backup_key"],
                            }
                        ],
                        "windows": [{"always": True}],
                    },
                    {
                        "id": ROOM2,
                        "output_url": "rtmp://push.example.com/live",
                        "stream_key": keys["stream_key2"],
                    },
                ],
            }
        )
        olog.configure("debug", "json", stream=log)  # what `liveorch run` does …
        register_secrets(settings)  # … before it starts the daemon
        changed = asyncio.Event()

        def on_transition(_: Transition) -> None:
            changed.set()

        daemon = Daemon(settings, listeners=[on_transition])
        task = asyncio.create_task(daemon.run(), name="scan-daemon")
        outputs: list[str] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                await daemon.ready.wait()
            await _wait_state(daemon, changed, ROOM, RoomState.LIVE)
            assert daemon.supervisor is not None
            job = daemon.supervisor.snapshot(ROOM).job_id
            async with httpx.AsyncClient(base_url=emu.base_url) as admin:
                r = await admin.post(
                    f"/_emulator/jobs/{job}/rtmp", json={"state": "DISCONNECTED", "hold_s": 600}
                )
                assert r.status_code == 200
            await _wait_state(daemon, changed, ROOM, RoomState.DEGRADED)
            await _wait_state(daemon, changed, ROOM, RoomState.LIVE)

            cmd_topic = f"{prefix}/rooms/{ROOM}/command"
            reply_topic = cmd_topic + "/reply"
            commands: list[dict[str, Any]] = [
                {"id": "c1", "action": "get"},
                {"id": "c4", "action": "insert_script", "text": "hello"},
                {
                    "id": "c2",
                    "action": "set_output",
                    "url": "rtmp://new.example.com/live",
                    "stream_key": keys["runtime_key"],
                },
                {"id": "c3", "action": "refresh_output"},
                # failing commands, two carrying a secret in the payload
                {
                    "id": "c5",
                    "action": "set_output",
                    "url": "not a url",
                    "stream_key": keys["stream_key"],
                },
                {
                    "id": "c6",
                    "action": "set_output",
                    "url": "rtmp://h/x",
                    "stream_key": keys["sk"],
                    "password": keys["ak"],
                },
                {"id": "c7", "action": "start", "until": "yesterday"},
            ]
            replies = []
            for body in commands:
                await client.publish(cmd_topic, json.dumps(body).encode(), qos=1)
                replies.append(await collector.wait_reply(reply_topic, body["id"]))
            assert [r["status"] for r in replies] == ["ok"] * 4 + ["error"] * 3
            await client.publish(
                f"{prefix}/rooms/{ROOM2}/command",
                json.dumps({"id": "c8", "action": "insert_script", "text": "x"}).encode(),
                qos=1,
            )
            failed = await collector.wait_reply(f"{prefix}/rooms/{ROOM2}/command/reply", "c8")
            assert failed["status"] == "error"
            outputs += [json.dumps(r) for r in [*replies, failed]]
            # the refresh after set_output pushes the runtime key to the service
            await _wait_state(daemon, changed, ROOM, RoomState.LIVE)

            base = f"http://127.0.0.1:{port}"
            auth = {"Authorization": f"Bearer {keys['ops_token']}"}
            async with httpx.AsyncClient(base_url=base) as ops:
                for path in ("/rooms", f"/rooms/{ROOM}", f"/rooms/{ROOM2}", "/metrics"):
                    denied = await ops.get(path)
                    assert denied.status_code == 401, path
                    outputs.append(denied.text)
                    ok = await ops.get(path, headers=auth)
                    assert ok.status_code == 200, path
                    outputs.append(ok.text)
                for path in ("/healthz", "/readyz"):
                    outputs.append((await ops.get(path)).text)
                forged = await ops.post(
                    "/callbacks/metastudio",
                    content=b'{"event_type":"X","message":"{}"}',
                    headers={"x-hw-mss-secret": "0" * 64, "x-hw-mss-time": "1"},
                )
                assert forged.status_code == 401
                outputs.append(forged.text)
        finally:
            daemon.stop_requested.set()
            async with asyncio.timeout(TIMEOUT):
                rc = await task
            olog.configure("warning", "json")
        assert rc == 0
    # the runtime key really reached the service (so it was in the daemon's hands)
    assert any(
        c["command"] == "REFRESH_OUTPUT_URL" and keys["runtime_key"] in json.dumps(c["params"])
        for c in service.commands
    )
    outputs.append(log.getvalue())
    # everything under prefix/# except the commands this test published itself
    outputs += [f"{t} {p}" for t, p in _texts(collector) if not t.endswith("/command")]
    assert len(log.getvalue().splitlines()) > 50  # the log really was captured
    assert any(t.endswith("/state") for t, _ in _texts(collector))
    text = "\n".join(outputs)
    leaks = {
        name: [o[max(0, o.find(v) - 200) : o.find(v) + 50] for o in outputs if v in o][:2]
        for name, v in keys.items()
        if v in text
    }
    assert leaks == {}
    # state files: 0700 directory, 0600 files
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for f in state_dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
