from __future__ import annotations

import copy
import hmac
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from core.errors import InvalidInput, NotAuthenticated, NotFound, PermissionDenied, TenantSuspended
from core.localcache import LocalCache
from tenants import apikeys
from tenants.lockout import api_key_failure_record, api_key_failures_check
from tenants.models import ApiKey, AuditEvent, Membership, ModelPrice, Quota, Tenant, UsageRecord, role_at_least

# Keys by the SHA-256 of the full key (never the key itself), with their department and creator loaded. Strict: a
# revoked key, a changed role or scopes, a suspended department is refused by the very next request in every process
# (``tenants.signals`` invalidates on every change of a key, a department or a membership).
API_KEY_CACHE: LocalCache[ApiKey | None] = LocalCache("tenants.api_keys", ttl=60.0, strict=True)
MEMBERSHIP_CACHE: LocalCache[Membership | None] = LocalCache("tenants.memberships", ttl=60.0, strict=True)
TENANT_CACHE: LocalCache[Tenant | None] = LocalCache("tenants.tenants", ttl=60.0, strict=True)


def tenant_get_current(*, tenant_id: int) -> Tenant | None:
    """The department as it is now (a suspension applies to the very next request): from the in-process cache that
    every change of a department invalidates at once in every process (strict); the caller gets its own copy."""
    found = TENANT_CACHE.get_or_load(tenant_id, lambda: Tenant.objects.filter(pk=tenant_id).first())
    return copy.copy(found) if found is not None else None


def membership_list_for_user(*, user: User | AnonymousUser) -> QuerySet[Membership]:
    if not user.is_authenticated:
        return Membership.unscoped.none()
    return (
        Membership.unscoped.filter(user_id=user.pk, tenant__status=Tenant.Status.ACTIVE)
        .select_related("tenant")
        .order_by("tenant__name")
    )


def membership_get(*, user: User | AnonymousUser, tenant: Tenant | int) -> Membership | None:
    """The user's membership of the department (with the department), or None. Cached in-process; every change of
    a membership or a department invalidates it at once (strict), so a removed member is refused at once."""
    if not user.is_authenticated or tenant is None:
        return None
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    user_id = user.pk

    def load() -> Membership | None:
        return Membership.objects.for_tenant(tenant_id).select_related("tenant").filter(user_id=user_id).first()

    found = MEMBERSHIP_CACHE.get_or_load((user_id, tenant_id), load)
    return copy.copy(found) if found is not None else None


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


def _api_key_load(prefix: str, hashed: str) -> ApiKey | None:
    key = ApiKey.unscoped.select_related("tenant", "created_by").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.hashed_secret, hashed):
        return None
    return key


def api_key_authenticate(*, raw_key: str, address: str | None = None) -> ApiKey:
    """Resolve a tenant from an API key. Unknown, revoked and expired keys are refused alike (401). With the
    client's ``address``, failures are counted and an address with too many gets 429 (tenants.lockout).

    The key (with its department and creator) comes from an in-process cache that every change of a key, a
    department or a membership invalidates at once; the caller gets its own copy."""
    if address is None:
        return _api_key_authenticate(raw_key)
    api_key_failures_check(address=address)
    try:
        return _api_key_authenticate(raw_key)
    except NotAuthenticated:
        api_key_failure_record(address=address)
        raise


def _api_key_authenticate(raw_key: str) -> ApiKey:
    prefix = apikeys.parse_prefix(raw_key)
    if prefix is None:
        raise NotAuthenticated("The API key is malformed.")
    hashed = apikeys.hash_key(raw_key)
    cached = API_KEY_CACHE.get_or_load(hashed, lambda: _api_key_load(prefix, hashed))
    if cached is None:
        raise NotAuthenticated("The API key is not valid.")
    key = copy.copy(cached)
    if key.revoked_at is not None:
        raise NotAuthenticated("The API key was revoked.")
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise NotAuthenticated("The API key has expired.")
    if not key.tenant.is_active:
        raise TenantSuspended()
    if key.created_by_id is not None:  # a key never outlives its issuer's access, nor exceeds it
        # the issuer's membership from the same strict cache: a removal or a demotion is seen by the next request
        issuer = membership_get(user=key.created_by, tenant=key.tenant_id) if key.created_by is not None else None
        issuer_role = issuer.role if issuer is not None else None
        if issuer_role is None:
            from tenants.services import api_key_revoke_orphaned

            api_key_revoke_orphaned(key=key)
            raise NotAuthenticated("The API key was revoked: the person who issued it left the department.")
        if not role_at_least(issuer_role, key.role):
            key.role = issuer_role  # capped for this request (demotions also cap the stored role)
    return key


