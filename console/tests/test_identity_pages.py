"""Console pages for enterprise sign-in: platform staff only (permission matrix), the one-form OIDC provider, the
group mapping, SCIM tokens and the password sign-in switch."""

from __future__ import annotations

from typing import Any

import pytest

from identity.models import GroupMapping, IdentityProvider
from tenants.models import AuditEvent, Role

pytestmark = pytest.mark.django_db


def _as(client: Any, user: Any) -> Any:
    if user is not None:
        client.force_login(user)
        session = client.session
        session["identity_mfa"] = True  # staff checked a TOTP code at sign-in (required once SSO is configured)
        session.save()
    return client


@pytest.mark.parametrize(
    ("role", "status"),
    [("anonymous", 302), ("other_tenant", 403), ("viewer", 403), ("member", 403), ("admin", 403), ("staff", 200)],
)
def test_oidc_console_sign_in_page_matrix(client, world, role, status):
    response = _as(client, world.user(role)).get("/console/identity/")
    assert response.status_code == status
    created = _as(client, world.user(role)).post(
        "/console/identity/providers/create/",
        {"kind": "oidc", "name": "X", "issuer": "https://x.example", "client_id": "c", "client_secret": "s"},
    )
    if role == "staff":
        assert created.status_code == 302
    else:
        assert created.status_code in (302, 403) and created.status_code == status
        assert not IdentityProvider.objects.exists()


def test_oidc_console_one_form_points_the_portal_at_a_provider(client, world):
    _as(client, world.staff)
    response = client.post(
        "/console/identity/providers/create/",
        {
            "kind": "oidc",
            "name": "Entra ID",
            "issuer": "https://login.microsoftonline.com/corp/v2.0",
            "client_id": "11111111-2222",
            "client_secret": "very-secret-client-value",
        },
    )
    provider = IdentityProvider.objects.get(slug="entra-id")
    assert response.status_code == 302 and response["Location"] == f"/console/identity/providers/{provider.pk}/"
    assert provider.client_secret == "very-secret-client-value" and provider.groups_claim == "groups"
    page = client.get(response["Location"])
    assert b"http://testserver/sso/oidc/entra-id/callback/" in page.content
    assert b"very-secret-client-value" not in page.content
    login_page = client.__class__().get("/accounts/login/")
    assert b"Sign in with Entra ID" in login_page.content
    event = AuditEvent.objects.get(action="identity.provider.create")
    assert "client_secret" not in str(event.details)


def test_saml_console_provider_and_mapping(client, world, saml_idp):
    _as(client, world.staff)
    client.post(
        "/console/identity/providers/create/",
        {
            "kind": "saml",
            "name": "ADFS",
            "idp_entity_id": saml_idp.entity_id,
            "idp_sso_url": saml_idp.sso_url,
            "idp_certificate": saml_idp.certificate,
        },
    )
    provider = IdentityProvider.objects.get(slug="adfs", kind="saml")
    added = client.post(
        f"/console/identity/providers/{provider.pk}/mappings/add/",
        {"group": "alpha-readers", "tenant_id": world.tenant.pk, "role": Role.VIEWER},
    )
    assert added.status_code == 302
    mapping = GroupMapping.objects.get(provider=provider)
    assert (mapping.group, mapping.tenant_id, mapping.role) == ("alpha-readers", world.tenant.pk, Role.VIEWER)
    page = client.get(f"/console/identity/providers/{provider.pk}/")
    assert b"alpha-readers" in page.content and b"/sso/saml/adfs/metadata/" in page.content
    client.post(f"/console/identity/providers/{provider.pk}/mappings/{mapping.pk}/remove/")
    assert not GroupMapping.objects.exists()
    assert AuditEvent.objects.filter(action="identity.mapping.remove", tenant=world.tenant).count() == 1


def test_scim_console_token_is_shown_once_and_works(client, world):
    _as(client, world.staff)
    client.post(
        "/console/identity/providers/create/",
        {"kind": "oidc", "name": "Okta", "issuer": "https://okta.example", "client_id": "c", "client_secret": "s"},
    )
    provider = IdentityProvider.objects.get(slug="okta")
    page = client.post(f"/console/identity/providers/{provider.pk}/scim-token/")
    token = page.content.decode().split('data-testid="new-scim-token"')[1].split('class="mono">')[1].split("<")[0]
    assert token.startswith("scim_")
    assert client.__class__().get("/scim/v2/Users", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert token.encode() not in client.get(f"/console/identity/providers/{provider.pk}/").content


def test_mfa_console_password_switch_needs_a_break_glass_admin(client, world):
    _as(client, world.staff)
    refused = client.post("/console/identity/policy/", {})
    assert refused.status_code == 409 and b"break-glass" in refused.content
    assert client.post(f"/console/identity/break-glass/{world.staff.pk}/", {"enabled": "on"}).status_code == 302
    assert client.post("/console/identity/policy/", {}).status_code == 302
    assert b'data-testid="password-state">off' in client.get("/console/identity/").content
    assert client.post("/console/identity/policy/", {"password_sign_in": "on"}).status_code == 302
    assert b'data-testid="password-state">on' in client.get("/console/identity/").content
