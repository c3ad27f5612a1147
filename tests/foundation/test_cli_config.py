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
