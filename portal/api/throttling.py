from __future__ import annotations

from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from portal.api.auth import ApiKeyPrincipal


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
