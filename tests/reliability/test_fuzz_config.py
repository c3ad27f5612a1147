"""Fuzz the config loader: random TOML-ish documents → Settings or ConfigError, never a traceback.

A failed load changes nothing: the file, the secrets directory and the environment are exactly
as before, and no file is created next to the config.
"""

# ruff: noqa: PT017  (a fuzzer may or may not get an exception: pytest.raises cannot express it)

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.app import Daemon
from orchestrator.emulator.app import create_app
from orchestrator.emulator.service import EmulatorService
from orchestrator.errors import ConfigError
from orchestrator.httpserver import serve
from orchestrator.settings import Settings, load_settings
from tests.support.fuzz import EXAMPLES, FUZZ

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


# --- check-config accepts it → run uses it ------------------------------------------------
#
# Every field of every section gets values around its edges (negative, zero, huge, empty,
# wrong shape). A config the loader accepts is then run for real: the in-process daemon
# against an in-process emulator must reach readiness and stop with 0, or refuse with one
# ConfigError line (exit 2 in the CLI). Anything else (a crash, exit 1, a hang) fails.
# Left fixed: what points the daemon at the emulator (base_url, project id, AK/SK, auth) and
# the log setup; everything that could reach another machine is pointed at nothing.

_NUMBERS: list[object] = [-(2**40), -5, -1, 0, 0.001, 0.5, 1, 3, 30, 1023, 1024, 70000, 2**40]
_TEXTS: list[object] = [
    "",
    " ",
    "x",
    "a/#",
    "a/+/b",
    "/callbacks/x",
    "callbacks",
    "/with space",
    "$SYS",
    "liveorch-fuzz",
    "http://127.0.0.1:1/hook",
    "ftp://x",
    "rtmp://127.0.0.1:1/live",
    "UTC",
    "Mars/Base",
    "04:00",
    "\x00",
    "中文",
]
_FIXED = {
    ("cloud", "base_url"),
    ("cloud", "project_id"),
    ("cloud", "auth"),
    ("cloud", "ak"),
    ("cloud", "sk"),
    ("cloud", "security_token"),
    ("cloud", "password"),
    ("cloud", "iam_url"),
    ("log", "level"),
    ("log", "format"),
    ("mqtt", "host"),  # never a real broker: the shared mosquitto keeps retained junk
    ("mqtt", "port"),
    ("mqtt", "tls"),
    ("probe", "ffprobe"),
}


def _edge_values(annotation: object) -> st.SearchStrategy[object]:
    text = str(annotation)
    options: list[object] = []
    if "Literal[" in text:
        options += [a for a in getattr(annotation, "__args__", ()) if isinstance(a, str)]
    if "bool" in text:
        options += [True, False]
    if "int" in text or "float" in text:
        options += _NUMBERS
    if "str" in text or "Secret" in text:
        options += _TEXTS
    if "dict" in text:
        options += [{}, {"x": ["start"]}, {"c": ["nope"]}, {"grace_s": -1}]
    if "list" in text:
        options += [[], ["x"]]
    return st.sampled_from(options or [None, 0, "", True])


_RUN_SECTIONS = [s for s in Settings.model_fields if s not in ("rooms", "secrets_dir", "log")]
_FIELDS = [
    (section, key, _edge_values(f.annotation))
    for section in _RUN_SECTIONS
    for key, f in getattr(Settings.model_fields[section].annotation, "model_fields", {}).items()
    if (section, key) not in _FIXED
]
_ROOM_FIELDS = [
    ("room", "name", st.sampled_from(_TEXTS)),
    ("room", "output_url", st.sampled_from(["", "rtmp://127.0.0.1:1/live", "ftp://x", "x"])),
    ("room", "timezone", st.sampled_from(["Asia/Shanghai", "Mars/Base", ""])),
    ("room", "daily_restart", st.sampled_from(["04:00", "25:99", ""])),
    ("room", "windows", st.sampled_from([[{"always": True}], [], [{"cron": "61 * * * *"}]])),
    ("room", "recovery", st.sampled_from([{}, {"grace_s": 0}, {"grace_s": -1}, {"nope": 1}])),
    ("room", "backup_outputs", st.sampled_from([[], [{"url": "x"}], [{"url": "rtmp://h/l"}]])),
    (
        "store",
        "url",
        st.sampled_from(
            ["@db", "", "mysql://x", "sqlite:///x.db", "@under-a-file", "@dir-as-file"]
        ),
    ),
]
#: a document is a few (section, field, value) overrides of a config that runs: one bad value
#: at a time is what an operator writes, and keeps most examples close to running
run_documents = st.lists(
    st.sampled_from(_FIELDS + _ROOM_FIELDS).flatmap(
        lambda f: st.tuples(st.just(f[0]), st.just(f[1]), f[2])
    ),
    min_size=1,
    max_size=3,
)


