"""A tiny runnable bridge (fake Control, in-memory reply store) for the LWT test and the docs.

    .venv/bin/python -m tests.support.mqtt_bridge_proc --prefix demo --rooms room-a,room-b

SIGTERM/SIGINT stop it cleanly (``bridge/state`` = offline published by the bridge itself);
SIGKILL leaves it to the broker's LWT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from orchestrator.mqtt.bridge import MqttBridge
from orchestrator.settings import MqttSettings
from tests.support.mqtt_fakes import MemoryReplyStore, RecordingControl


async def main(args: argparse.Namespace) -> None:
    settings = MqttSettings(
        enabled=True,
        host=args.host,
        port=args.port,
        client_id=args.client_id or f"{args.prefix}-bridge",
        prefix=args.prefix,
        protocol=args.protocol,
        keepalive_s=args.keepalive,
        acl={"panel": ["get", "stop"]} if args.acl else {},
    )
    control = RecordingControl(rooms=args.rooms.split(","))
    bridge = MqttBridge(settings, control, MemoryReplyStore(), version="demo")
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    runner = asyncio.create_task(bridge.run(), name="bridge")
    await bridge.wait_connected()
    print("READY", flush=True)
    try:
        await runner
    except asyncio.CancelledError:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="liveorch")
    p.add_argument("--client-id", default=None)
    p.add_argument("--protocol", default="5", choices=["5", "3.1.1"])
    p.add_argument("--rooms", default="room-a,room-b")
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument("--acl", action="store_true", help="demo ACL: client 'panel' may get/stop")
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main(p.parse_args()))
