"""Run the emulator in its own process for a bench: ``python -m bench._emulator_proc``.

Why a separate process: a bench measuring a client must not pay for the server's CPU on the
same event loop/GIL. Prints one JSON line ``{"base_url": ...}`` once listening; stops on
SIGTERM/SIGINT. Rate limits are the documented ones times ``--rate-scale`` (0 = unlimited).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from bench._common import emulator, room_ids, scaled_limits
from orchestrator import logging as olog


async def _main(args: argparse.Namespace) -> int:
    olog.configure("warning", "json", stream=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    limits = None if args.rate_scale == 1 else scaled_limits(args.rate_scale)
    async with emulator(
        room_ids(args.rooms), rate_limits=limits, time_scale=args.time_scale
    ) as emu:
        print(json.dumps({"base_url": emu.base_url}), flush=True)
        await stop.wait()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
