"""Enterprise sign-in: identity providers (OIDC, SAML), the group → department mapping, the people a provider
vouches for, SCIM directory groups, replay guards, TOTP devices and the sign-in policy.

A layer above ``tenants``: memberships and API keys change only through tenants' services.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.fields import EncryptedTextField
from tenants.models import Role, Tenant


class IdentityProvider(models.Model):
    class Kind(models.TextChoices):
        OIDC = "oidc", "OpenID Connect"
        SAML = "saml", "SAML 2.0"

    class Source(models.TextChoices):
        CONSOLE = "console", "Console"
        ENVIRONMENT = "environment", "Environment"

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.CONSOLE)
    enabled = models.BooleanField(default=True)
    # OIDC: the issuer (discovery at <issuer>/.well-known/openid-configuration), the client registered there
    issuer = models.URLField(max_length=500, blank=True, default="")
    client_id = models.CharField(max_length=255, blank=True, default="")
    client_secret = EncryptedTextField(blank=True, default="")
    scopes = models.CharField(max_length=255, blank=True, default="openid email profile groups")
    # SAML: the IdP's entity id, its single sign-on URL (HTTP-Redirect binding) and signing certificate (PEM)
    idp_entity_id = models.CharField(max_length=500, blank=True, default="")
    idp_sso_url = models.URLField(max_length=500, blank=True, default="")
    idp_certificate = models.TextField(blank=True, default="")
    # the claim (OIDC) or attribute (SAML) that lists the person's groups
    groups_claim = models.CharField(max_length=100, default="groups")
    # SCIM: bearer token for the provider's provisioning client (prefix + SHA-256; the secret is shown once)
    scim_token_prefix = models.CharField(max_length=16, blank=True, default="", db_index=True)
    scim_token_hash = models.CharField(max_length=128, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class GroupMapping(models.Model):
    """Members of ``group`` at the provider belong to ``tenant`` with ``role`` (the highest role wins)."""

    provider = models.ForeignKey(IdentityProvider, on_delete=models.CASCADE, related_name="mappings")
    group = models.CharField(max_length=255)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["group", "tenant__name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "group", "tenant"], name="uniq_group_mapping"),
        ]

    def __str__(self) -> str:
        return f"{self.group} → {self.tenant_id}:{self.role}"


class ExternalIdentity(models.Model):
    """A person as one provider knows them: OIDC ``sub`` / SAML NameID, and the SCIM resource if provisioned."""

    provider = models.ForeignKey(IdentityProvider, on_delete=models.CASCADE, related_name="identities")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="external_identities")
    subject = models.CharField(max_length=255, blank=True, default="")
    scim_id = models.UUIDField(default=uuid.uuid4, unique=True)
    scim_user_name = models.CharField(max_length=255, blank=True, default="")
    external_id = models.CharField(max_length=255, blank=True, default="")
    active = models.BooleanField(default=True)
    groups = models.JSONField(default=list, blank=True)
    # departments whose membership the directory granted (so that it can take them back)
    managed_tenant_ids = models.JSONField(default=list, blank=True)
    last_sign_in_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "subject"], condition=~models.Q(subject=""), name="uniq_identity_subject"
            ),
            models.UniqueConstraint(
                fields=["provider", "scim_user_name"],
                condition=~models.Q(scim_user_name=""),
                name="uniq_identity_scim_user_name",
            ),
            models.UniqueConstraint(fields=["provider", "user"], name="uniq_identity_provider_user"),
        ]

    def __str__(self) -> str:
        return f"{self.provider_id}:{self.user_id}"


class DirectoryGroup(models.Model):
    """A group pushed by SCIM; its ``display_name`` is what the group mappings match."""

    provider = models.ForeignKey(IdentityProvider, on_delete=models.CASCADE, related_name="directory_groups")
    scim_id = models.UUIDField(default=uuid.uuid4, unique=True)
    display_name = models.CharField(max_length=255)
    external_id = models.CharField(max_length=255, blank=True, default="")
    members = models.ManyToManyField(ExternalIdentity, related_name="directory_groups", blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "display_name"], name="uniq_directory_group_name"),
        ]

    def __str__(self) -> str:
        return self.display_name


class ReplayGuard(models.Model):
    """One-time values already used: OIDC nonces, SAML assertion ids. A second use hits the unique constraint."""

    kind = models.CharField(max_length=32)
    digest = models.CharField(max_length=64)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "digest"], name="uniq_replay_guard")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.digest[:8]}"


class TotpDevice(models.Model):
    """A local account's authenticator app (RFC 6238, 30 s, 6 digits). ``last_step`` refuses a code twice."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="totp_device")
    secret = EncryptedTextField()
    confirmed = models.BooleanField(default=False)
    last_step = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"totp:{self.user_id}"


class BreakGlassAccount(models.Model):
    """A local admin who may still sign in with a password when password sign-in is switched off."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="break_glass")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"break-glass:{self.user_id}"


class SignInPolicy(models.Model):
    """The one row of platform-wide sign-in settings (``sign_in_policy_get`` creates it)."""

    password_sign_in_enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"password sign-in {'on' if self.password_sign_in_enabled else 'off'}"
