"""Writes of enterprise sign-in. Keyword-only; memberships and API keys change only through tenants' services, and
every change leaves an audit event (details never hold tokens, secrets, e-mail addresses or assertions)."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyotp
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from core.errors import Conflict, InvalidInput, NotFound
from identity import realtime
from identity.errors import AccountDeactivated, MfaInvalid, SignInRefused
from identity.models import (
    BreakGlassAccount,
    DirectoryGroup,
    ExternalIdentity,
    GroupMapping,
    IdentityProvider,
    ReplayGuard,
    SignInPolicy,
    TotpDevice,
)
from identity.selectors import POLICY_CACHE_KEY
from tenants import services as tenant_services
from tenants.models import ROLE_RANK, Role, Tenant
from tenants.selectors import api_key_list_created_by, membership_list_all_for_user

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ providers
def _policy_cache_clear() -> None:
    cache.delete(POLICY_CACHE_KEY)


def _policy_changed() -> None:
    """Forget the cached policy now and again after commit (a request in between may have cached the old one)."""
    _policy_cache_clear()
    transaction.on_commit(_policy_cache_clear)


def _validate_provider_fields(*, kind: str, fields: dict[str, Any]) -> None:
    if kind == IdentityProvider.Kind.OIDC:
        missing = [f for f in ("issuer", "client_id", "client_secret") if not str(fields.get(f) or "").strip()]
        if missing:
            raise InvalidInput(f"An OpenID Connect provider needs: {', '.join(missing)}.")
        if not str(fields["issuer"]).startswith(("https://", "http://")):
            raise InvalidInput("The issuer is a URL (https://login.example.com/...).")
    elif kind == IdentityProvider.Kind.SAML:
        missing = [f for f in ("idp_entity_id", "idp_sso_url", "idp_certificate") if not str(fields.get(f) or "")]
        if missing:
            raise InvalidInput(f"A SAML provider needs: {', '.join(missing)}.")
        if "BEGIN CERTIFICATE" not in str(fields["idp_certificate"]):
            raise InvalidInput("The IdP certificate is a PEM block (-----BEGIN CERTIFICATE----- ...).")
    else:
        raise InvalidInput("A provider is either 'oidc' or 'saml'.")


PROVIDER_FIELDS = (
    "name",
    "issuer",
    "client_id",
    "client_secret",
    "scopes",
    "idp_entity_id",
    "idp_sso_url",
    "idp_certificate",
    "groups_claim",
    "enabled",
)


@transaction.atomic
def provider_create(
    *, kind: str, name: str, slug: str = "", actor: User | None = None, source: str = "console", **fields: Any
) -> IdentityProvider:
    slug = slug or slugify(name)
    if not name.strip() or not slug:
        raise InvalidInput("A provider needs a name.")
    if IdentityProvider.objects.filter(slug=slug).exists():
        raise Conflict(f"A provider with the slug '{slug}' already exists.")
    unknown = set(fields) - set(PROVIDER_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown provider fields: {', '.join(sorted(unknown))}.")
    _validate_provider_fields(kind=kind, fields=fields)
    provider = IdentityProvider.objects.create(kind=kind, name=name.strip(), slug=slug, source=source, **fields)
    tenant_services.audit_record(
        action="identity.provider.create",
        actor=actor,
        target=provider,
        details={"provider": slug, "kind": kind, "source": source},
    )
    _policy_changed()
    return provider


@transaction.atomic
def provider_update(*, provider: IdentityProvider, actor: User | None = None, **fields: Any) -> IdentityProvider:
    unknown = set(fields) - set(PROVIDER_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown provider fields: {', '.join(sorted(unknown))}.")
    if fields.get("client_secret") == "":
        fields.pop("client_secret")  # blank in the form: keep the stored secret
    merged = {f: getattr(provider, f) for f in PROVIDER_FIELDS} | fields
    _validate_provider_fields(kind=provider.kind, fields=merged)
    for name, value in fields.items():
        setattr(provider, name, value)
    provider.save()
    tenant_services.audit_record(
        action="identity.provider.update",
        actor=actor,
        target=provider,
        details={"provider": provider.slug, "fields": sorted(f for f in fields if f != "client_secret")},
    )
    _policy_changed()
    return provider


@transaction.atomic
def provider_delete(*, provider: IdentityProvider, actor: User | None = None) -> None:
    slug = provider.slug
    provider.delete()
    tenant_services.audit_record(action="identity.provider.delete", actor=actor, details={"provider": slug})
    _policy_changed()


_env_synced: tuple[str, ...] | None = None


def provider_sync_from_environment() -> IdentityProvider | None:
    """The provider named by ``OIDC_ISSUER``, ``OIDC_CLIENT_ID`` and ``OIDC_CLIENT_SECRET`` (slug ``sso``), created or
    updated to match; idempotent and cheap after the first call in a process."""
    global _env_synced
    issuer = getattr(settings, "OIDC_ISSUER", "")
    client_id = getattr(settings, "OIDC_CLIENT_ID", "")
    secret = getattr(settings, "OIDC_CLIENT_SECRET", "")
    if not (issuer and client_id and secret):
        return None
    name = getattr(settings, "OIDC_PROVIDER_NAME", "") or "Company sign-in"
    groups_claim = getattr(settings, "OIDC_GROUPS_CLAIM", "") or "groups"
    wanted = (issuer, client_id, hashlib.sha256(secret.encode()).hexdigest(), name, groups_claim)
    existing = IdentityProvider.objects.filter(slug="sso").first()
    if _env_synced == wanted and existing is not None:
        return existing
    values: dict[str, Any] = {
        "issuer": issuer,
        "client_id": client_id,
        "client_secret": secret,
        "name": name,
        "groups_claim": groups_claim,
    }
    if existing is None:
        existing = provider_create(kind=IdentityProvider.Kind.OIDC, slug="sso", source="environment", **values)
    elif existing.source == IdentityProvider.Source.ENVIRONMENT:
        changed = {k: v for k, v in values.items() if getattr(existing, k) != v}
        if changed:
            existing = provider_update(provider=existing, **changed)
    _env_synced = wanted
    return existing


@transaction.atomic
def scim_token_issue(*, provider: IdentityProvider, actor: User | None = None) -> str:
    """A new SCIM bearer token for the provider (replacing the old one); the secret is returned once."""
    prefix = secrets.token_hex(6)
    token = f"scim_{prefix}_{secrets.token_urlsafe(32)}"
    provider.scim_token_prefix = prefix
    provider.scim_token_hash = hashlib.sha256(token.encode()).hexdigest()
    provider.save(update_fields=["scim_token_prefix", "scim_token_hash"])
    tenant_services.audit_record(
        action="identity.scim_token.issue", actor=actor, target=provider, details={"provider": provider.slug}
    )
    return token


# ------------------------------------------------------------------------------------------------ mappings
@transaction.atomic
def group_mapping_set(
    *, provider: IdentityProvider, group: str, tenant: Tenant, role: str, actor: User | None = None
) -> GroupMapping:
    group = group.strip()
    if not group:
        raise InvalidInput("Name the provider's group (or claim value) to map.")
    if role not in Role.values:
        raise InvalidInput(f"Unknown role '{role}'.")
    mapping, created = GroupMapping.objects.update_or_create(
        provider=provider, group=group, tenant=tenant, defaults={"role": role}
    )
    tenant_services.audit_record(
        action="identity.mapping.set",
        tenant=tenant,
        actor=actor,
        target=mapping,
        details={"provider": provider.slug, "group": group, "role": role, "created": created},
    )
    return mapping


@transaction.atomic
def group_mapping_remove(*, mapping_id: int, actor: User | None = None) -> None:
    mapping = GroupMapping.objects.select_related("provider", "tenant").filter(pk=mapping_id).first()
    if mapping is None:
        raise NotFound()
    details = {"provider": mapping.provider.slug, "group": mapping.group, "role": mapping.role}
    tenant = mapping.tenant
    mapping.delete()
    tenant_services.audit_record(action="identity.mapping.remove", tenant=tenant, actor=actor, details=details)


# ------------------------------------------------------------------------------------------------ sign-in
@dataclass(frozen=True)
class DirectoryPerson:
    """What a provider says about a person at sign-in (from ID-token claims or SAML attributes)."""

    subject: str
    username: str = ""
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    groups: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class MembershipChanges:
    added: list[tuple[int, str]] = field(default_factory=list)
    changed: list[tuple[int, str]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def replay_guard_consume(*, kind: str, value: str, expires_at: datetime) -> None:
    """Accept a one-time value once; a second use raises ``SignInRefused`` (``<kind>_replayed``)."""
    digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()
    try:
        with transaction.atomic():
            ReplayGuard.objects.create(kind=kind, digest=digest, expires_at=expires_at)
    except IntegrityError:
        raise SignInRefused(
            "This sign-in response was already used. Start again from the sign-in page.", code=f"{kind}_replayed"
        ) from None
    if secrets.randbelow(100) == 0:  # now and then, forget values whose tokens have long expired
        ReplayGuard.objects.filter(expires_at__lt=timezone.now() - timedelta(days=1)).delete()


_USERNAME_OK = re.compile(r"[^\w.@+-]")


def _unique_username(base: str) -> str:
    base = _USERNAME_OK.sub("-", base)[:120] or "user"
    candidate = base
    while User.objects.filter(username__iexact=candidate).exists():
        candidate = f"{base}-{secrets.token_hex(3)}"
    return candidate


def _identity_for(*, provider: IdentityProvider, person: DirectoryPerson) -> ExternalIdentity | None:
    identity = (
        ExternalIdentity.objects.select_for_update()
        .select_related("user")
        .filter(provider=provider, subject=person.subject)
        .first()
    )
    if identity is not None:
        return identity
    # provisioned by SCIM before the first sign-in: SCIM's userName is the sign-in name or e-mail at the provider
    names = [n for n in {person.username, person.email} if n]
    if names:
        identity = (
            ExternalIdentity.objects.select_for_update()
            .select_related("user")
            .filter(provider=provider, subject="", scim_user_name__in=names)
            .first()
        )
    return identity


@transaction.atomic
def identity_sign_in(*, provider: IdentityProvider, person: DirectoryPerson, ip: str | None = None) -> User:
    """The portal account for a person the provider vouches for: found, provisioned by SCIM, or created just in
    time; the department memberships follow the person's groups."""
    if not provider.enabled:
        raise SignInRefused("This sign-in provider is turned off.", code="provider_disabled")
    if not person.subject:
        raise SignInRefused("The provider did not name the person.", code="no_subject")
    identity = _identity_for(provider=provider, person=person)
    created = False
    if identity is None:
        try:
            with transaction.atomic():  # a savepoint: a concurrent first sign-in of the same person may win
                user = User.objects.create(
                    username=_unique_username(person.username or person.email or f"{provider.slug}-{person.subject}"),
                    email=person.email,
                    first_name=person.first_name[:150],
                    last_name=person.last_name[:150],
                )
                user.set_unusable_password()
                user.save(update_fields=["password"])
                identity = ExternalIdentity.objects.create(provider=provider, user=user, subject=person.subject)
                created = True
        except IntegrityError:
            identity = _identity_for(provider=provider, person=person)
            if identity is None:
                raise
    user = identity.user
    if not identity.active or not user.is_active:
        tenant_services.audit_record(
            action="identity.sign_in.refused",
            actor=user,
            ip=ip,
            details={"provider": provider.slug, "reason": "account_deactivated"},
        )
        raise AccountDeactivated()
    if not identity.subject:
        identity.subject = person.subject
    updates = {"email": person.email, "first_name": person.first_name[:150], "last_name": person.last_name[:150]}
    changed_fields = [k for k, v in updates.items() if v and getattr(user, k) != v]
    for k in changed_fields:
        setattr(user, k, updates[k])
    if changed_fields:
        user.save(update_fields=changed_fields)
    identity.groups = sorted(set(person.groups))
    identity.last_sign_in_at = timezone.now()
    identity.updated_at = timezone.now()
    identity.save()
    if created:
        tenant_services.audit_record(
            action="identity.user.jit_create", actor=user, target=user, ip=ip, details={"provider": provider.slug}
        )
    identity_membership_sync(identity=identity)
    tenant_services.audit_record(
        action="identity.sign_in",
        actor=user,
        target=user,
        ip=ip,
        details={"provider": provider.slug, "kind": provider.kind, "groups": len(identity.groups)},
    )
    return user


