"""MSS_A / MSS_A_HEAD verification against the worked example of metastudio-api.md §6.3."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.callbacks.verify import (
    CallbackAuthError,
    callback_uri,
    mss_signature,
    strip_auth_params,
    verify_callback,
)

KEY = "k3yExample"
URL = "https://cb.example.com/hooks/metastudio?tenant=42"
T = 1704110400
HWT = "6592a940"
SIG_PATH = "97b0527678770c31253a8469ef106b451f07552acf28a645f8588918f40279ac"
SIG_FULL = "a83b4b55b5e654205475fa0f9bc650f84d711b44ef1fc3afd320a35c4df27f5b"


def test_hw_time_of_doc_example() -> None:
    assert format(T, "x") == HWT


def test_signature_path_interpretation_matches_doc() -> None:
    assert callback_uri(URL, "path") == "/hooks/metastudio"
    assert mss_signature(KEY, callback_uri(URL, "path"), HWT) == SIG_PATH


def test_signature_full_interpretation_matches_doc() -> None:
    assert callback_uri(URL, "full") == URL
    assert mss_signature(KEY, callback_uri(URL, "full"), HWT) == SIG_FULL


def test_full_uri_strips_only_auth_params() -> None:
    signed = f"{URL}&hwSecret={SIG_FULL}&hwTime={HWT}"
    assert callback_uri(signed, "full") == URL
    assert callback_uri("https://h/p?hwSecret=a&hwTime=b", "full") == "https://h/p"
    assert strip_auth_params("a=1&hwSecret=x&b=%20&hwTime=y") == "a=1&b=%20"
    assert callback_uri("", "path") == "/"


def _verify(**over: object) -> None:
    kw: dict[str, object] = {
        "auth_type": "MSS_A",
        "path": "/hooks/metastudio",
        "raw_query": f"tenant=42&hwSecret={SIG_PATH}&hwTime={HWT}",
        "headers": {},
        "keys": [KEY],
        "uri_mode": "path",
        "full_url": None,
        "now": float(T),
        "tolerance_s": 300.0,
        "allow_none": False,
    }
    kw.update(over)
    verify_callback(**kw)  # type: ignore[arg-type]


def _reason(**over: object) -> str:
    with pytest.raises(CallbackAuthError) as info:
        _verify(**over)
    assert KEY not in str(info.value) and SIG_PATH not in str(info.value)
    return info.value.reason


def test_mss_a_path_accepted() -> None:
    _verify()


def test_mss_a_full_url_accepted() -> None:
    _verify(
        uri_mode="full",
        raw_query=f"tenant=42&hwSecret={SIG_FULL}&hwTime={HWT}",
        full_url=URL,
    )


def test_mss_a_full_mode_without_url_refused() -> None:
    assert _reason(uri_mode="full", raw_query=f"hwSecret={SIG_FULL}&hwTime={HWT}") == (
        "full_url_unknown"
    )


def test_mss_a_head_accepted_with_any_header_case() -> None:
    headers = [("X-HW-MSS-Secret", SIG_PATH), ("x-Hw-Mss-TIME", HWT)]
    _verify(auth_type="MSS_A_HEAD", raw_query="", headers=headers)
    _verify(auth_type="MSS_A_HEAD", raw_query="", headers=dict(headers))


def test_now_as_datetime() -> None:
    _verify(now=datetime.fromtimestamp(T + 10, tz=UTC))


def test_uppercase_signature_hex_accepted() -> None:
    _verify(raw_query=f"hwSecret={SIG_PATH.upper()}&hwTime={HWT}")


def test_uppercase_time_hex_is_signed_as_received() -> None:
    up = HWT.upper()
    sig = mss_signature(KEY, "/hooks/metastudio", up)
    _verify(raw_query=f"hwSecret={sig}&hwTime={up}")
    # the lower-case signature does not cover the upper-case time string
    assert _reason(raw_query=f"hwSecret={SIG_PATH}&hwTime={up}") == "signature_mismatch"


def test_wrong_key_refused() -> None:
    assert _reason(keys=["other-key"]) == "signature_mismatch"


def test_previous_key_accepted() -> None:
    _verify(keys=["new-current-key", KEY])
    _verify(keys=["", KEY])


def test_no_key_configured_refused() -> None:
    assert _reason(keys=["", ""]) == "no_key_configured"


@pytest.mark.parametrize("delta", [301, -301, 10_000])
def test_time_beyond_tolerance_refused(delta: int) -> None:
    assert _reason(now=float(T + delta)) == "time_out_of_tolerance"


@pytest.mark.parametrize("delta", [300, -300, 0])
def test_time_at_tolerance_edge_accepted(delta: int) -> None:
    _verify(now=float(T + delta))


def test_signature_of_another_url_refused() -> None:
    assert _reason(path="/other/path") == "signature_mismatch"
    sig = mss_signature(KEY, "/hooks/other", HWT)
    assert _reason(raw_query=f"hwSecret={sig}&hwTime={HWT}") == "signature_mismatch"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing_signature"),
        (f"hwTime={HWT}", "missing_signature"),
        (f"hwSecret=&hwTime={HWT}", "missing_signature"),
        (f"hwSecret={SIG_PATH}", "missing_time"),
        (f"hwSecret={SIG_PATH}&hwTime=", "missing_time"),
        (f"hwSecret={SIG_PATH}&hwSecret={SIG_PATH}&hwTime={HWT}", "duplicate_signature"),
        (f"hwSecret={SIG_PATH}&hwTime={HWT}&hwTime={HWT}", "duplicate_time"),
        (f"hwSecret={SIG_PATH}&hwTime=0x{HWT}", "bad_time_format"),
        (f"hwSecret={SIG_PATH}&hwTime=-1", "bad_time_format"),
        (f"hwSecret={SIG_PATH}&hwTime=zz", "bad_time_format"),
        (f"hwSecret={SIG_PATH[:-1]}&hwTime={HWT}", "bad_signature_format"),
        (f"hwSecret={SIG_PATH}00&hwTime={HWT}", "bad_signature_format"),
        (f"hwsecret={SIG_PATH}&hwtime={HWT}", "missing_signature"),
    ],
)
def test_malformed_query_refused(query: str, reason: str) -> None:
    assert _reason(raw_query=query) == reason


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_signature"),
        ({"x-hw-mss-secret": "", "x-hw-mss-time": HWT}, "missing_signature"),
        ({"x-hw-mss-secret": SIG_PATH, "x-hw-mss-time": " "}, "missing_time"),
        ([("x-hw-mss-secret", SIG_PATH), ("X-HW-MSS-SECRET", SIG_PATH)], "duplicate_signature"),
    ],
)
def test_missing_or_empty_headers_refused(headers: object, reason: str) -> None:
    assert _reason(auth_type="MSS_A_HEAD", raw_query="", headers=headers) == reason


def test_head_mode_ignores_query_params() -> None:
    assert _reason(auth_type="MSS_A_HEAD") == "missing_signature"


def test_none_refused_unless_allowed() -> None:
    assert _reason(auth_type="NONE", raw_query="") == "auth_none_not_allowed"
    _verify(auth_type="NONE", raw_query="", allow_none=True)


def test_unknown_auth_type_refused() -> None:
    assert _reason(auth_type="MEITUAN_DEFAULT") == "auth_type_unsupported"


@given(
    key=st.text(min_size=1, max_size=32),
    path=st.from_regex(r"/[a-z0-9/_-]{0,40}", fullmatch=True),
    t=st.integers(min_value=0, max_value=2**40),
)
def test_roundtrip_any_key_path_time(key: str, path: str, t: int) -> None:
    hwt = format(t, "x")
    sig = mss_signature(key, path, hwt)
    _verify(path=path, keys=[key], raw_query=f"hwSecret={sig}&hwTime={hwt}", now=float(t))
    with pytest.raises(CallbackAuthError):
        _verify(path=path + "x", keys=[key], raw_query=f"hwSecret={sig}&hwTime={hwt}", now=float(t))
