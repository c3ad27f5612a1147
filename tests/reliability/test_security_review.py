"""Security review checks that tests/callbacks, tests/ops, tests/mqtt and tests/emulator lack.

Already covered elsewhere (not repeated): missing/empty/duplicate auth headers and query params,
the signature of another URL, hwTime beyond tolerance, NONE refused unless allowed (verify and
receiver), header-name case, the ops bearer token, the emulator admin API's loopback check, the
MQTT per-client ACL, SQLite file modes. Added here: case and encoding tricks, a captured
signature reused with another time, malformed hwTime/hwSecret shapes, an empty key list, and the
configuration guards (NONE needs allow_none; an empty ops token must not switch auth off;
loopback is the default bind address).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.callbacks.verify import CallbackAuthError, mss_signature, verify_callback
from orchestrator.errors import ConfigError
from orchestrator.settings import HttpSettings, Settings, load_settings

KEY = "review-key"
PATH = "/callbacks/metastudio"
NOW = 1_800_000_000
HWT = format(NOW, "x")
SIG = mss_signature(KEY, PATH, HWT)


def _reason(
    *,
    auth_type: str = "MSS_A_HEAD",
    path: str = PATH,
    secret: str = SIG,
    hw_time: str = HWT,
    keys: tuple[str, ...] = (KEY,),
    now: int = NOW,
) -> str | None:
    try:
        verify_callback(
            auth_type=auth_type,
            path=path,
            raw_query=f"hwSecret={secret}&hwTime={hw_time}",
            headers={"x-hw-mss-secret": secret, "x-hw-mss-time": hw_time},
            keys=list(keys),
            uri_mode="path",
            full_url=None,
            now=float(now),
        )
    except CallbackAuthError as exc:
        return exc.reason
    return None


def test_genuine_request_accepted_in_both_modes() -> None:
    assert _reason() is None
    assert _reason(auth_type="MSS_A") is None


@pytest.mark.parametrize("auth_type", ["mss_a_head", "Mss_A_Head", "MSS_A_HEAD ", "MSS-A", "none"])
def test_auth_type_case_tricks_refused(auth_type: str) -> None:
    assert _reason(auth_type=auth_type) == "auth_type_unsupported"


@pytest.mark.parametrize(
    "path",
    [
        "/Callbacks/metastudio",
        "/callbacks/metastudio/",
        "/callbacks//metastudio",
        "/callbacks/metastudio%20",
        "/callbacks/./metastudio",
        "/CALLBACKS/METASTUDIO",
    ],
)
def test_path_case_and_encoding_tricks_refused(path: str) -> None:
    """The signature binds the exact path: no normalisation that would let one sign another."""
    assert _reason(path=path) == "signature_mismatch"


def test_captured_signature_reused_with_a_fresh_time_refused() -> None:
    fresh = format(NOW + 600, "x")
    assert _reason(hw_time=fresh, now=NOW + 600) == "signature_mismatch"


def test_captured_request_replayed_after_tolerance_refused() -> None:
    assert _reason(now=NOW + 301) == "time_out_of_tolerance"
    assert _reason(now=NOW - 301) == "time_out_of_tolerance"


def test_uppercase_time_signed_as_lowercase_refused() -> None:
    """hwTime is signed as received: changing its case changes what was signed."""
    upper = HWT.upper()
    if upper != HWT:
        assert _reason(hw_time=upper) == "signature_mismatch"


@pytest.mark.parametrize(
    "hw_time", ["0x" + HWT, "+" + HWT, "-" + HWT, HWT + "g", "1" * 17, "\uff16"]
)
def test_malformed_time_refused(hw_time: str) -> None:
    assert _reason(hw_time=hw_time) == "bad_time_format"


@pytest.mark.parametrize(
    "secret", [SIG[:-1], SIG + "0", SIG[:-1] + "g", "0x" + SIG[2:], SIG[:32], "*" * 64]
)
def test_malformed_signature_refused(secret: str) -> None:
    assert _reason(secret=secret) == "bad_signature_format"


def test_all_zero_signature_refused() -> None:
    assert _reason(secret="0" * 64) == "signature_mismatch"


def test_only_empty_keys_refuse_everything() -> None:
    assert _reason(keys=("", "")) == "no_key_configured"
    # an empty key is never tried: the HMAC of the empty key does not open the door
    empty_sig = mss_signature("", PATH, HWT)
    assert _reason(secret=empty_sig, keys=("", KEY)) == "signature_mismatch"


# --- configuration guards --------------------------------------------------------------


_EMU = '[cloud]\nbase_url = "http://127.0.0.1:8600"\nproject_id = "p1"\n'


def _write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "liveorch.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_auth_none_needs_allow_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_none"):
        load_settings(_write(tmp_path, '[callbacks]\nauth_type = "NONE"\n'), env=False)
    ok = load_settings(
        _write(tmp_path, _EMU + '[callbacks]\nauth_type = "NONE"\nallow_none = true\n'), env=False
    )
    assert ok.callbacks.auth_type == "NONE"


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_ops_token_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    """An empty ops.token switched the token guard off (fail-open); it must fail the config."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "ops.token").write_text(content)
    cfg = _write(tmp_path, f'secrets_dir = "{secrets}"\n')
    with pytest.raises(ConfigError, match=r"ops\.token is empty"):
        load_settings(cfg, env=False)
    with pytest.raises(ConfigError, match=r"ops\.token is empty"):
        load_settings(_write(tmp_path, '[ops]\ntoken = ""\n'), env=False)


def test_ops_and_callbacks_bind_loopback_by_default() -> None:
    assert HttpSettings().host == "127.0.0.1"
    assert Settings().http.host == "127.0.0.1"
    assert Settings().callbacks.auth_type == "MSS_A_HEAD"
    assert Settings().callbacks.allow_none is False
