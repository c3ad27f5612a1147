"""``SDK-HMAC-SHA256`` request signing, exactly as ``huaweicloudsdkcore`` does it (api doc §10.2).

Pure: no I/O and no clock reads; the time comes in as an argument. The client signs with
:func:`sign_headers`; the emulator verifies with :func:`verify`, so both sides share one
definition of the canonical request and cannot drift apart.

Quirks kept on purpose because the gateway and the official SDK have them:

* the canonical URI percent-decodes the wire path, splits on ``/``, re-encodes each segment and
  always ends in ``/`` (so an encoded ``%2F`` inside an id becomes a real separator);
* query pairs are sorted on their *decoded* key then value, then encoded (space -> ``%20``);
* every header whose name has no ``_`` is signed (lower-cased, sorted), values ``strip()``-ed;
* the payload hash of an empty body is the empty hash; ``X-Sdk-Content-Sha256`` overrides the
  hash of a non-empty body;
* the HMAC key is the raw SK (no date-scoped key derivation as in AWS SigV4).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "EMPTY_BODY_SHA256",
    "SDK_DATE_FORMAT",
    "SignatureError",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "parse_authorization",
    "parse_query",
    "sdk_date",
    "sign_headers",
    "signed_header_names",
    "string_to_sign",
    "verify",
]

ALGORITHM = "SDK-HMAC-SHA256"
EMPTY_BODY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_CONTENT_SHA_HEADER = "x-sdk-content-sha256"
_AUTH_RE = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-fA-F]+)\s*$"
)


class SignatureError(Exception):
    """A signature could not be verified. ``reason`` is safe to show: never the SK or signature."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _encode(value: str) -> str:
    """RFC 3986 encoding as the SDK does it: only ``A-Z a-z 0-9 - _ . ~`` stay literal."""
    return quote(value, safe="~")


def canonical_uri(path: str) -> str:
    """Canonical form of the wire path: decode, split on ``/``, re-encode segments, end in ``/``."""
    uri = "/".join(_encode(segment) for segment in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    """Sorted, encoded ``k=v`` pairs joined by ``&``; the SDK sends exactly this on the wire."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decode a raw query string into pairs (blank values kept, ``+`` is a literal plus)."""
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Names the SDK signs: every header without ``_`` in its name, lower-cased and sorted."""
    return sorted(name.lower() for name in headers if "_" not in name)


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    if not body:
        return EMPTY_BODY_SHA256
    for name, value in headers.items():
        if name.lower() == _CONTENT_SHA_HEADER and value:
            return value
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """The six-part canonical request (§10.2 step 3). Raises if a signed header is absent."""
    lowered = {name.lower(): str(value).strip() for name, value in headers.items()}
    lines = []
    for name in signed_headers:
        if name not in lowered:
            raise SignatureError(f"signed header {name!r} is missing from the request")
        lines.append(f"{name}:{lowered[name]}\n")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            "".join(lines),
            ";".join(signed_headers),
            _payload_hash(headers, body),
        ]
    )


def string_to_sign(sdk_date: str, canonical: str) -> str:
    """``ALGORITHM \\n date \\n hex(sha256(canonical))``."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{sdk_date}\n{digest}"


def _signature(sk: str, to_sign: str) -> str:
    return hmac.new(sk.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def sign_headers(
    *,
    ak: str,
    sk: str,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
) -> str:
    """Return the ``Authorization`` value for a request whose headers already hold X-Sdk-Date.

    ``path`` is the path exactly as sent (percent-encoded), ``query`` the decoded pairs and
    ``body`` the exact bytes sent. Every header without ``_`` in its name is signed.
    """
    if not ak or not sk:
        raise ValueError("ak and sk are required")
    date = _header(headers, "x-sdk-date")
    if not date:
        raise ValueError("X-Sdk-Date header is required before signing")
    names = signed_header_names(headers)
    canonical = canonical_request(method, path, query, headers, names, body)
    signature = _signature(sk, string_to_sign(date.strip(), canonical))
    return f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(names)}, Signature={signature}"


def parse_authorization(authorization: str) -> tuple[str, list[str], str]:
    """Split an Authorization value into (AK, signed header names, signature)."""
    match = _AUTH_RE.match(authorization.strip())
    if match is None:
        raise SignatureError("malformed Authorization header")
    ak, names, signature = match.groups()
    return ak, names.split(";"), signature.lower()


def sdk_date(now: datetime) -> str:
    """``X-Sdk-Date`` value for ``now`` (naive datetimes are taken as UTC)."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return now.strftime(SDK_DATE_FORMAT)


def _parse_sdk_date(value: str) -> datetime:
    try:
        return datetime.strptime(value.strip(), SDK_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("X-Sdk-Date is not in YYYYMMDDTHHMMSSZ format") from None


def verify(
    *,
    authorization: str,
    method: str,
    path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    secret_for: Callable[[str], str | None],
    now: datetime,
    max_skew_s: float = 900,
) -> str:
    """Verify a received request as the API gateway does (§10.4); return the AK on success.

    ``path`` is the raw wire path, ``raw_query`` the raw query string (no ``?``), ``body`` the
    bytes received. The signed header list comes from the Authorization value, not a fixed list.
    Requiring ``host`` to be signed mirrors the gateway (unconfirmed).
    """
    ak, names, signature = parse_authorization(authorization)
    if names != sorted(set(names)) or any(n != n.lower() or not n for n in names):
        raise SignatureError("SignedHeaders must be lower-case, sorted and unique")
    for required in ("host", "x-sdk-date"):
        if required not in names:
            raise SignatureError(f"header {required!r} must be signed")
    date_value = _header(headers, "x-sdk-date")
    if not date_value:
        raise SignatureError("X-Sdk-Date header is missing")
    signed_at = _parse_sdk_date(date_value)
    current = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    if abs((current - signed_at).total_seconds()) > max_skew_s:
        raise SignatureError("X-Sdk-Date is outside the allowed clock skew")
    sk = secret_for(ak)
    if not sk:
        raise SignatureError("unknown access key")
    canonical = canonical_request(method, path, parse_query(raw_query), headers, names, body)
    expected = _signature(sk, string_to_sign(date_value.strip(), canonical))
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
        raise SignatureError("signature does not match")
    return ak