def _desired_memberships(*, identity: ExternalIdentity) -> tuple[dict[int, tuple[Tenant, str]], set[int]]:
    groups = {g.casefold() for g in identity.groups}
    desired: dict[int, tuple[Tenant, str]] = {}
    mapped_tenants: set[int] = set()
    for mapping in GroupMapping.objects.filter(provider_id=identity.provider_id).select_related("tenant"):
        mapped_tenants.add(mapping.tenant_id)
        if mapping.group.casefold() not in groups:
            continue
        current = desired.get(mapping.tenant_id)
        if current is None or ROLE_RANK[Role(mapping.role)] > ROLE_RANK[Role(current[1])]:
            desired[mapping.tenant_id] = (mapping.tenant, mapping.role)
    return desired, mapped_tenants


@transaction.atomic
def identity_membership_sync(*, identity: ExternalIdentity) -> MembershipChanges:
    """Make the person's memberships in the departments the directory governs match their groups: the departments
    any mapping of the provider names, and those the directory granted before. Others are left alone."""
    desired, mapped_tenants = _desired_memberships(identity=identity)
    governed = mapped_tenants | {int(t) for t in identity.managed_tenant_ids}
    current = {m.tenant_id: m for m in membership_list_all_for_user(user_id=identity.user_id)}
    changes = MembershipChanges()
    label = f"directory:{identity.provider.slug}"
    for tenant_id, (tenant, role) in desired.items():
        existing = current.get(tenant_id)
        if existing is not None and existing.role == role:
            continue
        tenant_services.membership_set(tenant=tenant, user=identity.user, role=role)
        (changes.changed if existing is not None else changes.added).append((tenant_id, role))
    for tenant_id in sorted(governed - set(desired)):
        existing = current.get(tenant_id)
        if existing is None:
            continue
        tenant_services.membership_remove(tenant=existing.tenant, user_id=identity.user_id)
        changes.removed.append(tenant_id)
    identity.managed_tenant_ids = sorted(desired)
    identity.save(update_fields=["managed_tenant_ids"])
    for tenant_id, role in changes.added + changes.changed:
        tenant_services.audit_record(
            action="identity.membership.grant",
            tenant=desired[tenant_id][0],
            actor_label=label,
            target=identity.user,
            details={"provider": identity.provider.slug, "role": role, "user_id": identity.user_id},
        )
    for tenant_id in changes.removed:
        tenant_services.audit_record(
            action="identity.membership.revoke",
            tenant=current[tenant_id].tenant,
            actor_label=label,
            target=identity.user,
            details={"provider": identity.provider.slug, "user_id": identity.user_id},
        )
    return changes


