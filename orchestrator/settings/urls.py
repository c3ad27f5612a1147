"""Credentials inside configured URLs: found (for the log redactor) and masked (for dumps)."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.redaction import is_secret_key
from orchestrator.settings.model import Settings

_SECRET_QUERY_KEYS = frozenset({"sig", "auth", "apikey", "access_token", "code", "pass", "pwd"})
_TOKEN_LIKE = re.compile(r"^[A-Za-z0-9_\-.~=%+]{16,}$")


def _token_like(part: str) -> bool:
    """A path or query value that looks like a credential: a long opaque chunk with letters
    and digits (webhook URLs carry their token in the path, e.g. …/services/T0/B0/<token>);
    words joined by - or _ (a directory or route name) are not."""
    if not _TOKEN_LIKE.match(part):
        return False
    if not (any(ch.isdigit() for ch in part) and any(ch.isalpha() for ch in part)):
        return False
    return max(len(w) for w in re.split(r"[-_.~]", part)) >= 16


#: schemes whose path is a route (may hold a token); a database URL's path is a file name
_ROUTE_SCHEMES = frozenset({"http", "https", "rtmp", "rtmps", "ws", "wss"})


def url_secrets(url: str) -> list[str]:
    """The credential parts of ``url``: userinfo password, secret-named query values and
    token-like path segments or query values."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found: list[str] = []
    if password:
        found += [password, unquote(password)]
    if parts.scheme in _ROUTE_SCHEMES:
        found += [seg for seg in parts.path.split("/") if _token_like(seg)]
    for key, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_secret_key(key) or key.lower() in _SECRET_QUERY_KEYS or _token_like(value):
            found.append(value)
    return [f for f in dict.fromkeys(found) if f]


def mask_url(url: str) -> str:
    """``url`` with every part :func:`url_secrets` finds replaced by ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"  # unparseable: print nothing of it
    netloc = parts.netloc
    if password:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    path = parts.path
    if parts.scheme in _ROUTE_SCHEMES:
        path = "/".join("***" if _token_like(seg) else seg for seg in path.split("/"))
    query = parts.query
    if query:
        items = []
        for item in query.split("&"):
            key, sep, value = item.partition("=")
            secret = is_secret_key(key) or key.lower() in _SECRET_QUERY_KEYS
            items.append(f"{key}{sep}***" if sep and (secret or _token_like(value)) else item)
        query = "&".join(items)
    if "://" not in url:
        return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))
    # by hand: urlunsplit drops the empty authority of sqlite:////abs/path
    out = f"{parts.scheme}://{netloc}{path}"
    out += f"?{query}" if query else ""
    return out + (f"#{parts.fragment}" if parts.fragment else "")


def _mask_urls(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, dict):
        return {k: _mask_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_urls(v) for v in value]
    return value


def config_url_secrets(s: Settings) -> list[str]:
    """Credentials inside the configured URLs (for the log redactor)."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and "://" in value:
            found.extend(url_secrets(value))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(s.model_dump(mode="json"))
    return found


def masked_dump(s: Settings) -> dict[str, Any]:
    """The effective configuration as JSON-able data with every secret masked: secret fields
    by type, credentials inside URLs (store.url password, webhook tokens) by :func:`mask_url`."""
    dumped: dict[str, Any] = _mask_urls(s.model_dump(mode="json"))
    return dumped
