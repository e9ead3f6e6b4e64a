from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tenants import apikeys
from tenants.models import ApiKey, AuditEvent, Membership, Quota, Role, Tenant, role_at_least

# Keys in audit details that must never be stored, whatever a caller passes.
_FORBIDDEN_DETAIL_KEYS = {"secret", "password", "key", "token", "text", "prompt", "content", "value", "email"}


def audit_record(
    *,
    action: str,
    tenant: Tenant | None = None,
    actor: User | None = None,
    actor_label: str = "",
    target: Any = None,
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    safe = {k: v for k, v in (details or {}).items() if k.lower() not in _FORBIDDEN_DETAIL_KEYS}
    target_type, target_id = "", ""
    if target is not None:
        target_type = type(target).__name__
        target_id = str(getattr(target, "pk", target))
    label = actor_label or (getattr(actor, "get_username", lambda: "")() if actor is not None else "system")
    return AuditEvent.objects.create(
        action=action,
        tenant=tenant,
        actor=actor if actor is not None and getattr(actor, "pk", None) else None,
        actor_label=label,
        target_type=target_type,
        target_id=target_id,
        ip=ip,
        details=safe,
    )


@transaction.atomic
def tenant_create(*, name: str, slug: str = "", actor: User | None = None, **quota: int) -> Tenant:
    slug = slug or slugify(name)
    if not slug:
        raise InvalidInput("A department needs a name.")
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict(f"A department with the slug '{slug}' already exists.")
    tenant = Tenant.objects.create(name=name, slug=slug)
    Quota.objects.create(tenant=tenant, **quota)
    audit_record(action="tenant.create", tenant=tenant, actor=actor, target=tenant)
    return tenant


@transaction.atomic
def tenant_set_status(*, tenant: Tenant, status: str, actor: User | None = None) -> Tenant:
    if status not in Tenant.Status.values:
        raise InvalidInput(f"Unknown status '{status}'.")
    tenant.status = status
    tenant.save(update_fields=["status"])
    audit_record(action=f"tenant.{status}", tenant=tenant, actor=actor, target=tenant)
    return tenant


@transaction.atomic
def membership_set(*, tenant: Tenant, user: User, role: str, actor: User | None = None) -> Membership:
    if role not in Role.values:
        raise InvalidInput(f"Unknown role '{role}'.")
    membership, created = Membership.objects.for_tenant(tenant).update_or_create(
        user=user, defaults={"role": role, "tenant": tenant}
    )
    audit_record(
        action="membership.add" if created else "membership.role",
        tenant=tenant,
        actor=actor,
        target=membership,
        details={"role": role, "user_id": user.pk},
    )
    if not created:
        _api_keys_follow_issuer(tenant=tenant, user_id=user.pk, role=role, actor=actor)
    return membership


@transaction.atomic
def membership_remove(*, tenant: Tenant, user_id: int, actor: User | None = None) -> None:
    deleted, _ = Membership.objects.for_tenant(tenant).filter(user_id=user_id).delete()
    if not deleted:
        raise NotFound()
    audit_record(action="membership.remove", tenant=tenant, actor=actor, details={"user_id": user_id})
    _api_keys_follow_issuer(tenant=tenant, user_id=user_id, role=None, actor=actor)


def _api_keys_follow_issuer(*, tenant: Tenant, user_id: int, role: str | None, actor: User | None) -> None:
    """The issuer's keys follow the issuer's access: removal (``role`` None) revokes them, a demotion caps their
    role at the new one. Each changed key is an audit event."""
    keys = ApiKey.objects.for_tenant(tenant).select_for_update().filter(created_by_id=user_id, revoked_at__isnull=True)
    now = timezone.now()
    for key in keys:
        if role is None:
            key.revoked_at = now
            key.save(update_fields=["revoked_at"])
            audit_record(
                action="api_key.revoke",
                tenant=tenant,
                actor=actor,
                target=key,
                details={"prefix": key.prefix, "reason": "issuer_removed", "user_id": user_id},
            )
        elif not role_at_least(role, key.role):
            previous, key.role = key.role, role
            key.save(update_fields=["role"])
            audit_record(
                action="api_key.role_capped",
                tenant=tenant,
                actor=actor,
                target=key,
                details={"prefix": key.prefix, "from": previous, "to": role, "user_id": user_id},
            )


@transaction.atomic
def api_key_revoke_orphaned(*, key: ApiKey) -> None:
    """Revoke a key whose issuer is no longer a member (found when the key was presented)."""
    updated = ApiKey.unscoped.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    if updated:
        audit_record(
            action="api_key.revoke",
            tenant=key.tenant,
            actor=None,
            target=key,
            details={"prefix": key.prefix, "reason": "issuer_not_a_member", "user_id": key.created_by_id},
        )


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    role: str = Role.MEMBER,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the full secret is returned once and never stored."""
    if not name.strip():
        raise InvalidInput("An API key needs a name.")
    if role not in Role.values:
        raise InvalidInput(f"Unknown role '{role}'.")
    scopes = scopes if scopes is not None else [ApiKey.Scope.CHAT, ApiKey.Scope.KNOWLEDGE_READ]
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown:
        raise InvalidInput(f"Unknown scopes: {', '.join(sorted(unknown))}.")
    full, prefix, hashed = apikeys.generate_key()
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name.strip(),
        prefix=prefix,
        hashed_secret=hashed,
        role=role,
        scopes=scopes,
        expires_at=expires_at,
        created_by=created_by,
    )
    audit_record(
        action="api_key.create",
        tenant=tenant,
        actor=created_by,
        target=key,
        details={"prefix": prefix, "scopes": scopes, "role": role},
    )
    return key, full


@transaction.atomic
def api_key_revoke(*, tenant: Tenant, key_id: int, actor: User | None = None) -> ApiKey:
    key = ApiKey.objects.for_tenant(tenant).select_for_update().filter(pk=key_id).first()
    if key is None:
        raise NotFound()
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(action="api_key.revoke", tenant=tenant, actor=actor, target=key, details={"prefix": key.prefix})
    return key


_last_touch: dict[int, datetime] = {}


def api_key_touch(*, key: ApiKey) -> None:
    """Record last use, at most once a minute per key and process (no query on the hot path otherwise)."""
    now = timezone.now()
    last = max((t for t in (key.last_used_at, _last_touch.get(key.pk)) if t is not None), default=None)
    if last is None or (now - last).total_seconds() > 60:
        ApiKey.unscoped.filter(pk=key.pk).update(last_used_at=now)
        if len(_last_touch) > 10_000:
            _last_touch.clear()
        _last_touch[key.pk] = last = now
    key.last_used_at = last


@transaction.atomic
def quota_update(*, tenant: Tenant, actor: User | None = None, **fields: Any) -> Quota:
    quota, _ = Quota.objects.get_or_create(tenant=tenant)
    allowed = {f.name for f in Quota._meta.fields} - {"id", "tenant"}
    for name, value in fields.items():
        if name not in allowed:
            raise InvalidInput(f"Unknown quota field '{name}'.")
        if value is None or (isinstance(value, int | float) and value < 0):
            raise InvalidInput(f"{name} must be zero or more.")
        setattr(quota, name, value)
    quota.save()
    audit_record(
        action="quota.update", tenant=tenant, actor=actor, target=quota, details={k: str(v) for k, v in fields.items()}
    )
    return quota


@transaction.atomic
def demo_seed(*, username: str = "admin", password: str | None = None) -> tuple[Tenant, str | None]:
    """Create the demo department and an admin user; return the password only when the user was created."""
    import secrets

    tenant = Tenant.objects.filter(slug="demo").first() or tenant_create(name="Demo Department", slug="demo")
    user = User.objects.filter(username=username).first()
    created_password = None
    if user is None:
        created_password = password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=created_password)
    membership_set(tenant=tenant, user=user, role=Role.OWNER)
    return tenant, created_password


@transaction.atomic
def tenant_update(
    *, tenant: Tenant, actor: User | None = None, name: str | None = None, system_prompt: str | None = None
) -> Tenant:
    """What a department's admins may change about it (status is for platform staff: ``tenant_set_status``)."""
    fields: list[str] = []
    if name is not None:
        if not name.strip():
            raise InvalidInput("A department needs a name.")
        tenant.name = name.strip()
        fields.append("name")
    if system_prompt is not None:
        tenant.system_prompt = system_prompt
        fields.append("system_prompt")
    if fields:
        tenant.save(update_fields=fields)
        audit_record(action="tenant.update", tenant=tenant, actor=actor, target=tenant, details={"fields": fields})
    return tenant


def _owner_count(tenant: Tenant) -> int:
    return Membership.objects.for_tenant(tenant).filter(role=Role.OWNER).count()


@transaction.atomic
def membership_assign(
    *, tenant: Tenant, user: User, role: str, actor_role: str, actor: User | None = None
) -> Membership:
    """Add a member or change a member's role on behalf of an admin: only owners grant or take away the owner
    role, and the last owner stays an owner."""
    if role not in Role.values:
        raise InvalidInput(f"Unknown role '{role}'.")
    current = Membership.objects.for_tenant(tenant).select_for_update().filter(user_id=user.pk).first()
    touches_owner = role == Role.OWNER or (current is not None and current.role == Role.OWNER)
    if touches_owner and actor_role != Role.OWNER:
        raise PermissionDenied("Only an owner can grant or change the owner role.")
    if current is not None and current.role == Role.OWNER and role != Role.OWNER and _owner_count(tenant) <= 1:
        raise Conflict("A department needs at least one owner; make someone else owner first.")
    return membership_set(tenant=tenant, user=user, role=role, actor=actor)


@transaction.atomic
def membership_revoke(*, tenant: Tenant, user_id: int, actor_role: str, actor: User | None = None) -> None:
    """Remove a member on behalf of an admin, with the same owner rules as ``membership_assign``."""
    current = Membership.objects.for_tenant(tenant).select_for_update().filter(user_id=user_id).first()
    if current is None:
        raise NotFound()
    if current.role == Role.OWNER:
        if actor_role != Role.OWNER:
            raise PermissionDenied("Only an owner can remove an owner.")
        if _owner_count(tenant) <= 1:
            raise Conflict("A department needs at least one owner; make someone else owner first.")
    membership_remove(tenant=tenant, user_id=user_id, actor=actor)


def api_key_issue(
    *,
    tenant: Tenant,
    name: str,
    role: str,
    scopes: list[str] | None,
    expires_at: datetime | None,
    issuer_role: str,
    issuer_scopes: set[str] | None,
    created_by: User | None = None,
) -> tuple[ApiKey, str]:
    """``api_key_create`` on behalf of a caller: a key never gets a higher role or more scopes than its issuer has
    (``issuer_scopes`` None: a browser session, which holds every scope of its role)."""
    if role in Role.values and not role_at_least(issuer_role, role):
        raise PermissionDenied(f"You cannot issue a key with the {role} role.")
    if issuer_scopes is not None and scopes is not None:
        extra = set(scopes) - issuer_scopes
        if extra:
            raise PermissionDenied(f"You cannot issue a key with scopes you lack: {', '.join(sorted(extra))}.")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("The expiry date must be in the future.")
    if scopes is None and issuer_scopes is not None:
        scopes = sorted({ApiKey.Scope.CHAT, ApiKey.Scope.KNOWLEDGE_READ} & issuer_scopes)
    return api_key_create(
        tenant=tenant, name=name, role=role, scopes=scopes, expires_at=expires_at, created_by=created_by
    )
