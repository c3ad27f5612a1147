"""`liveorch check-config`: the example config passes; broken ones fail with file, field, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import EXIT_USAGE, main
from orchestrator.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "liveorch.example.toml"


def test_example_config_is_valid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the example leaves what only the operator knows empty: project id and AK/SK
    monkeypatch.setenv("LIVEORCH_CLOUD__PROJECT_ID", "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("CLOUD_SDK_AK", "AK-EXAMPLE-0000")
    monkeypatch.setenv("CLOUD_SDK_SK", "SK-EXAMPLE-0000")
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "configuration OK (2 rooms)" in err
    assert "example-stream-key-a" not in out, "secrets must be masked in the dump"
    assert '"stream_key": "**********"' in out


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[cloud]\nread_timeout_s = 'soon'\n", ":2: cloud.read_timeout_s"),
        ("[cloud]\nregoin = 'cn-north-4'\n", "cloud.regoin: unknown key"),
        (
            "[[rooms]]\nid = 'r1'\noutput_url = 'rtmp://x/live'\n",
            "rooms.r1.stream_key is missing",
        ),
        ("[cloud]\nak = 'only-ak'\n", "cloud.ak and cloud.sk must be given together"),
        ("[callbacks]\nauth_type = 'NONE'\n", "allow_none"),
        ("[[rooms]]\nid = 'bad id!'\n", "room id 'bad id!'"),
        ("[[rooms]]\nid = 'a'\n[[rooms]]\nid = 'a'\n", "appears twice"),
        ("[[rooms]]\nid = 'a'\nrecovery = { grace = 1 }\n", "unknown recovery override"),
        ("[[rooms]]\nid = 'a'\nrecovery = { grace_s = 'soon' }\n", "grace_s"),
        ("[recovery]\ngrace_s = -1\n", ":2: recovery.grace_s"),
        ("[recovery]\npoll_interval_s = 0\n", ":2: recovery.poll_interval_s"),
        ("[recovery]\njitter = 1.5\n", ":2: recovery.jitter"),
        ("[recovery]\napi_retry_factor = 0.5\n", ":2: recovery.api_retry_factor"),
        ("[[rooms]]\nid = 'a'\nrecovery = { stall_after_s = -5 }\n", "stall_after_s"),
        ("[cloud]\nread_retry_backoff_s = -1\n", ":2: cloud.read_retry_backoff_s"),
        (
            "[[rooms]]\nid = 'a'\nwindows = [{ cron = '61 8 * * *', duration = '1h' }]\n",
            "rooms.0.windows",
        ),
        ("[[rooms]]\nid = 'a'\nexclude = ['2026-13-01']\n", "exclude"),
        ("[[rooms]]\nid = 'a'\nholidays = ['nope']\n", "nope"),
        ("this is = = not toml", "invalid TOML"),
    ],
)
def test_broken_configs_fail_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, expected: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    assert main(["check-config", "--config", str(cfg)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert str(cfg) in err
    assert expected in err
    assert "Traceback" not in err


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == EXIT_USAGE
    assert "file not found" in capsys.readouterr().err


def test_secrets_dir_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cloud.ak").write_text("AK-FROM-FILE\n")
    (creds / "cloud.sk").write_text("SK-FROM-FILE\n")
    (creds / "room.r1.stream_key").write_text("key-from-file")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[cloud]\nregion = 'cn-north-4'\nproject_id = 'p1'\n[[rooms]]\nid = 'r1'\noutput_url = 'rtmp://x/l'\n"
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("LIVEORCH_CLOUD__REGION", "cn-east-3")
    s = load_settings(cfg)
    assert s.cloud.region == "cn-east-3", "env overrides the file"
    assert s.cloud.ak is not None and s.cloud.ak.get_secret_value() == "AK-FROM-FILE"
    room = s.room("r1")
    assert room is not None and room.stream_key is not None
    assert room.stream_key.get_secret_value() == "key-from-file"
    assert "AK-FROM-FILE" not in repr(s)


def test_sdk_env_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLOUD_SDK_AK", "AK-ENV-000")
    monkeypatch.setenv("CLOUD_SDK_SK", "SK-ENV-000")
    monkeypatch.setenv("LIVEORCH_CLOUD__PROJECT_ID", "p1")
    monkeypatch.chdir(tmp_path)
    s = load_settings(None)
    assert s.cloud.sk is not None and s.cloud.sk.get_secret_value() == "SK-ENV-000"


def test_module_entry_point_runs() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("liveorch ")


# --- issue 20/21: every value run cannot use is refused, where it was written ------------

_TARGET = "[cloud]\nbase_url = 'http://127.0.0.1:8600'\nproject_id = 'p1'\n"


def _check(tmp_path: Path, toml: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    rc = main(["check-config", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err.replace(str(cfg), "c.toml")


@pytest.mark.parametrize(
    ("section", "assignment", "field"),
    [
        ("cloud", "read_timeout_s = -1", "cloud.read_timeout_s"),
        ("cloud", "connect_timeout_s = 0", "cloud.connect_timeout_s"),
        ("cloud", "rate_start_per_s = 0", "cloud.rate_start_per_s"),
        ("cloud", "rate_query_per_s = -5", "cloud.rate_query_per_s"),
        ("cloud", "region = 'cn north'", "cloud.region"),
        ("cloud", "app_user_id = '店铺'", "cloud.app_user_id"),
        ("cloud", "read_timeout_s = inf", "cloud.read_timeout_s"),
        ("callbacks", "path = ''", "callbacks.path"),
        ("callbacks", "path = 'callbacks'", "callbacks.path"),
        ("callbacks", "tolerance_s = -1", "callbacks.tolerance_s"),
        ("callbacks", "max_body_bytes = -1", "callbacks.max_body_bytes"),
        ("http", "port = -1", "http.port"),
        ("http", "port = 70000", "http.port"),
        ("http", "public_callback_url = 'edge/callbacks'", "http.public_callback_url"),
        ("mqtt", "prefix = ''", "mqtt.prefix"),
        ("mqtt", "prefix = 'a/#'", "mqtt.prefix"),
        ("mqtt", "keepalive_s = -5", "mqtt.keepalive_s"),
        ("mqtt", "queue_limit = -1", "mqtt.queue_limit"),
        ("mqtt", "port = 0", "mqtt.port"),
        ("mqtt", "callbacks_topic = 'a/#'", "mqtt.callbacks_topic"),
        ("mqtt", "acl = { shop = ['strat'] }", "mqtt.acl"),
        ("mqtt", "ca_file = '/nonexistent/ca.pem'", "mqtt"),
        ("store", "url = ''", "store.url"),
        ("store", "url = 'mysql://db/x'", "store.url"),
        ("store", "url = 'sqlite:///x.db'", "store.url"),
        ("store", "lease_ttl_s = -1\nleases = 'on'", "store.lease_ttl_s"),
        ("store", "max_rooms_per_instance = 0", "store.max_rooms_per_instance"),
        ("store", "pg_schema = 'x'", "store"),
        ("schedule", "timezone = 'Mars/Base'", "schedule.timezone"),
        ("schedule", "rollover_before_h = 200", "schedule.rollover_before_h"),
        ("shutdown", "timeout_s = 0", "shutdown.timeout_s"),
        ("ops", "api_reachable_s = 0", "ops.api_reachable_s"),
        ("alerts", "webhook_url = 'hooks.example.com'", "alerts.webhook_url"),
        ("alerts", "webhook_retries = -1", "alerts.webhook_retries"),
    ],
)
def test_values_run_cannot_use_are_refused_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, assignment: str, field: str
) -> None:
    """Each passed check-config before and then crashed `run` (or left it silently broken)."""
    toml = _TARGET + f"[{section}]\n" + assignment + "\n"
    if section == "cloud":  # one [cloud] table: the bad key goes into it
        toml = _TARGET + assignment + "\n"
    line = toml.splitlines().index(assignment.splitlines()[0]) + 1
    rc, err = _check(tmp_path, toml, capsys)
    assert rc == EXIT_USAGE
    assert err.count("\n") == 1, "one line"
    at = f"c.toml:{line}: " if "." in field else "c.toml:"
    assert f"{at}" in err and f"{field}" in err, err


def test_line_is_found_by_full_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`http.port` was blamed on `mqtt.port`'s line: the first `port =` of the file."""
    toml = _TARGET + "[mqtt]\nport = 1883\n[http]\nport = 70000\n"
    rc, err = _check(tmp_path, toml, capsys)
    assert rc == EXIT_USAGE
    assert "c.toml:7: http.port:" in err