def sign_in_record(*, user: User, kind: str, ip: str | None = None, refused: str = "") -> None:
    """The audit trail of a local sign-in (or of its refusal, with the reason code)."""
    if refused:
        tenant_services.audit_record(
            action="identity.sign_in.refused", actor=user, target=user, ip=ip, details={"kind": kind, "reason": refused}
        )
    else:
        tenant_services.audit_record(action="identity.sign_in", actor=user, target=user, ip=ip, details={"kind": kind})


def sign_out_record(*, user: User, method: str, ip: str | None = None) -> None:
    tenant_services.audit_record(action="identity.sign_out", actor=user, target=user, ip=ip, details={"method": method})


# ------------------------------------------------------------------------------------------------ deprovisioning
def user_sessions_end(*, user_id: int) -> int:
    """Delete every stored browser session of the user; returns how many."""
    ended = 0
    now = timezone.now()
    for session in Session.objects.filter(expire_date__gt=now).iterator():
        data = session.get_decoded()  # Django answers {} for a session it cannot decode
        if str(data.get("_auth_user_id")) == str(user_id):
            session.delete()
            ended += 1
    return ended


@transaction.atomic
def identity_deactivate(*, identity: ExternalIdentity, actor_label: str = "") -> dict[str, int]:
    """The person left: the account stops signing in, its sessions end, its API keys are revoked and its open
    sockets close (after commit)."""
    user = identity.user
    identity.active = False
    identity.updated_at = timezone.now()
    identity.save(update_fields=["active", "updated_at"])
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    revoked = 0
    for key in api_key_list_created_by(user_id=user.pk):
        tenant_services.api_key_revoke(tenant=key.tenant, key_id=key.pk)
        revoked += 1
    sessions = user_sessions_end(user_id=user.pk)
    user_id = user.pk
    transaction.on_commit(lambda: realtime.user_sockets_close(user_id=user_id))
    tenant_services.audit_record(
        action="identity.user.deactivate",
        actor_label=actor_label or f"directory:{identity.provider.slug}",
        target=user,
        details={"provider": identity.provider.slug, "api_keys_revoked": revoked, "sessions_ended": sessions},
    )
    return {"api_keys_revoked": revoked, "sessions_ended": sessions}


