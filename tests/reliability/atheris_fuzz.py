"""Coverage-guided fuzzing with atheris (optional: ``.venv/bin/pip install atheris``).

Not part of the test suite (atheris is not a project dependency). Run one target for a while::

    .venv/bin/python tests/reliability/atheris_fuzz.py callbacks -max_total_time=120
    (targets: callbacks, mqtt, config, models)

Each target feeds libFuzzer's bytes to one parser and lets only that parser's documented error
escape; anything else is a crash (libFuzzer saves the input as ``crash-*``). Crashes found this
way become regression tests in ``test_fuzz_*.py``.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris  # type: ignore[import-untyped,unused-ignore]  # optional, untyped

with atheris.instrument_imports():
    import httpx

    from orchestrator.callbacks.parse import CallbackParseError, parse_body, peek_ids
    from orchestrator.callbacks.verify import CallbackAuthError, verify_callback
    from orchestrator.errors import CloudUnavailable, ConfigError, InvalidRequest
    from orchestrator.metastudio import models as m
    from orchestrator.metastudio.client import MetaStudioClient
    from orchestrator.mqtt.commands import CommandRejected, parse_command
    from orchestrator.mqtt.topics import CommandTarget
    from orchestrator.settings import load_settings

_TMP = Path(tempfile.mkdtemp(prefix="liveorch-atheris-"))


def callbacks(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    peek_ids(body)
    with contextlib.suppress(CallbackParseError):
        parse_body(body)
    headers = [
        (fdp.ConsumeUnicode(16), fdp.ConsumeUnicode(80)) for _ in range(fdp.ConsumeIntInRange(0, 3))
    ]
    try:
        verify_callback(
            auth_type=fdp.PickValueInList(["MSS_A", "MSS_A_HEAD", "NONE", "x"]),
            path=fdp.ConsumeUnicode(40),
            raw_query=fdp.ConsumeUnicode(160),
            headers=headers,
            keys=["atheris-key"],
            uri_mode=fdp.PickValueInList(["path", "full"]),
            full_url=fdp.ConsumeUnicode(40) or None,
            now=float(fdp.ConsumeIntInRange(0, 2**40)),
        )
    except CallbackAuthError:
        return
    raise AssertionError("a fuzzed callback was accepted")  # no key-holder in here


def mqtt(data: bytes) -> None:
    for target in (CommandTarget(None), CommandTarget("room-1")):
        with contextlib.suppress(CommandRejected):
            parse_command(data, target)


def config(data: bytes) -> None:
    path = _TMP / "fuzz.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_settings(path, env=False)


def models(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    model = fdp.PickValueInList(
        [m.SmartLiveJob, m.SmartLiveJobList, m.StartSmartLiveResp, m.CommandResult, m.SmartLiveRoom]
    )
    response = httpx.Response(200, content=fdp.ConsumeBytes(4096))
    with contextlib.suppress(CloudUnavailable):
        MetaStudioClient._parse("fuzz", model, response)
    with contextlib.suppress(InvalidRequest):
        m.parse_callback(response.content)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "callbacks": callbacks,
    "mqtt": mqtt,
    "config": config,
    "models": models,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
