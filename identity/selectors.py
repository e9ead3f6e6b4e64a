"""Reads of enterprise sign-in."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.cache import cache
from django.db.models import QuerySet

from core.errors import NotAuthenticated, NotFound
from identity.errors import SignInRefused
from identity.models import (
    BreakGlassAccount,
    DirectoryGroup,
    ExternalIdentity,
    GroupMapping,
    IdentityProvider,
    SignInPolicy,
    TotpDevice,
)

POLICY_CACHE_KEY = "identity:policy:v1"
POLICY_CACHE_TTL_S = 10


def provider_list(*, enabled_only: bool = False) -> QuerySet[IdentityProvider]:
    qs = IdentityProvider.objects.all().order_by("name")
    return qs.filter(enabled=True) if enabled_only else qs


def provider_get(*, slug: str, kind: str | None = None, enabled_only: bool = True) -> IdentityProvider:
    qs = IdentityProvider.objects.filter(slug=slug)
    if kind is not None:
        qs = qs.filter(kind=kind)
    if enabled_only:
        qs = qs.filter(enabled=True)
    provider = qs.first()
    if provider is None:
        raise SignInRefused("There is no such sign-in provider, or it is turned off.", code="unknown_provider")
    return provider


def provider_get_by_id(*, provider_id: int) -> IdentityProvider:
    provider = IdentityProvider.objects.filter(pk=provider_id).first()
    if provider is None:
        raise NotFound()
    return provider


def provider_for_scim_token(*, raw_token: str) -> IdentityProvider:
    """The provider whose SCIM bearer token this is; unknown and malformed tokens are refused alike."""
    parts = raw_token.split("_")
    if len(parts) < 3 or parts[0] != "scim" or len(parts[1]) != 12:
        raise NotAuthenticated("The SCIM token is not valid.")
    provider = IdentityProvider.objects.filter(scim_token_prefix=parts[1]).first()
    digest = hashlib.sha256(raw_token.encode()).hexdigest()
    if provider is None or not hmac.compare_digest(digest, provider.scim_token_hash):
        raise NotAuthenticated("The SCIM token is not valid.")
    if not provider.enabled:
        raise NotAuthenticated("This provider is turned off.")
    return provider


def group_mapping_list(*, provider: IdentityProvider) -> QuerySet[GroupMapping]:
    return GroupMapping.objects.filter(provider=provider).select_related("tenant").order_by("group", "tenant__name")


def identity_list(*, provider: IdentityProvider) -> QuerySet[ExternalIdentity]:
    return ExternalIdentity.objects.filter(provider=provider).select_related("user").order_by("user__username")


def identity_get_scim(*, provider: IdentityProvider, scim_id: str) -> ExternalIdentity:
    import uuid

    try:
        parsed = uuid.UUID(str(scim_id))
    except ValueError:
        raise NotFound("No such user.") from None
    identity = (
        ExternalIdentity.objects.select_related("user", "provider").filter(provider=provider, scim_id=parsed).first()
    )
    if identity is None or (not identity.scim_user_name and not identity.subject):
        raise NotFound("No such user.")
    return identity


def scim_user_list(*, provider: IdentityProvider, user_name: str | None = None) -> QuerySet[ExternalIdentity]:
    qs = (
        ExternalIdentity.objects.filter(provider=provider)
        .exclude(scim_user_name="", subject="")
        .select_related("user")
        .prefetch_related("directory_groups")
        .order_by("created_at", "pk")
    )
    return qs.filter(scim_user_name=user_name) if user_name is not None else qs


def directory_group_get(*, provider: IdentityProvider, scim_id: str) -> DirectoryGroup:
    import uuid

    try:
        parsed = uuid.UUID(str(scim_id))
    except ValueError:
        raise NotFound("No such group.") from None
    group = DirectoryGroup.objects.select_related("provider").filter(provider=provider, scim_id=parsed).first()
    if group is None:
        raise NotFound("No such group.")
    return group


def directory_group_list(*, provider: IdentityProvider, display_name: str | None = None) -> QuerySet[DirectoryGroup]:
    qs = DirectoryGroup.objects.filter(provider=provider).prefetch_related("members").order_by("created_at", "pk")
    return qs.filter(display_name=display_name) if display_name is not None else qs


@dataclass(frozen=True)
class PolicySnapshot:
    password_sign_in_enabled: bool
    sso_configured: bool


def policy_snapshot() -> PolicySnapshot:
    """Platform-wide sign-in settings, cached for a few seconds (the middleware reads them on every request)."""
    cached: Any = cache.get(POLICY_CACHE_KEY)
    if cached is not None:
        return PolicySnapshot(**cached)
    policy = SignInPolicy.objects.order_by("pk").first()
    snapshot = PolicySnapshot(
        password_sign_in_enabled=policy.password_sign_in_enabled if policy else True,
        sso_configured=IdentityProvider.objects.filter(enabled=True).exists(),
    )
    cache.set(POLICY_CACHE_KEY, snapshot.__dict__, POLICY_CACHE_TTL_S)
    return snapshot


def is_break_glass(*, user: User | AnonymousUser) -> bool:
    return bool(user.is_authenticated and user.is_staff and BreakGlassAccount.objects.filter(user_id=user.pk).exists())


def password_sign_in_allowed(*, user: User | AnonymousUser) -> bool:
    return policy_snapshot().password_sign_in_enabled or is_break_glass(user=user)


def totp_confirmed(*, user: User | AnonymousUser) -> bool:
    return bool(user.is_authenticated and TotpDevice.objects.filter(user_id=user.pk, confirmed=True).exists())


def mfa_required(*, user: User | AnonymousUser) -> bool:
    """TOTP is asked of every local account that has one, and required of platform staff once any SSO provider is
    configured (they hold the keys to the directory mapping)."""
    if totp_confirmed(user=user):
        return True
    return bool(getattr(user, "is_staff", False) and policy_snapshot().sso_configured)


def break_glass_user_ids() -> set[int]:
    return set(BreakGlassAccount.objects.values_list("user_id", flat=True))


def staff_list() -> QuerySet[User]:
    return User.objects.filter(is_staff=True).order_by("username")


def user_get_active(*, user_id: int) -> User | None:
    return User.objects.filter(pk=user_id, is_active=True).first()


def user_get(*, user_id: int) -> User:
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise NotFound()
    return user