@transaction.atomic
def identity_reactivate(*, identity: ExternalIdentity, actor_label: str = "") -> None:
    identity.active = True
    identity.updated_at = timezone.now()
    identity.save(update_fields=["active", "updated_at"])
    user = identity.user
    if not user.is_active:
        user.is_active = True
        user.save(update_fields=["is_active"])
    tenant_services.audit_record(
        action="identity.user.reactivate",
        actor_label=actor_label or f"directory:{identity.provider.slug}",
        target=user,
        details={"provider": identity.provider.slug},
    )


# ------------------------------------------------------------------------------------------------ SCIM
@transaction.atomic
def scim_user_create(
    *,
    provider: IdentityProvider,
    user_name: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    external_id: str = "",
    active: bool = True,
) -> ExternalIdentity:
    user_name = user_name.strip()
    if not user_name:
        raise InvalidInput("userName is required.")
    if ExternalIdentity.objects.filter(provider=provider, scim_user_name=user_name).exists():
        raise Conflict(f"A user with userName '{user_name}' already exists.", code="uniqueness")
    user = User.objects.create(
        username=_unique_username(user_name),
        email=email,
        first_name=first_name[:150],
        last_name=last_name[:150],
        is_active=active,
    )
    user.set_unusable_password()
    user.save(update_fields=["password"])
    identity = ExternalIdentity.objects.create(
        provider=provider, user=user, scim_user_name=user_name, external_id=external_id, active=active
    )
    tenant_services.audit_record(
        action="identity.scim.user_create",
        actor_label=f"scim:{provider.slug}",
        target=user,
        details={"provider": provider.slug, "active": active},
    )
    return identity


