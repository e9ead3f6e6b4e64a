"""Who is calling the REST API, and for which department.

Two ways in: ``Authorization: Bearer <api key>`` (the key names the tenant and carries a role and scopes), or the
browser session (CSRF enforced) with the session's current department.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from django.contrib.auth.models import User
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.request import Request

from core.errors import NotAuthenticated, NotFound, PermissionDenied, TenantSuspended
from core.logging import tenant_id_var, user_id_var
from tenants.models import ApiKey, Role, Tenant, role_at_least
from tenants.selectors import api_key_authenticate, membership_get
from tenants.services import api_key_touch


class ApiKeyPrincipal:
    """request.user for API-key calls: authenticated, bound to one tenant, no Django user."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.username = f"api-key:{key.prefix}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise NotAuthenticated("Send the API key as 'Authorization: Bearer <key>'.")
        key = api_key_authenticate(raw_key=header[1].decode("latin-1"), address=request.META.get("REMOTE_ADDR", ""))
        api_key_touch(key=key)
        tenant_id_var.set(key.tenant_id)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class PortalSessionAuthentication(SessionAuthentication):
    """Session auth that answers 401 (not 403) when there is no session, so clients know to authenticate."""

    def authenticate_header(self, request: Request) -> str:
        return "Session"


@dataclass
class Caller:
    """The resolved caller of an API request: tenant, effective role, the Django user if any, the key if any."""

    tenant: Tenant
    role: str
    user: User | None
    key: ApiKey | None
    scopes: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        if self.key is not None:
            return f"api-key:{self.key.prefix}"
        return self.user.get_username() if self.user else "anonymous"

    def require(self, *, min_role: str = Role.VIEWER, scope: str | None = None) -> None:
        if not role_at_least(self.role, min_role):
            raise PermissionDenied(f"This needs the {min_role} role or higher.")
        if scope is not None and self.key is not None and scope not in self.scopes:
            raise PermissionDenied(f"This API key lacks the '{scope}' scope.")


def caller_from_request(request: Request | Any) -> Caller:
    """Resolve the caller; fail closed: no tenant, no access."""
    user = request.user
    if user is None or not user.is_authenticated:
        raise NotAuthenticated()
    if isinstance(user, ApiKeyPrincipal):
        key = user.key
        return Caller(tenant=key.tenant, role=key.role, user=key.created_by, key=key, scopes=set(key.scopes))
    tenant = getattr(request, "tenant", None) or getattr(getattr(request, "_request", None), "tenant", None)
    if tenant is None:
        raise NotFound("You are not a member of any active department.")
    membership = membership_get(user=user, tenant=tenant)
    if membership is None:
        raise NotFound()
    if not membership.tenant.is_active:
        raise TenantSuspended()
    user_id_var.set(user.pk)
    tenant_id_var.set(tenant.pk)
    return Caller(
        tenant=membership.tenant, role=membership.role, user=cast(User, user), key=None, scopes=set(ApiKey.Scope.values)
    )