def _run_doc(
    tmp: Path, overrides: list[tuple[str, str, object]], emu_url: str, creds: tuple[str, str, str]
) -> str:
    project, ak, sk = creds
    (tmp / "a-file").write_text("x")
    (tmp / "db-dir").mkdir(exist_ok=True)
    store = {
        "@db": f"sqlite+aiosqlite:///{tmp / 'state' / 'db.sqlite'}",
        "@under-a-file": f"sqlite+aiosqlite:///{tmp / 'a-file' / 'db.sqlite'}",
        "@dir-as-file": f"sqlite+aiosqlite:///{tmp / 'db-dir'}",
    }
    sections: dict[str, dict[str, object]] = {
        "cloud": {"base_url": emu_url, "project_id": project, "ak": ak, "sk": sk},
        "store": {"url": store["@db"]},
        "http": {"port": 0},
        "mqtt": {},
        "log": {"level": "warning", "format": "json"},
    }
    room: dict[str, object] = {
        "id": "r1",
        "output_url": "rtmp://127.0.0.1:1/live",
        "stream_key": "fuzz-key",
        "windows": [{"always": True}],
    }
    for section, key, value in overrides:
        if section == "room":
            room[key] = value
        else:
            sections.setdefault(section, {})[key] = value
    sections["store"]["url"] = store.get(str(sections["store"]["url"]), sections["store"]["url"])
    sections["mqtt"].update(host="127.0.0.1", port=1)  # nothing listens: only reconnects
    text = _dumps(sections)  # type: ignore[arg-type]
    text += "[[rooms]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in room.items())
    return text


async def _run_once(tmp: Path, doc: list[tuple[str, str, object]]) -> str:
    """'refused' / 'ran'; raises on anything else."""
    project, ak, sk = "fuzzproject01", "FUZZAK0001", "fuzz-sk-0001"
    service = EmulatorService(project, {ak: sk}, seed=1, time_scale=10.0)
    service.add_room("r1")
    async with serve(create_app(service)) as emu:
        cfg = tmp / "run.toml"
        cfg.write_text(_run_doc(tmp, doc, emu.base_url, (project, ak, sk)), encoding="utf-8")
        try:
            settings = load_settings(cfg, env=False)
        except ConfigError as exc:
            assert "\n" not in str(exc), "a refusal is one line"
            return "refused"
        daemon = Daemon(settings, config_path=cfg)
        task = asyncio.create_task(daemon.run(), name="fuzz-daemon")
        ready = asyncio.create_task(daemon.ready.wait(), name="fuzz-ready")
        try:
            await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done():  # ended before readiness: only a one-line refusal is allowed
            exc = task.exception()
            assert isinstance(exc, ConfigError), (
                f"run ended with {task.result() if exc is None else exc!r}"
            )
            assert "\n" not in str(exc)
            return "refused"
        assert daemon.ready.is_set(), "neither ready nor refused within 60 s"
        daemon.stop_requested.set()
        async with asyncio.timeout(60):
            assert await task == 0, "the daemon did not stop cleanly"
        return "ran"


@settings(FUZZ, max_examples=max(10, EXAMPLES // 4))  # each example runs a daemon
@given(run_documents)
def test_accepted_configs_run_or_refuse_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, doc: list[tuple[str, str, object]]
) -> None:
    tmp = tmp_path_factory.mktemp("fuzzrun")
    assert asyncio.run(_run_once(tmp, doc)) in ("ran", "refused")


def test_the_fuzz_base_config_runs(tmp_path: Path) -> None:
    """The property above could pass by refusing everything: the base config must run."""
    assert asyncio.run(_run_once(tmp_path, [])) == "ran"
