"""The error tree, split by what the caller must do next.

::

    OrchestratorError
    ├── ConfigError                 fix the configuration; never retried
    ├── TemporaryError(retry_after) try again later (honour retry_after when given)
    │   ├── CloudUnavailable        5xx, network error, APIGW.0201 backend timeout, MSS.00000002/4
    │   ├── Throttled               429 APIGW.0308 (retry_after from Retry-After)
    │   ├── StartOutcomeUnknown     a start was sent but no answer came: LIST before retrying
    │   └── StoreUnavailable        the database connection was lost or refused (also a
    │                               StoreError; defined in ``store.base``)
    └── PermanentError              the same call will fail again; a human or a new input is needed
        ├── AuthError               401/403 (APIGW.0301/APIGW.0303/MSS.00000001) on a signed call
        ├── InvalidRequest          400 MSS.00000003, or our own validation before sending
        ├── NotFound                404 (room or job does not exist)
        └── Conflict                409 (e.g. a second job in a single-job room)

A store outage is temporary like a cloud outage, so the same retry loops wait it out.
Cloud errors carry the operation name, HTTP status, the service's ``error_code`` and
``error_msg`` and the ``X-Request-Id`` so an operator can quote it to support. They never
carry credentials or stream keys: messages are built from the service's answer only.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CloudError",
    "CloudUnavailable",
    "ConfigError",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "OrchestratorError",
    "PermanentError",
    "StartOutcomeUnknown",
    "TemporaryError",
    "Throttled",
]


class OrchestratorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OrchestratorError):
    """The configuration is wrong. ``where`` names the file/field, ``reason`` says what to fix."""

    def __init__(self, reason: str, *, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


class CloudError(OrchestratorError):
    """Mixin data for errors that came back from (or on the way to) MetaStudio."""

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        status: int | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.operation = operation
        self.status = status
        self.error_code = error_code
        self.request_id = request_id
        parts = [message]
        if operation:
            parts.append(f"operation={operation}")
        if status is not None:
            parts.append(f"status={status}")
        if error_code:
            parts.append(f"error_code={error_code}")
        if request_id:
            parts.append(f"request_id={request_id}")
        super().__init__(" ".join(parts))


class TemporaryError(CloudError):
    """Retry later. ``retry_after`` (seconds) is a hint from the service when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class PermanentError(CloudError):
    """Retrying the same call will not help."""


class CloudUnavailable(TemporaryError):
    """The service or the network failed; the call may be retried (reads) or reconciled (writes)."""


class Throttled(TemporaryError):
    """429 APIGW.0308: the tenant's rate limit was hit."""


class StartOutcomeUnknown(TemporaryError):
    """A start request was sent but its answer was lost; a job may exist. List jobs first."""


class AuthError(PermanentError):
    """Credentials or signature rejected; fix AK/SK, token or clock."""


class InvalidRequest(PermanentError):
    """The request is invalid (400 MSS.00000003 or rejected locally before sending)."""


class NotFound(PermanentError):
    """The room or job does not exist."""


class Conflict(PermanentError):
    """The service refused because of the current state (e.g. a job already runs in the room)."""
