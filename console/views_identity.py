"""Console pages for enterprise sign-in (platform staff only): identity providers (OIDC in one form: name, issuer,
client id, client secret; or SAML), the group → department mapping, SCIM tokens, the password sign-in switch,
break-glass admins and TOTP resets. Views parse input and call ``identity``'s services and selectors."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from console.access import ConsoleScope
from console.decorators import console_view
from console.forms import cleaned
from core.errors import NotFound
from identity import selectors as identity_selectors
from identity import services as identity_services
from identity.models import IdentityProvider
from tenants.models import Role


class OidcProviderForm(forms.Form):
    name = forms.CharField(max_length=200)
    issuer = forms.URLField(max_length=500, help_text="e.g. https://login.microsoftonline.com/<tenant>/v2.0")
    client_id = forms.CharField(max_length=255, label="Client ID")
    client_secret = forms.CharField(max_length=2000, required=False, label="Client secret")
    groups_claim = forms.CharField(max_length=100, required=False, initial="groups")
    scopes = forms.CharField(max_length=255, required=False, initial="openid email profile groups")


class SamlProviderForm(forms.Form):
    name = forms.CharField(max_length=200)
    idp_entity_id = forms.CharField(max_length=500, label="IdP entity ID")
    idp_sso_url = forms.URLField(max_length=500, label="IdP single sign-on URL")
    idp_certificate = forms.CharField(max_length=20_000, label="IdP signing certificate (PEM)")
    groups_claim = forms.CharField(max_length=100, required=False, initial="groups", label="Groups attribute")


class MappingForm(forms.Form):
    group = forms.CharField(max_length=255)
    tenant_id = forms.IntegerField(label="Department")
    role = forms.ChoiceField(choices=Role.choices)


def _provider(provider_id: int) -> IdentityProvider:
    return identity_selectors.provider_get_by_id(provider_id=provider_id)


def _user(user_id: int) -> User:
    return identity_selectors.user_get(user_id=user_id)


@console_view(staff_only=True)
def identity_overview(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    identity_services.provider_sync_from_environment()
    context: dict[str, Any] = {
        "scope": scope,
        "section": "identity",
        "providers": identity_selectors.provider_list(),
        "policy": identity_services.sign_in_policy_get(),
        "staff": identity_selectors.staff_list(),
        "break_glass": identity_selectors.break_glass_user_ids(),
        "oidc_form": OidcProviderForm(),
        "saml_form": SamlProviderForm(),
    }
    return render(request, "console/identity/overview.html", context)


@console_view(methods=("POST",), staff_only=True)
def identity_provider_create(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    kind = request.POST.get("kind", "")
    form: forms.Form = SamlProviderForm(request.POST) if kind == "saml" else OidcProviderForm(request.POST)
    data = {k: v for k, v in cleaned(form).items() if v not in (None, "")}
    provider = identity_services.provider_create(kind="saml" if kind == "saml" else "oidc", actor=scope.user, **data)
    messages.success(request, f"Provider {provider.name} added. Map its groups to departments below.")
    return redirect("console:identity_provider", provider_id=provider.pk)


def _provider_context(request: HttpRequest, scope: ConsoleScope, provider: IdentityProvider, **extra: Any) -> Any:
    if provider.kind == IdentityProvider.Kind.OIDC:
        callback = request.build_absolute_uri(reverse("identity:oidc_callback", args=[provider.slug]))
        edit_form: forms.Form = OidcProviderForm(
            initial={f: getattr(provider, f) for f in ("name", "issuer", "client_id", "groups_claim", "scopes")}
        )
    else:
        callback = request.build_absolute_uri(reverse("identity:saml_acs", args=[provider.slug]))
        edit_form = SamlProviderForm(
            initial={
                f: getattr(provider, f)
                for f in ("name", "idp_entity_id", "idp_sso_url", "idp_certificate", "groups_claim")
            }
        )
    return {
        "scope": scope,
        "section": "identity",
        "provider": provider,
        "callback_url": callback,
        "metadata_url": request.build_absolute_uri(reverse("identity:saml_metadata", args=[provider.slug])),
        "post_logout_url": request.build_absolute_uri(reverse("login")),
        "scim_url": request.build_absolute_uri("/scim/v2/"),
        "mappings": identity_selectors.group_mapping_list(provider=provider),
        "people": identity_selectors.identity_list(provider=provider)[:200],
        "tenants": scope.tenants(),
        "roles": Role.choices,
        "edit_form": edit_form,
        **extra,
    }


@console_view(staff_only=True)
def identity_provider(request: HttpRequest, scope: ConsoleScope, provider_id: int) -> HttpResponse:
    provider = _provider(provider_id)
    return render(request, "console/identity/provider.html", _provider_context(request, scope, provider))


@console_view(methods=("POST",), staff_only=True)
def identity_provider_edit(request: HttpRequest, scope: ConsoleScope, provider_id: int) -> HttpResponse:
    provider = _provider(provider_id)
    form: forms.Form = (
        SamlProviderForm(request.POST)
        if provider.kind == IdentityProvider.Kind.SAML
        else OidcProviderForm(request.POST)
    )
    data = cleaned(form)
    if "enabled" in request.POST:
        data["enabled"] = request.POST.get("enabled") == "on"
    identity_services.provider_update(provider=provider, actor=scope.user, **data)
    messages.success(request, "Provider saved.")
    return redirect("console:identity_provider", provider_id=provider.pk)


@console_view(methods=("POST",), staff_only=True)
def identity_provider_toggle(request: HttpRequest, scope: ConsoleScope, provider_id: int) -> HttpResponse:
    provider = _provider(provider_id)
    identity_services.provider_update(provider=provider, actor=scope.user, enabled=not provider.enabled)
    messages.success(request, f"Provider {'turned on' if not provider.enabled else 'turned off'}.")
    return redirect("console:identity_provider", provider_id=provider.pk)


@console_view(methods=("POST",), staff_only=True)
def identity_provider_delete(request: HttpRequest, scope: ConsoleScope, provider_id: int) -> HttpResponse:
    provider = _provider(provider_id)
    identity_services.provider_delete(provider=provider, actor=scope.user)
    messages.success(request, f"Provider {provider.name} removed.")
    return redirect("console:identity")


@console_view(methods=("POST",), staff_only=True)
def identity_mapping_add(request: HttpRequest, scope: ConsoleScope, provider_id: int) -> HttpResponse:
    provider = _provider(provider_id)
    data = cleaned(MappingForm(request.POST))
    tenant = scope.tenant_get(data["tenant_id"])
    identity_services.group_mapping_set(
        provider=provider, group=data["group"], tenant=tenant, role=data["role"], actor=scope.user
    )
    messages.success(request, f"Members of '{data['group']}' join {tenant.name} as {data['role']} at next sign-in.")
    return redirect("console:identity_provider", provider_id=provider.pk)


@console_view(methods=("POST",), staff_only=True)
def identity_mapping_remove(request: HttpRequest, scope: ConsoleScope, provider_id: int, mapping_id: int) -> Any:
    provider = _provider(provider_id)
    if not identity_selectors.group_mapping_list(provider=provider).filter(pk=mapping_id).exists():
        raise NotFound()
    identity_services.group_mapping_remove(mapping_id=mapping_id, actor=scope.user)
    messages.success(request, "Mapping removed; memberships it granted end at each person's next sign-in.")
    return redirect("console:identity_provider", provider_id=provider.pk)


@console_view(methods=("POST",), staff_only=True)
def identity_scim_token(request: HttpRequest, scope: ConsoleScope, provider_id: int) -> HttpResponse:
    provider = _provider(provider_id)
    token = identity_services.scim_token_issue(provider=provider, actor=scope.user)
    context = _provider_context(request, scope, provider, new_scim_token=token)
    return render(request, "console/identity/provider.html", context)


@console_view(methods=("POST",), staff_only=True)
def identity_policy(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    enabled = request.POST.get("password_sign_in") == "on"
    identity_services.password_sign_in_set(enabled=enabled, actor=scope.user)
    messages.success(
        request,
        "Password sign-in is on." if enabled else "Password sign-in is off for everyone but break-glass admins.",
    )
    return redirect("console:identity")


@console_view(methods=("POST",), staff_only=True)
def identity_break_glass(request: HttpRequest, scope: ConsoleScope, user_id: int) -> HttpResponse:
    user = _user(user_id)
    identity_services.break_glass_set(user=user, enabled=request.POST.get("enabled") == "on", actor=scope.user)
    messages.success(request, f"Break-glass for {user.get_username()} saved.")
    return redirect("console:identity")


@console_view(methods=("POST",), staff_only=True)
def identity_mfa_reset(request: HttpRequest, scope: ConsoleScope, user_id: int) -> HttpResponse:
    user = _user(user_id)
    identity_services.totp_reset(user=user, actor=scope.user)
    messages.success(request, f"{user.get_username()} sets up a new authenticator at next sign-in.")
    return redirect("console:identity")
