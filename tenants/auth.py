"""Who is calling, and for which department: the one caller resolver of every door.

Two ways in: ``Authorization: Bearer <api key>`` (the key names the tenant and carries a role and scopes), or the
browser session with the session's current department. Every door resolves its caller here:

- REST (DRF): ``caller_from_request(request)`` (the authentication classes below ran first);
- ``/v1`` (plain async Django views): ``caller_from_bearer(header=..., scope=...)``;
- the chat and agents WebSocket consumers: ``caller_from_scope(scope)``;
- all of them end in ``caller_resolve(user=..., chosen_tenant_id=..., key=...)``.

Fail closed, and the same answer at every door: signed out 401; a key that is unknown, revoked or expired 401;
a department that is suspended 403 ``tenant_suspended`` (a key's, or a user's whose only departments are suspended);
no membership at all 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from django.contrib.auth.models import User
from rest_framework.authentication import BaseAuthentication, SessionAuthentication, get_authorization_header
from rest_framework.request import Request

from core.errors import NotAuthenticated, NotFound, PermissionDenied, TenantSuspended
from core.logging import tenant_id_var, user_id_var
from tenants.middleware import SESSION_KEY
from tenants.models import ApiKey, Membership, Role, Tenant, role_at_least
from tenants.selectors import api_key_authenticate
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


def _membership_choose(*, user: Any, chosen_tenant_id: int | None) -> Membership:
    """The chosen department if the user belongs to it and it is active, else the first active one (as the pages
    resolve it). None active: 403 ``tenant_suspended`` when the user still belongs to a suspended department, 404
    when the user belongs to none."""
    memberships = list(Membership.unscoped.filter(user_id=user.pk).select_related("tenant").order_by("tenant__name"))
    active = [m for m in memberships if m.tenant.is_active]
    chosen = next((m for m in active if m.tenant_id == chosen_tenant_id), None)
    if chosen is None and active:
        chosen = active[0]
    if chosen is None:
        if memberships:
            raise TenantSuspended()
        raise NotFound("You are not a member of any department.")
    return chosen


def caller_resolve(*, user: Any, chosen_tenant_id: int | None = None, key: ApiKey | None = None) -> Caller:
    """The one resolver. With ``key``: the key's department, role and scopes (its issuer is the user of usage
    records and the actor of audit events). Without: the signed-in user's current department and role."""
    if key is not None:
        if not key.tenant.is_active:
            raise TenantSuspended()
        tenant_id_var.set(key.tenant_id)
        return Caller(tenant=key.tenant, role=key.role, user=key.created_by, key=key, scopes=set(key.scopes or []))
    if user is None or not user.is_authenticated:
        raise NotAuthenticated()
    membership = _membership_choose(user=user, chosen_tenant_id=chosen_tenant_id)
    user_id_var.set(user.pk)
    tenant_id_var.set(membership.tenant_id)
    return Caller(
        tenant=membership.tenant,
        role=membership.role,
        user=cast(User, user),
        key=None,
        scopes=set(ApiKey.Scope.values),
    )


def caller_from_request(request: Request | Any) -> Caller:
    """REST: the caller of a DRF request (API key or session)."""
    user = request.user
    if user is None or not user.is_authenticated:
        raise NotAuthenticated()
    if isinstance(user, ApiKeyPrincipal):
        return caller_resolve(user=None, key=user.key)
    session = getattr(request, "session", None)
    chosen = session.get(SESSION_KEY) if session is not None else None
    return caller_resolve(user=user, chosen_tenant_id=chosen)


def caller_from_scope(scope: dict[str, Any]) -> Caller:
    """WebSockets: the caller of a Channels scope (the session's user and department). Blocking: call it from a
    thread (``database_sync_to_async``)."""
    session = scope.get("session")
    chosen = session.get(SESSION_KEY) if session is not None else None
    return caller_resolve(user=scope.get("user"), chosen_tenant_id=chosen)


def caller_from_bearer(*, header: str, scope: str, address: str | None = None) -> Caller:
    """``/v1``: the caller of ``Authorization: Bearer <key>``; the key is touched and must carry ``scope`` (the door
    counts it against the key's rate with ``tenants.throttling``). Blocking: call it from a thread."""
    scheme, _, raw = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise NotAuthenticated("Send your API key as 'Authorization: Bearer <key>'.")
    key = api_key_authenticate(raw_key=raw.strip(), address=address)
    api_key_touch(key=key)
    if key.created_by_id is not None:
        key.created_by  # noqa: B018  (load the issuer here, in the caller's thread)
    caller = caller_resolve(user=None, key=key)
    caller.require(min_role=Role.VIEWER, scope=scope)
    return caller
