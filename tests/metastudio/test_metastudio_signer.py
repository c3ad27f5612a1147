"""signer.py against the worked examples (§10.3) and the official huaweicloudsdkcore Signer."""

from __future__ import annotations

import hashlib
import types
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.metastudio import signer

AK = "EXAMPLEAK0000000000"
SK = "EXAMPLESKexamplesk0000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
HOST = "metastudio.cn-north-4.myhuaweicloud.com"
DATE = "20240101T120000Z"
NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)

EX1_PATH = f"/v1/{PROJECT}/smart-live-rooms/room-001/smart-live-jobs/job-001/command"
EX1_BODY = (
    b'{"command": "REFRESH_OUTPUT_URL", "params": {"output_urls": '
    b'["rtmp://push.example.com/live"], "stream_keys": ["key123"]}}'
)
EX1_CANONICAL = (
    "POST\n"
    f"/v1/{PROJECT}/smart-live-rooms/room-001/smart-live-jobs/job-001/command/\n"
    "\n"
    "content-type:application/json\n"
    f"host:{HOST}\n"
    f"x-project-id:{PROJECT}\n"
    f"x-sdk-date:{DATE}\n"
    "\n"
    "content-type;host;x-project-id;x-sdk-date\n"
    "15fcecc864fb2dd2ac839308e68f059867732debae50d2ecb386b305e9cb73f5"
)
EX1_AUTH = (
    "SDK-HMAC-SHA256 Access=EXAMPLEAK0000000000, "
    "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
    "Signature=cfa1c660fc762265bac1c7aa626d63cb8e14e31df381c94da84fb51c6493e933"
)
EX2_PATH = f"/v1/{PROJECT}/smart-live-jobs"
EX2_QUERY = [
    ("state", "PROCESSING,WAITING"),
    ("limit", "10"),
    ("offset", "0"),
    ("room_name", "my room"),
]


def _headers() -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Host": HOST,
        "X-Project-Id": PROJECT,
        "X-Sdk-Date": DATE,
    }


def test_example1_canonical_request_string_to_sign_and_authorization() -> None:
    assert len(EX1_BODY) == 121
    names = signer.signed_header_names(_headers())
    canonical = signer.canonical_request("POST", EX1_PATH, [], _headers(), names, EX1_BODY)
    assert canonical == EX1_CANONICAL
    assert signer.string_to_sign(DATE, canonical) == (
        "SDK-HMAC-SHA256\n20240101T120000Z\n"
        "f7681bff17f768da389068628989a21bc412a57a9c87895a3f5e96e2aa5e2abf"
    )
    auth = signer.sign_headers(
        ak=AK, sk=SK, method="POST", path=EX1_PATH, query=[], headers=_headers(), body=EX1_BODY
    )
    assert auth == EX1_AUTH


def test_example2_get_list_with_query() -> None:
    assert signer.canonical_uri(EX2_PATH) == f"/v1/{PROJECT}/smart-live-jobs/"
    assert (
        signer.canonical_query(EX2_QUERY)
        == "limit=10&offset=0&room_name=my%20room&state=PROCESSING%2CWAITING"
    )
    names = signer.signed_header_names(_headers())
    canonical = signer.canonical_request("GET", EX2_PATH, EX2_QUERY, _headers(), names, b"")
    assert canonical.endswith(signer.EMPTY_BODY_SHA256)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert digest == "d87cd3595d0f6b0f3ef875d39caa8a4be815d99329223a8479af6f56203d147a"
    auth = signer.sign_headers(
        ak=AK, sk=SK, method="GET", path=EX2_PATH, query=EX2_QUERY, headers=_headers(), body=b""
    )
    assert auth.endswith(
        "Signature=b47fee2a8e79e4147449824021b8528831b7746b327f512928ffcfe698d7ee8d"
    )


def test_empty_body_constant_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").hexdigest() == signer.EMPTY_BODY_SHA256


