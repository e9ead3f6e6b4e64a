from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet
from django.utils import timezone

from portal.errors import NotAuthenticated, NotFound, PermissionDenied, TenantSuspended
from tenants import apikeys
from tenants.models import ApiKey, AuditEvent, Membership, Tenant, role_at_least


def membership_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Membership]:
    if not user.is_authenticated:
        return Membership.unscoped.none()
    return (
        Membership.unscoped.filter(user_id=user.pk, tenant__status=Tenant.Status.ACTIVE)
        .select_related("tenant")
        .order_by("tenant__name")
    )


def membership_get(*, user: User | AnonymousUser, tenant: Tenant | int) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.for_tenant(tenant).select_related("tenant").filter(user_id=user.pk).first()


def membership_require(*, user: User | AnonymousUser, tenant: Tenant | None, min_role: str = "viewer") -> Membership:
    """The one role check: anonymous → 401, no membership → 404 (do not reveal the tenant), low role → 403."""
    if not user.is_authenticated:
        raise NotAuthenticated()
    if tenant is None:
        raise NotFound("You are not a member of any department.")
    membership = membership_get(user=user, tenant=tenant)
    if membership is None:
        raise NotFound()
    if not membership.tenant.is_active:
        raise TenantSuspended()
    if not role_at_least(membership.role, min_role):
        raise PermissionDenied(f"This needs the {min_role} role or higher.")
    return membership


def api_key_authenticate(*, raw_key: str) -> ApiKey:
    """Resolve a tenant from an API key. Unknown, revoked and expired keys are refused alike (401)."""
    prefix = apikeys.parse_prefix(raw_key)
    if prefix is None:
        raise NotAuthenticated("The API key is malformed.")
    key = ApiKey.unscoped.select_related("tenant").filter(prefix=prefix).first()
    if key is None or not apikeys.matches(raw_key, key.hashed_secret):
        raise NotAuthenticated("The API key is not valid.")
    if key.revoked_at is not None:
        raise NotAuthenticated("The API key was revoked.")
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise NotAuthenticated("The API key has expired.")
    if not key.tenant.is_active:
        raise TenantSuspended()
    return key


def api_key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.for_tenant(tenant).order_by("-created_at")


def audit_event_list(*, tenant: Tenant | None, filters: dict[str, Any] | None = None) -> QuerySet[AuditEvent]:
    """Tenant admins see their tenant's events; ``tenant=None`` (platform staff only) sees all."""
    qs = AuditEvent.objects.all()
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    filters = filters or {}
    if filters.get("action"):
        qs = qs.filter(action__startswith=filters["action"])
    if filters.get("actor"):
        qs = qs.filter(actor_label__icontains=filters["actor"])
    if filters.get("tenant_id") and tenant is None:
        qs = qs.filter(tenant_id=filters["tenant_id"])
    if filters.get("since"):
        qs = qs.filter(created_at__gte=filters["since"])
    if filters.get("until"):
        qs = qs.filter(created_at__lte=filters["until"])
    return qs


def tenant_get_for_user(*, user: User | AnonymousUser, tenant_id: int) -> Tenant:
    membership = membership_get(user=user, tenant=tenant_id)
    if membership is None or not membership.tenant.is_active:
        raise NotFound()
    return membership.tenant


def require_staff(*, user: User | AnonymousUser) -> None:
    if not user.is_authenticated:
        raise NotAuthenticated()
    if not getattr(user, "is_staff", False):
        raise PermissionDenied("Platform staff only.")
