"""Authentication for MetaStudio calls as ``httpx.Auth`` (api doc §10).

* :class:`AkSkAuth` signs each request with ``SDK-HMAC-SHA256`` over the exact bytes sent.
* :class:`IamTokenAuth` sends an IAM ``X-Auth-Token``: fetched from ``POST /v3/auth/tokens``,
  cached, refreshed ahead of its 24 h expiry and once after a 401, with an :class:`asyncio.Lock`
  so concurrent requests never trigger two refreshes.

Secrets live in private attributes and never reach a repr, a log field or an exception text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from orchestrator.errors import AuthError, CloudUnavailable
from orchestrator.metastudio import signer
from orchestrator.metastudio.errormap import error_from_response

__all__ = ["AkSkAuth", "IamTokenAuth", "WallClock", "signable_headers"]

log = structlog.get_logger(__name__)

WallClock = Callable[[], datetime]

# Headers that proxies or the transport may add, drop or rewrite; the SDK does not sign them
# either (``requests`` adds them after signing). Everything else without ``_`` is signed.
_UNSIGNED = frozenset(
    {
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
TOKEN_LIFETIME = timedelta(hours=24)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def signable_headers(headers: httpx.Headers) -> dict[str, str]:
    """The headers to sign: all but hop-by-hop/transport ones (see ``_UNSIGNED``)."""
    return {name: value for name, value in headers.items() if name.lower() not in _UNSIGNED}


def _sign_request(
    request: httpx.Request, *, ak: str, sk: str, clock: WallClock, extra: Mapping[str, str]
) -> None:
    for name, value in extra.items():
        request.headers[name] = value
    request.headers["X-Sdk-Date"] = signer.sdk_date(clock())
    if "host" not in request.headers:
        request.headers["Host"] = request.url.netloc.decode("ascii")
    path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
    query = signer.parse_query(request.url.query.decode("ascii"))
    request.headers["Authorization"] = signer.sign_headers(
        ak=ak,
        sk=sk,
        method=request.method,
        path=path,
        query=query,
        headers=signable_headers(request.headers),
        body=request.content,
    )


class AkSkAuth(httpx.Auth):
    """AK/SK signing; adds ``X-Project-Id`` and, for temporary credentials, ``X-Security-Token``."""

    requires_request_body = True

    def __init__(
        self,
        ak: str,
        sk: str,
        project_id: str | None,
        security_token: str | None = None,
        clock: WallClock = _utcnow,
    ) -> None:
        if not ak or not sk:
            raise ValueError("ak and sk are required")
        self._ak = ak
        self._sk = sk
        self._project_id = project_id
        self._security_token = security_token
        self._clock = clock

    def __repr__(self) -> str:
        return f"AkSkAuth(project_id={self._project_id!r})"

    def sign(self, request: httpx.Request) -> None:
        """Sign ``request`` in place (the body must already be read)."""
        extra: dict[str, str] = {}
        if self._project_id:
            extra["X-Project-Id"] = self._project_id
        if self._security_token:
            extra["X-Security-Token"] = self._security_token
        _sign_request(request, ak=self._ak, sk=self._sk, clock=self._clock, extra=extra)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sign(request)
        yield request


def _password_body(user: str, password: str, domain: str, scope: dict[str, Any]) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "password": password, "domain": {"name": domain}}
                },
            },
            "scope": scope,
        }
    }


def _parse_expiry(body: bytes, issued: datetime) -> datetime:
    """``token.expires_at`` from the IAM answer, else issue time + 24 h."""
    try:
        raw = json.loads(body)["token"]["expires_at"]
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, KeyError, TypeError):
        return issued + TOKEN_LIFETIME


class IamTokenAuth(httpx.Auth):
    """IAM token auth (async only). Build with :meth:`with_password` or :meth:`with_aksk`.

    The token is refreshed when less than ``refresh_margin`` of its life is left, and once when
    a call answers 401 (the token may be revoked early, e.g. after a password change).
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        iam_url: str,
        body: dict[str, Any],
        signer_auth: AkSkAuth | None = None,
        refresh_margin: timedelta = timedelta(hours=1),
        clock: WallClock = _utcnow,
    ) -> None:
        self._http = http
        self._url = iam_url.rstrip("/") + "/v3/auth/tokens"
        self._body = body
        self._signer_auth = signer_auth
        self._margin = refresh_margin
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at: datetime | None = None
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"IamTokenAuth(url={self._url!r}, has_token={self._token is not None})"

    @staticmethod
    def _scope(project_id: str | None, project_name: str | None) -> dict[str, Any]:
        if project_id:
            return {"project": {"id": project_id}}
        if project_name:
            return {"project": {"name": project_name}}
        raise ValueError("project_id or project_name is required for a project-scoped token")

    @classmethod
    def with_password(
        cls,
        *,
        http: httpx.AsyncClient,
        iam_url: str,
        user: str,
        password: str,
        domain: str,
        project_id: str | None = None,
        project_name: str | None = None,
        **kw: Any,
    ) -> IamTokenAuth:
        """Password + project-scoped token body (§10.1)."""
        body = _password_body(user, password, domain, cls._scope(project_id, project_name))
        return cls(http=http, iam_url=iam_url, body=body, **kw)

    @classmethod
    def with_aksk(
        cls,
        *,
        http: httpx.AsyncClient,
        iam_url: str,
        ak: str,
        sk: str,
        project_id: str | None = None,
        project_name: str | None = None,
        security_token: str | None = None,
        **kw: Any,
    ) -> IamTokenAuth:
        """Token obtained by an AK/SK-signed request. The body shape (``methods: ["hw_ak_sk"]``,
        no secret in it) is unconfirmed; the request itself is signed like any AK/SK call.
        """
        body = {
            "auth": {
                "identity": {"methods": ["hw_ak_sk"]},
                "scope": cls._scope(project_id, project_name),
            }
        }
        clock = kw.get("clock", _utcnow)
        auth = AkSkAuth(ak, sk, None, security_token=security_token, clock=clock)
        return cls(http=http, iam_url=iam_url, body=body, signer_auth=auth, **kw)

    def _fresh(self) -> bool:
        return (
            self._token is not None
            and self._expires_at is not None
            and self._clock() < self._expires_at - self._margin
        )

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token; fetch a new one if none, close to expiry, or equal to ``stale``."""
        async with self._lock:
            if self._fresh() and self._token is not None and self._token != stale:
                return self._token
            return await self._fetch()

    async def _fetch(self) -> str:
        content = json.dumps(self._body).encode()
        request = self._http.build_request(
            "POST",
            self._url,
            content=content,
            headers={"Content-Type": "application/json;charset=utf8"},
        )
        if self._signer_auth is not None:
            self._signer_auth.sign(request)
        issued = self._clock()
        try:
            response = await self._http.send(request)
        except httpx.HTTPError as exc:
            raise CloudUnavailable(
                f"IAM token request failed: {type(exc).__name__}", operation="iam_token"
            ) from exc
        if response.status_code not in (200, 201):
            error = error_from_response("iam_token", response)
            log.warning(
                "iam_token_refresh_failed",
                status=response.status_code,
                error_code=error.error_code,
                request_id=error.request_id,
            )
            raise error
        token: str | None = response.headers.get("X-Subject-Token")
        if not token:
            raise AuthError("IAM answered without X-Subject-Token", operation="iam_token")
        self._token = token
        self._expires_at = _parse_expiry(response.content, issued)
        self.refreshes += 1
        log.info("iam_token_refreshed", expires_at=self._expires_at.isoformat())
        return token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("IamTokenAuth works with httpx.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["X-Auth-Token"] = token
        response = yield request
        if response.status_code == 401:
            await response.aclose()
            request.headers["X-Auth-Token"] = await self.token(stale=token)
            yield request