def test_sdk_date_formats_utc() -> None:
    assert signer.sdk_date(NOW) == DATE
    plus8 = NOW.astimezone(__import__("datetime").timezone(timedelta(hours=8)))
    assert signer.sdk_date(plus8) == DATE
    assert signer.sdk_date(NOW.replace(tzinfo=None)) == DATE


def test_parse_query_round_trip_keeps_blanks_and_plus() -> None:
    raw = "a=1&b=&c&d=x%20y&e=a+b&&f=%E4%B8%AD"
    assert signer.parse_query(raw) == [
        ("a", "1"),
        ("b", ""),
        ("c", ""),
        ("d", "x y"),
        ("e", "a+b"),
        ("f", "中"),
    ]


def test_canonical_uri_decodes_then_reencodes_segments() -> None:
    assert signer.canonical_uri("/v1/p/a%2Fb/c d") == "/v1/p/a/b/c%20d/"
    assert signer.canonical_uri("/v1/p/") == "/v1/p/"
    assert signer.canonical_uri("") == "/"


# ---------------------------------------------------------------- verify


def _verify(**over: object) -> str:
    kw: dict[str, object] = {
        "authorization": EX1_AUTH,
        "method": "POST",
        "path": EX1_PATH,
        "raw_query": "",
        "headers": _headers(),
        "body": EX1_BODY,
        "secret_for": {AK: SK}.get,
        "now": NOW,
    }
    kw.update(over)
    return signer.verify(**kw)  # type: ignore[arg-type]


def test_verify_accepts_the_worked_example() -> None:
    assert _verify() == AK
    assert _verify(now=NOW + timedelta(seconds=899)) == AK


def test_verify_query_example_from_raw_wire_query() -> None:
    auth = signer.sign_headers(
        ak=AK, sk=SK, method="GET", path=EX2_PATH, query=EX2_QUERY, headers=_headers(), body=b""
    )
    raw = signer.canonical_query(EX2_QUERY)
    assert _verify(authorization=auth, method="GET", path=EX2_PATH, raw_query=raw, body=b"") == AK


@pytest.mark.parametrize(
    ("over", "reason_part"),
    [
        ({"authorization": "Bearer abc"}, "malformed"),
        ({"authorization": EX1_AUTH.replace("Access=", "Acces=")}, "malformed"),
        ({"secret_for": {}.get}, "unknown access key"),
        ({"now": NOW + timedelta(seconds=901)}, "skew"),
        ({"now": NOW - timedelta(hours=1)}, "skew"),
        ({"headers": {k: v for k, v in _headers().items() if k != "X-Sdk-Date"}}, "X-Sdk-Date"),
        ({"headers": {**_headers(), "X-Sdk-Date": "2024-01-01"}}, "format"),
        ({"body": EX1_BODY + b" "}, "does not match"),
        ({"method": "PUT"}, "does not match"),
        ({"path": EX1_PATH + "x"}, "does not match"),
        ({"raw_query": "a=1"}, "does not match"),
        ({"secret_for": {AK: SK + "x"}.get}, "does not match"),
        ({"headers": {k: v for k, v in _headers().items() if k != "X-Project-Id"}}, "missing"),
        (
            {"authorization": EX1_AUTH.replace("content-type;host;", "content-type;")},
            "'host' must be signed",
        ),
        (
            {"authorization": EX1_AUTH.replace(";x-sdk-date", "")},
            "'x-sdk-date' must be signed",
        ),
        (
            {"authorization": EX1_AUTH.replace("content-type;host", "host;content-type")},
            "sorted",
        ),
    ],
)
def test_verify_rejects(over: dict[str, object], reason_part: str) -> None:
    with pytest.raises(signer.SignatureError) as info:
        _verify(**over)
    assert reason_part in info.value.reason
    assert SK not in str(info.value)
    assert "cfa1c660" not in str(info.value)


