"""What the sections share: the frozen, closed section base and the field checks
(URLs, header values, time zones) several sections use."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr


def http_url(v: str | None) -> str | None:
    """An http(s) URL with a host, or None (the message never repeats the value: it may hold
    a token)."""
    if v is None:
        return v
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(v)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != -1
    except ValueError:  # e.g. a port that is not a number
        ok = False
    if not ok or any(c.isspace() for c in v):
        raise ValueError("must be an http:// or https:// URL with a host")
    return v


def header_value(v: Any) -> Any:
    """Secrets and ids that go into HTTP headers: printable ASCII without spaces (a newline from
    an editor would make every signed call fail). The value is never quoted."""
    if v is None:
        return v
    text = v.get_secret_value() if isinstance(v, SecretStr) else str(v)
    if not text or any(not (0x21 <= ord(c) <= 0x7E) for c in text):
        raise ValueError("must be non-empty printable ASCII without spaces or control characters")
    return v


def iana_timezone(v: str | None) -> str | None:
    if v is None:
        return v
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(v)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown IANA time zone {v!r} (e.g. 'Asia/Shanghai')") from None
    return v


class Section(BaseModel):
    # inf/nan are valid TOML floats but no timeout, rate or size the daemon uses can be either
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