def api_key_list(*, tenant: Tenant, active: bool | None = None) -> QuerySet[ApiKey]:
    """A department's keys, newest first; ``active`` True: only usable keys, False: only revoked or expired ones."""
    qs = ApiKey.objects.for_tenant(tenant).order_by("-created_at", "-id")
    if active is None:
        return qs
    usable = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
    return qs.filter(usable) if active else qs.exclude(usable)


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


USAGE_GROUPS = ("day", "user", "adapter", "model", "api_key", "source")


def usage_summary(
    *,
    tenant: Tenant,
    group_by: str,
    since: datetime | None = None,
    until: datetime | None = None,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Settled usage of one department grouped by day, user, adapter, model, API key or source.

    Each row: ``key`` (the group's value as text; "" for the base model / no user / no key), ``label`` (for people),
    ``requests``, ``tokens_in``, ``tokens_out``, ``cost``. Ordered by key (days ascending).
    """
    if group_by not in USAGE_GROUPS:
        raise InvalidInput(f"group_by must be one of: {', '.join(USAGE_GROUPS)}.")
    qs = UsageRecord.objects.for_tenant(tenant)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    for field in ("model", "adapter", "source", "user_id", "api_key_id"):
        value = (filters or {}).get(field)
        if value not in (None, ""):
            qs = qs.filter(**{field: value})
    group_fields: dict[str, tuple[str, ...]] = {
        "day": ("day",),
        "user": ("user_id", "user__username"),
        "adapter": ("adapter",),
        "model": ("model",),
        "api_key": ("api_key_id", "api_key__prefix", "api_key__name"),
        "source": ("source",),
    }
    grouped = qs.annotate(day=TruncDate("created_at")) if group_by == "day" else qs
    fields = group_fields[group_by]
    rows = (
        grouped.values(*fields)
        .annotate(
            requests=Count("id"),
            tokens_in=Coalesce(Sum("tokens_in"), 0),
            tokens_out=Coalesce(Sum("tokens_out"), 0),
            cost=Coalesce(Sum("cost"), Decimal(0)),
        )
        .order_by(fields[0])
    )
    result = []
    for row in rows:
        raw = row[fields[0]]
        key = "" if raw is None else str(raw)
        if group_by == "user":
            label = row["user__username"] or "(API key or deleted user)"
        elif group_by == "api_key":
            label = f"{row['api_key__name']} ({row['api_key__prefix']}…)" if raw is not None else "(browser session)"
        elif group_by == "adapter":
            label = key or "(base model)"
        else:
            label = key
        result.append(
            {
                "key": key,
                "label": label,
                "requests": row["requests"],
                "tokens_in": row["tokens_in"],
                "tokens_out": row["tokens_out"],
                "cost": row["cost"],
            }
        )
    return result


def membership_list(*, tenant: Tenant, role: str | None = None) -> QuerySet[Membership]:
    qs = Membership.objects.for_tenant(tenant).select_related("user").order_by("user__username")
    return qs.filter(role=role) if role else qs


def membership_get_in_tenant(*, tenant: Tenant, user_id: int) -> Membership:
    membership = Membership.objects.for_tenant(tenant).select_related("user").filter(user_id=user_id).first()
    if membership is None:
        raise NotFound()
    return membership


def api_key_get(*, tenant: Tenant, key_id: int) -> ApiKey:
    key = ApiKey.objects.for_tenant(tenant).select_related("created_by").filter(pk=key_id).first()
    if key is None:
        raise NotFound()
    return key


def user_get_by_username(*, username: str) -> User:
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise InvalidInput("There is no active user with that username.", details={"username": ["unknown user"]})
    return user


def tenant_list() -> QuerySet[Tenant]:
    """Every department, by name (platform staff)."""
    return Tenant.objects.order_by("name")


def tenant_get(*, tenant_id: int) -> Tenant:
    """One department by id (platform staff); an unknown id is ``NotFound``."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        raise NotFound()
    return tenant


def quota_get(*, tenant: Tenant) -> Quota:
    """The department's quota row, or an unsaved one with the defaults when none was set yet."""
    return Quota.objects.filter(tenant=tenant).first() or Quota(tenant=tenant)


def model_price_list() -> QuerySet[ModelPrice]:
    return ModelPrice.objects.order_by("model")


def membership_list_all_for_user(*, user_id: int) -> QuerySet[Membership]:
    """Every membership of a user, suspended departments included (for directory sync and deprovisioning)."""
    return Membership.unscoped.filter(user_id=user_id).select_related("tenant").order_by("tenant_id")


def api_key_list_created_by(*, user_id: int, active_only: bool = True) -> QuerySet[ApiKey]:
    """The API keys a user created, across departments (deprovisioning revokes them)."""
    qs = ApiKey.unscoped.filter(created_by_id=user_id).select_related("tenant").order_by("id")
    return qs.filter(revoked_at__isnull=True) if active_only else qs
