"""The MetaStudio cloud boundary: signing, auth, rate limits, models and the async client."""

from __future__ import annotations

from orchestrator.metastudio.auth import AkSkAuth, IamTokenAuth
from orchestrator.metastudio.client import MetaStudioClient
from orchestrator.metastudio.ratelimit import ApiGroup, RateLimits, RateSpec

__all__ = ["AkSkAuth", "ApiGroup", "IamTokenAuth", "MetaStudioClient", "RateLimits", "RateSpec"]