@transaction.atomic
def scim_user_update(
    *,
    identity: ExternalIdentity,
    user_name: str | None = None,
    email: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    external_id: str | None = None,
    active: bool | None = None,
) -> ExternalIdentity:
    user = identity.user
    if user_name is not None and user_name.strip() and user_name.strip() != identity.scim_user_name:
        clash = ExternalIdentity.objects.filter(provider_id=identity.provider_id, scim_user_name=user_name.strip())
        if clash.exclude(pk=identity.pk).exists():
            raise Conflict(f"A user with userName '{user_name}' already exists.", code="uniqueness")
        identity.scim_user_name = user_name.strip()
    if external_id is not None:
        identity.external_id = external_id
    identity.updated_at = timezone.now()
    identity.save()
    fields = {"email": email, "first_name": first_name, "last_name": last_name}
    changed = [k for k, v in fields.items() if v is not None and getattr(user, k) != v]
    for k in changed:
        setattr(user, k, (fields[k] or "")[:150] if k != "email" else fields[k])
    if changed:
        user.save(update_fields=changed)
    label = f"scim:{identity.provider.slug}"
    if active is False and identity.active:
        identity_deactivate(identity=identity, actor_label=label)
    elif active is True and not identity.active:
        identity_reactivate(identity=identity, actor_label=label)
    return identity


@transaction.atomic
def scim_user_delete(*, identity: ExternalIdentity) -> None:
    """SCIM DELETE: deprovision (as deactivation) and forget the SCIM resource; the account row stays for the
    audit trail and the conversations it owns."""
    if identity.active:
        identity_deactivate(identity=identity, actor_label=f"scim:{identity.provider.slug}")
    for group in list(identity.directory_groups.all()):
        group.members.remove(identity)
    identity.scim_user_name = ""
    identity.save(update_fields=["scim_user_name"])
    identity.groups = []
    identity.save(update_fields=["groups"])
    identity_membership_sync(identity=identity)


