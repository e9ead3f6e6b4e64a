from __future__ import annotations

from math import ceil
from types import SimpleNamespace
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from core.errors import QuotaExceeded
from tenants.auth import ApiKeyPrincipal
from tenants.errors import QuotaReason, TenantErrorCode


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per minute per API key (sessions are throttled per user)."""

    scope = "api_key"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = request.user
        if isinstance(user, ApiKeyPrincipal):
            ident = f"key:{user.key.prefix}"
        elif user is not None and user.is_authenticated:
            ident = f"user:{user.pk}"
        else:
            ident = f"anon:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


def api_key_throttle_check(*, key: Any, request: Any = None) -> None:
    """The same per-key budget for doors outside DRF (the OpenAI-compatible /v1/): raise 429 with Retry-After."""
    throttle = ApiKeyRateThrottle()
    fake = SimpleNamespace(user=ApiKeyPrincipal(key), META=getattr(request, "META", {}))
    if not throttle.allow_request(fake, None):  # type: ignore[arg-type]
        wait = max(1, ceil(throttle.wait() or 1))
        raise QuotaExceeded(
            f"Too many requests for this API key; try again in {wait} seconds.",
            code=TenantErrorCode.RATE_LIMIT_EXCEEDED,
            retry_after=wait,
            details={"reason": QuotaReason.API_KEY_RATE, "retry_after": wait},
        )