def test_sign_headers_requires_date_and_keys() -> None:
    headers = {k: v for k, v in _headers().items() if k != "X-Sdk-Date"}
    with pytest.raises(ValueError, match="X-Sdk-Date"):
        signer.sign_headers(
            ak=AK, sk=SK, method="GET", path="/", query=[], headers=headers, body=b""
        )
    with pytest.raises(ValueError, match="required"):
        signer.sign_headers(
            ak=AK, sk="", method="GET", path="/", query=[], headers=_headers(), body=b""
        )


# ---------------------------------------------------------------- oracle: official SDK signer

# The SDK is a test dependency (pyproject [test]): a missing SDK is a broken install, not a skip.
import huaweicloudsdkcore.sdk_request as sdk_request  # noqa: E402
import huaweicloudsdkcore.signer.signer as sdk_signer  # noqa: E402

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)
_segment = st.one_of(
    st.text(alphabet="abcXYZ019-_.~ %/+&=?#:@!$'()*,;中é", max_size=10),
    st.from_regex(r"%[0-9A-Fa-f]{2}", fullmatch=True),
    _text,
)
_header_name = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,14}", fullmatch=True)
_header_value = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"), blacklist_characters="\x85\u2028\u2029"
    ),
    max_size=20,
)


@st.composite
def _requests(draw: st.DrawFn) -> dict[str, object]:
    segments = draw(st.lists(_segment, min_size=0, max_size=5))
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path += "/"
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["state", "limit", "a", "room_name", "ä", "k k", "x"]) | _text,
                st.sampled_from(["", "1", "PROCESSING,WAITING", "my room", "a+b"]) | _text,
            ),
            max_size=6,
        )
    )
    extra = draw(st.dictionaries(_header_name, _header_value, max_size=4))
    headers = {"Host": "metastudio.cn-north-4.myhuaweicloud.com", "X-Sdk-Date": DATE}
    seen = {k.lower() for k in headers}
    for name, value in extra.items():
        if name.lower() not in seen and name.lower() not in (
            "content-type",
            "x-sdk-content-sha256",
        ):
            headers[name] = value
            seen.add(name.lower())
    content_type = draw(
        st.sampled_from([None, "application/json", "application/json;charset=UTF-8"])
    )
    if content_type:
        headers["Content-Type"] = content_type
    body = draw(st.one_of(st.just(b""), st.binary(max_size=64), _text.map(str.encode)))
    if body and draw(st.integers(0, 9)) == 0:
        headers["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD"
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "get"]))
    return {"path": path, "query": query, "headers": headers, "body": body, "method": method}


@settings(
    max_examples=1200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(req=_requests())
def test_identical_to_official_sdk_signer(req: dict[str, object]) -> None:
    path = str(req["path"])
    query = list(req["query"])  # type: ignore[call-overload]
    headers = dict(req["headers"])  # type: ignore[call-overload]
    body = bytes(req["body"])  # type: ignore[call-overload]
    method = str(req["method"])

    sdk_req = sdk_request.SdkRequest(
        method=method,
        schema="https",
        host="metastudio.cn-north-4.myhuaweicloud.com",
        resource_path=path,
        query_params=list(query),
        header_params=dict(headers),
        body=body,
    )
    creds = types.SimpleNamespace(ak=AK, sk=SK)
    signed = sdk_signer.Signer(creds).sign(sdk_req)
    expected = signed.header_params["Authorization"]

    ours = signer.sign_headers(
        ak=AK, sk=SK, method=method, path=path, query=query, headers=headers, body=body
    )
    assert ours == expected
    # the SDK's wire URI carries exactly our canonical query
    wire_query = signer.canonical_query(query)
    assert signed.uri == (f"{path}?{wire_query}" if wire_query else path)
    # and our verifier accepts what the SDK signed, from the wire form
    assert (
        signer.verify(
            authorization=expected,
            method=method,
            path=path,
            raw_query=wire_query,
            headers=headers,
            body=body,
            secret_for={AK: SK}.get,
            now=NOW,
        )
        == AK
    )