def _groups_refresh(*, identities: list[ExternalIdentity]) -> None:
    """A person's groups are their SCIM groups' names; memberships follow."""
    for identity in identities:
        identity.groups = sorted(identity.directory_groups.values_list("display_name", flat=True))
        identity.save(update_fields=["groups"])
        identity_membership_sync(identity=identity)


def _identities_by_scim_ids(*, provider: IdentityProvider, ids: list[str]) -> list[ExternalIdentity]:
    import uuid

    parsed = []
    for value in ids:
        try:
            parsed.append(uuid.UUID(str(value)))
        except ValueError:
            raise InvalidInput(f"Unknown member '{str(value)[:64]}'.") from None
    found = list(ExternalIdentity.objects.filter(provider=provider, scim_id__in=parsed).select_related("user"))
    if len(found) != len(set(parsed)):
        raise InvalidInput("A member is not a user of this provider.")
    return found


@transaction.atomic
def scim_group_create(
    *, provider: IdentityProvider, display_name: str, external_id: str = "", member_ids: list[str] | None = None
) -> DirectoryGroup:
    display_name = display_name.strip()
    if not display_name:
        raise InvalidInput("displayName is required.")
    if DirectoryGroup.objects.filter(provider=provider, display_name=display_name).exists():
        raise Conflict(f"A group named '{display_name}' already exists.", code="uniqueness")
    group = DirectoryGroup.objects.create(provider=provider, display_name=display_name, external_id=external_id)
    members = _identities_by_scim_ids(provider=provider, ids=member_ids or [])
    group.members.add(*members)
    tenant_services.audit_record(
        action="identity.scim.group_create",
        actor_label=f"scim:{provider.slug}",
        target=group,
        details={"provider": provider.slug, "group": display_name, "members": len(members)},
    )
    _groups_refresh(identities=members)
    return group


@transaction.atomic
def scim_group_update(
    *,
    group: DirectoryGroup,
    display_name: str | None = None,
    add_ids: list[str] | None = None,
    remove_ids: list[str] | None = None,
    replace_ids: list[str] | None = None,
) -> DirectoryGroup:
    provider = group.provider
    touched: dict[int, ExternalIdentity] = {}
    if display_name is not None and display_name.strip() and display_name.strip() != group.display_name:
        if DirectoryGroup.objects.filter(provider=provider, display_name=display_name.strip()).exists():
            raise Conflict(f"A group named '{display_name}' already exists.", code="uniqueness")
        group.display_name = display_name.strip()
        touched.update({i.pk: i for i in group.members.select_related("user")})
    if replace_ids is not None:
        new = _identities_by_scim_ids(provider=provider, ids=replace_ids)
        old = list(group.members.select_related("user"))
        touched.update({i.pk: i for i in old + new})
        group.members.set(new)
    if add_ids:
        new = _identities_by_scim_ids(provider=provider, ids=add_ids)
        group.members.add(*new)
        touched.update({i.pk: i for i in new})
    if remove_ids:
        gone = _identities_by_scim_ids(provider=provider, ids=remove_ids)
        group.members.remove(*gone)
        touched.update({i.pk: i for i in gone})
    group.updated_at = timezone.now()
    group.save()
    tenant_services.audit_record(
        action="identity.scim.group_update",
        actor_label=f"scim:{provider.slug}",
        target=group,
        details={"provider": provider.slug, "group": group.display_name, "people": len(touched)},
    )
    _groups_refresh(identities=list(touched.values()))
    return group


@transaction.atomic
def scim_group_delete(*, group: DirectoryGroup) -> None:
    members = list(group.members.select_related("user"))
    name, provider = group.display_name, group.provider
    group.delete()
    tenant_services.audit_record(
        action="identity.scim.group_delete",
        actor_label=f"scim:{provider.slug}",
        details={"provider": provider.slug, "group": name},
    )
    _groups_refresh(identities=members)


# ------------------------------------------------------------------------------------------------ MFA (TOTP)
TOTP_ISSUER = "Enterprise LLM Portal"


def _totp(device: TotpDevice) -> pyotp.TOTP:
    return pyotp.TOTP(device.secret)