def test_line_of_an_error_in_the_second_room(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every error in rooms.1 was blamed on the first [[rooms]]."""
    toml = (
        _TARGET + "[[rooms]]\nid = 'a'\ntimezone = 'UTC'\n[[rooms]]\nid = 'b'\ntimezone = 'X/Y'\n"
    )
    rc, err = _check(tmp_path, toml, capsys)
    assert rc == EXIT_USAGE
    assert "c.toml:9: rooms.1.timezone:" in err
    toml = _TARGET + "[[rooms]]\nid = 'a'\n[[rooms]]\nid = 'b c'\n"
    rc, err = _check(tmp_path, toml, capsys)
    assert "c.toml:6: rooms.1:" in err  # a whole-room error: the second [[rooms]] header
    toml = _TARGET + "[[rooms]]\nid = 'a'\n[[rooms]]\nid = 'b'\n[rooms.recovery]\ngrace_s = -1\n"
    rc, err = _check(tmp_path, toml, capsys)
    assert "c.toml:8: rooms.1.recovery: grace_s:" in err  # a sub-table of the second room


def test_a_bad_environment_variable_is_blamed_on_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEORCH_HTTP__PORT", "-1")
    rc, err = _check(tmp_path, _TARGET + "[http]\nport = 8680\n", capsys)
    assert rc == EXIT_USAGE
    assert "environment variable LIVEORCH_HTTP__PORT: http.port:" in err
    assert "c.toml:" not in err


def test_no_config_file_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check-config"]) == EXIT_USAGE  # nothing configured: no project id either
    err = capsys.readouterr().err
    assert "no config file" in err and "configuration OK" not in err
    monkeypatch.setenv("LIVEORCH_CLOUD__BASE_URL", "http://127.0.0.1:8600")
    monkeypatch.setenv("LIVEORCH_CLOUD__PROJECT_ID", "p1")
    assert main(["check-config"]) == 0
    err = capsys.readouterr().err
    assert "no config file given" in err and "configuration OK" not in err


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # `liveorch run` against the emulator raised "project_id is required" after an OK
        ("[cloud]\nbase_url = 'http://127.0.0.1:8600'\n", "c.toml:1: cloud.project_id: required"),
        ("[cloud]\nproject_id = 'p1'\n", "the real cloud needs AK/SK"),
        (
            "[cloud]\nproject_id = 'p1'\nauth = 'token'\npassword = 'pw-123456'\n",
            "iam_user/cloud.iam_domain",
        ),
        (
            _TARGET + "[http]\npublic_callback_url = 'https://edge.example.com/cb'\n"
            "[[rooms]]\nid = 'a'\n",
            "callbacks.key: required",
        ),
        (  # every start of the room would be refused by the service
            _TARGET + "[[rooms]]\nid = 'a'\nstart = { video_config = { width = 5 } }\n",
            "c.toml:6: rooms.0.start: invalid StartSmartLiveReq: video_config.",
        ),
        (  # the probe would read a typo as a dead stream and restart a healthy job
            _TARGET + "[[rooms]]\nid = 'a'\nplayback_url = 'play.example.com/a.flv'\n",
            "c.toml:6: rooms.0.playback_url: must be a URL",
        ),
    ],
)
def test_what_run_refuses_for_the_target_check_config_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, expected: str
) -> None:
    rc, err = _check(tmp_path, toml, capsys)
    assert rc == EXIT_USAGE
    assert expected in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "edge.example.com"])
def test_remote_bind_without_ops_token_needs_explicit_consent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    rc, err = _check(tmp_path, _TARGET + f"[http]\nhost = '{host}'\n", capsys)
    assert rc == EXIT_USAGE
    assert "c.toml:5: http.host" in err and "allow_unauthenticated_remote" in err
    consent = _TARGET + f"[http]\nhost = '{host}'\nallow_unauthenticated_remote = true\n"
    assert _check(tmp_path, consent, capsys)[0] == 0
    token = _TARGET + f"[http]\nhost = '{host}'\n[ops]\ntoken = 'ops-token-1'\n"
    assert _check(tmp_path, token, capsys)[0] == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_bind_needs_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    assert _check(tmp_path, _TARGET + f"[http]\nhost = '{host}'\n", capsys)[0] == 0


def test_check_config_masks_credentials_inside_urls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        _TARGET + "[store]\nurl = 'postgresql+asyncpg://liveorch:Pg-Pass-9931@db:5432/live'\n"
        "[alerts]\nwebhook_url = 'https://hooks.example.com/services/T01/B02/"
        "xQ7pLm2vRt9sKw4ZbN8cYd3F?token=tok-55aa&room=all'\n"
        "[http]\npublic_callback_url = 'https://edge.example.com/cb?key=k-0981&x=1'\n"
    )
    assert main(["check-config", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for secret in ("Pg-Pass-9931", "xQ7pLm2vRt9sKw4ZbN8cYd3F", "tok-55aa", "k-0981"):
        assert secret not in out
    assert "postgresql+asyncpg://liveorch:***@db:5432/live" in out
    assert "https://hooks.example.com/services/T01/B02/***?token=***&room=all" in out
    assert "https://edge.example.com/cb?key=***&x=1" in out


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("AK-SECRET-0042".encode("utf-16"), "UTF-16"),
        ("AK-SECRET-0042".encode("utf-16-le"), "UTF-16"),
        (b"AK-SECRET-0042\xff", "not UTF-8"),
    ],
)
def test_a_secrets_file_that_is_not_utf8_is_named_not_printed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    raw: bytes,
    problem: str,
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cloud.ak").write_bytes(raw)
    (creds / "cloud.sk").write_text("sk-1")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    rc, err = _check(tmp_path, _TARGET, capsys)
    assert rc == EXIT_USAGE
    assert f"secrets file {creds / 'cloud.ak'}: " in err and problem in err
    assert err.count("\n") == 1
    for leak in ("SECRET", "S\\x00E", "0042"):
        assert leak not in err


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("sqlite+aiosqlite:////tmp/test_sighup_with_a_utf16_secre0/l.db", None),
        ("sqlite+aiosqlite:///var/liveorch.db", None),
        ("https://edge.example.com/callbacks-metastudio-2026/x", None),
        ("postgresql+asyncpg://u:p%40ss@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("http://[::1]:80/x?token=1&a=b", "http://[::1]:80/x?token=***&a=b"),
        (
            "https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrSt0123",
            "https://discord.com/api/webhooks/123456789012345678/***",
        ),
    ],
)
def test_mask_url_keeps_paths_and_masks_credentials(url: str, masked: str | None) -> None:
    from orchestrator.settings import mask_url

    assert mask_url(url) == (masked or url)


def test_url_credentials_are_masked_in_logs(tmp_path: Path) -> None:
    from orchestrator import logging as olog
    from orchestrator.app import register_secrets

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        _TARGET + "[store]\nurl = 'postgresql+asyncpg://liveorch:Log-Pass-4471@db/live'\n"
        "[alerts]\nwebhook_url = 'https://hooks.example.com/x?token=Hook-Tok-8812'\n"
    )
    register_secrets(load_settings(cfg, env=False))
    line = olog.mask_text("connect failed: Log-Pass-4471 / Hook-Tok-8812")
    assert "Log-Pass-4471" not in line and "Hook-Tok-8812" not in line


def test_acl_wildcard_and_known_actions_are_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = _TARGET + "[mqtt]\nacl = { ops = ['*'], panel = ['get', 'insert_script'] }\n"
    assert _check(tmp_path, toml, capsys)[0] == 0


def test_schedule_preview_needs_no_cloud_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tools that never call the cloud do not ask for a project id or AK/SK."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[[rooms]]\nid = 'a'\nwindows = [{ always = true }]\n")
    assert main(["schedule", "preview", "--config", str(cfg)]) == 0
    assert main(["check-config", "--config", str(cfg)]) == EXIT_USAGE
