"""Fuzz the config loader: random TOML-ish documents → Settings or ConfigError, never a traceback.

A failed load changes nothing: the file, the secrets directory and the environment are exactly
as before, and no file is created next to the config.
"""

# ruff: noqa: PT017  (a fuzzer may or may not get an exception: pytest.raises cannot express it)

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reliability_support import FUZZ

from orchestrator.errors import ConfigError
from orchestrator.settings import Settings, load_settings

SECTIONS = [
    "cloud",
    "store",
    "mqtt",
    "http",
    "callbacks",
    "recovery",
    "schedule",
    "shutdown",
    "reload",
    "ops",
    "alerts",
    "probe",
    "log",
]
KEYS = [
    "ak",
    "sk",
    "base_url",
    "auth",
    "port",
    "host",
    "enabled",
    "acl",
    "grace_s",
    "key",
    "auth_type",
    "allow_none",
    "timezone",
    "level",
    "format",
    "url",
    "token",
    "prefix",
    "refresh_tries",
    "password",
    "holidays_file",
    "stop_jobs",
    "x",
]
ROOM_KEYS = [
    "id",
    "output_url",
    "stream_key",
    "windows",
    "timezone",
    "exclude",
    "recovery",
    "daily_restart",
    "holidays",
    "backup_outputs",
    "probe",
    "start",
    "bogus",
]

scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "MSS_A_HEAD",
            "NONE",
            "aksk",
            "token",
            "UTC",
            "Asia/Shanghai",
            "Mars/Base",
            "0 20 * * *",
            "2026-10-01..2026-10-07",
            "25:99",
            "90m",
            "PT2H",
            "rtmp://h/a",
            "json",
            "debug",
            "1883",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*KEYS, "cron", "duration", "always", "start", "end"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
)
windows = st.lists(
    st.dictionaries(
        st.sampled_from(
            ["cron", "duration", "end_cron", "start", "end", "always", "timezone", "name"]
        ),
        scalars,
        max_size=3,
    ),
    max_size=2,
)
rooms = st.lists(
    st.dictionaries(st.sampled_from(ROOM_KEYS), values, max_size=5).map(
        lambda r: {**r, "windows": r.get("windows", [])}
    )
    | st.builds(
        lambda rid, w: {"id": rid, "windows": w, "output_url": "rtmp://h/live", "stream_key": "k"},
        st.text(max_size=12),
        windows,
    ),
    max_size=3,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        **{
            s: st.dictionaries(st.sampled_from(KEYS), values, max_size=4) | scalars
            for s in SECTIONS
        },
        "rooms": rooms | scalars,
        "secrets_dir": st.sampled_from(["@secrets", "/nonexistent/dir"]) | scalars,
    },
)


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _dumps(doc: dict[str, object]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _load(tmp: Path, text: str) -> Settings | None:
    cfg = tmp / "liveorch.toml"
    cfg.write_text(text, encoding="utf-8")
    before, env_before = _snapshot(tmp), dict(os.environ)
    try:
        return load_settings(cfg, env=False)
    except ConfigError as exc:
        assert exc.where is None or isinstance(exc.where, str)
        assert str(exc)
        return None
    finally:
        assert _snapshot(tmp) == before  # a load (failed or not) writes nothing
        assert dict(os.environ) == env_before


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzcfg")
    secrets = root / "secrets"
    secrets.mkdir()
    for name, value in {
        "cloud.ak": "AK1",
        "cloud.sk": "SK1",
        "room.r1.stream_key": "key1",
        "ops.token": "tok",
    }.items():
        (secrets / name).write_text(value)
    return root


@FUZZ
@given(documents)
def test_random_documents_load_or_fail_cleanly(base: Path, doc: dict[str, object]) -> None:
    if doc.get("secrets_dir") == "@secrets":
        doc = {**doc, "secrets_dir": str(base / "secrets")}
    _load(base, _dumps(doc))


@FUZZ
@given(st.text(max_size=300))
def test_random_text_loads_or_fails_cleanly(base: Path, text: str) -> None:
    _load(base, text)


@FUZZ
@given(
    documents,
    st.integers(0, 400),
    st.sampled_from(["", "[", "]", "=", '"', "\n", "[[rooms]]\n", "\x00"]),
)
def test_mutated_documents_load_or_fail_cleanly(
    base: Path, doc: dict[str, object], at: int, junk: str
) -> None:
    text = _dumps(doc)
    at = min(at, len(text))
    _load(base, text[:at] + junk + text[at:])


# --- regressions found by fuzzing ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'secrets_dir = "@secrets"\nrooms = "abc"\n',
        'secrets_dir = "@secrets"\nrooms = [1, "x"]\n',
        'secrets_dir = "@secrets"\ncloud = "x"\n',
        'secrets_dir = "@secrets"\nops = 3\n',
        "secrets_dir = 5\n",
        "secrets_dir = [1]\n",
    ],
)
def test_regression_wrong_types_with_secrets_dir(base: Path, text: str) -> None:
    text = text.replace("@secrets", str(base / "secrets"))
    with pytest.raises(ConfigError):
        load_settings(_write(base, text), env=False)


def _write(base: Path, text: str) -> Path:
    cfg = base / "regression.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


@pytest.mark.parametrize("raw", [b"\xac", b'[cloud]\nregion = "\xff"\n', b"\xef\xbb\xbf\xc3("])
def test_regression_non_utf8_file_is_a_config_error(base: Path, raw: bytes) -> None:
    """Found by atheris: a non-UTF-8 file raised UnicodeDecodeError instead of ConfigError."""
    cfg = base / "binary.toml"
    cfg.write_bytes(raw)
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(cfg, env=False)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_load_or_fail_cleanly(base: Path, raw: bytes) -> None:
    cfg = base / "bytes.toml"
    cfg.write_bytes(raw)
    with contextlib.suppress(ConfigError):
        load_settings(cfg, env=False)