@transaction.atomic
def totp_begin(*, user: User, restart: bool = False) -> tuple[TotpDevice, str]:
    """Start enrolment (or continue one not confirmed yet; ``restart`` draws a fresh secret); returns the device and
    its otpauth:// URI for the authenticator app."""
    device = TotpDevice.objects.filter(user=user).first()
    if device is not None and device.confirmed:
        raise Conflict("An authenticator is already set up for this account; ask platform staff to reset it.")
    secret = pyotp.random_base32()
    if device is not None and not restart:
        pass
    elif device is None:
        device = TotpDevice.objects.create(user=user, secret=secret)
    else:
        device.secret = secret
        device.last_step = 0
        device.save(update_fields=["secret", "last_step"])
    uri = _totp(device).provisioning_uri(name=user.get_username(), issuer_name=TOTP_ISSUER)
    return device, uri


def _verify(device: TotpDevice, code: str) -> None:
    code = re.sub(r"\s", "", code or "")
    if not re.fullmatch(r"\d{6}", code):
        raise MfaInvalid("Enter the 6-digit code from your authenticator app.")
    totp = _totp(device)
    now_step = int(timezone.now().timestamp()) // totp.interval
    for step in (now_step, now_step - 1, now_step + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            if step <= device.last_step:
                raise MfaInvalid("That code was already used. Wait for the next one.")
            updated = TotpDevice.objects.filter(pk=device.pk, last_step__lt=step).update(last_step=step)
            if not updated:
                raise MfaInvalid("That code was already used. Wait for the next one.")
            device.last_step = step
            return
    raise MfaInvalid()


@transaction.atomic
def totp_confirm(*, user: User, code: str) -> TotpDevice:
    device = TotpDevice.objects.select_for_update().filter(user=user).first()
    if device is None:
        raise NotFound("Start setting up an authenticator first.")
    _verify(device, code)
    if not device.confirmed:
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        tenant_services.audit_record(action="identity.mfa.enroll", actor=user, target=user)
    return device


def totp_verify(*, user: User, code: str, ip: str | None = None) -> None:
    device = TotpDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        raise MfaInvalid("No authenticator is set up for this account.")
    try:
        _verify(device, code)
    except MfaInvalid:
        tenant_services.audit_record(action="identity.mfa.fail", actor=user, target=user, ip=ip)
        raise


@transaction.atomic
def totp_reset(*, user: User, actor: User | None = None) -> None:
    deleted, _ = TotpDevice.objects.filter(user=user).delete()
    if deleted:
        tenant_services.audit_record(action="identity.mfa.reset", actor=actor, target=user)


# ------------------------------------------------------------------------------------------------ policy
def sign_in_policy_get() -> SignInPolicy:
    policy = SignInPolicy.objects.order_by("pk").first()
    return policy or SignInPolicy.objects.create()


@transaction.atomic
def password_sign_in_set(*, enabled: bool, actor: User | None = None) -> SignInPolicy:
    """Switch password sign-in on or off for everyone but break-glass admins. Turning it off needs at least one
    active break-glass admin (or nobody could ever switch it back on)."""
    policy = sign_in_policy_get()
    if not enabled and not BreakGlassAccount.objects.filter(user__is_active=True, user__is_staff=True).exists():
        raise Conflict("Mark at least one platform admin as break-glass first, or nobody could sign in to undo this.")
    policy.password_sign_in_enabled = enabled
    policy.updated_at = timezone.now()
    policy.save()
    tenant_services.audit_record(
        action="identity.policy.password_sign_in", actor=actor, details={"enabled": bool(enabled)}
    )
    _policy_changed()
    return policy


@transaction.atomic
def break_glass_set(*, user: User, enabled: bool, actor: User | None = None) -> None:
    if enabled:
        if not user.is_staff:
            raise InvalidInput("Only platform staff can be break-glass admins.")
        BreakGlassAccount.objects.get_or_create(user=user)
    else:
        BreakGlassAccount.objects.filter(user=user).delete()
        policy = sign_in_policy_get()
        others = BreakGlassAccount.objects.filter(user__is_active=True, user__is_staff=True)
        if not policy.password_sign_in_enabled and not others.exists():
            raise Conflict("Password sign-in is off: keep at least one break-glass admin.")
    tenant_services.audit_record(
        action="identity.break_glass.set", actor=actor, target=user, details={"enabled": bool(enabled)}
    )
