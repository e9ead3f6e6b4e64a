"""OpenID Connect sign-in against a real provider (node-oidc-provider): code flow with PKCE, just-in-time accounts,
groups mapped to departments and roles, membership that follows the directory, sign-out."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from identity.models import ExternalIdentity
from identity.services import group_mapping_set
from identity.tests.conftest import oidc_sign_in
from tenants.models import AuditEvent, Membership, Role
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def departments(company: Any) -> Any:
    finance = TenantFactory(slug="finance", name="Finance")
    legal = TenantFactory(slug="legal", name="Legal")
    group_mapping_set(provider=company, group="fin-analysts", tenant=finance, role=Role.MEMBER)
    group_mapping_set(provider=company, group="fin-leads", tenant=finance, role=Role.ADMIN)
    group_mapping_set(provider=company, group="legal", tenant=legal, role=Role.VIEWER)
    return finance, legal


def test_oidc_authorization_request_uses_pkce_state_and_nonce(client, company, oidc_provider):
    response = client.get("/sso/oidc/company/login/")
    assert response.status_code == 302
    query = parse_qs(urlsplit(response["Location"]).query)
    assert response["Location"].startswith(oidc_provider.issuer + "/auth")
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["portal"]
    assert query["redirect_uri"] == ["http://testserver/sso/oidc/company/callback/"]
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert "code_verifier" not in response["Location"]


def test_oidc_sign_in_creates_the_account_in_the_mapped_department_with_the_role(
    client, company, departments, oidc_provider
):
    finance, _legal = departments
    oidc_provider.person("ada", groups=["fin-analysts", "fin-leads", "unrelated"], email="ada@corp.example")
    response = oidc_sign_in(client, oidc_provider, login="ada")
    assert response.status_code == 302 and response["Location"] == "/"
    identity = ExternalIdentity.objects.select_related("user").get(provider=company, subject="ada")
    user = identity.user
    assert user.email == "ada@corp.example" and not user.has_usable_password()
    memberships = {m.tenant_id: m.role for m in Membership.unscoped.filter(user=user)}
    assert memberships == {finance.pk: Role.ADMIN}  # the highest role of the mapped groups; legal not granted
    home = client.get("/")
    assert home.status_code == 200
    assert b"Welcome to Finance" in home.content
    actions = set(AuditEvent.objects.filter(actor=user).values_list("action", flat=True))
    assert {"identity.user.jit_create", "identity.sign_in"} <= actions
    assert AuditEvent.objects.filter(action="identity.membership.grant", tenant=finance).count() == 1


def test_oidc_removed_group_removes_access_at_the_next_sign_in(client, company, departments, oidc_provider):
    finance, legal = departments
    oidc_provider.person("bea", groups=["fin-analysts", "legal"])
    oidc_sign_in(client, oidc_provider, login="bea")
    user = ExternalIdentity.objects.get(provider=company, subject="bea").user
    assert {m.tenant_id: m.role for m in Membership.unscoped.filter(user=user)} == {
        finance.pk: Role.MEMBER,
        legal.pk: Role.VIEWER,
    }
    client.post("/accounts/logout/")
    oidc_provider.person("bea", groups=["legal"])  # the directory took her out of finance
    oidc_sign_in(client, oidc_provider, login="bea")
    assert {m.tenant_id: m.role for m in Membership.unscoped.filter(user=user)} == {legal.pk: Role.VIEWER}
    revoke = AuditEvent.objects.get(action="identity.membership.revoke", tenant=finance)
    assert revoke.actor_label == "directory:company" and revoke.details["user_id"] == user.pk
    assert AuditEvent.objects.filter(action="membership.remove", tenant=finance).count() == 1


def test_oidc_mapping_edited_in_between_changes_the_role_at_next_sign_in(client, company, departments, oidc_provider):
    finance, _legal = departments
    oidc_provider.person("cy", groups=["fin-analysts"])
    oidc_sign_in(client, oidc_provider, login="cy")
    user = ExternalIdentity.objects.get(provider=company, subject="cy").user
    group_mapping_set(provider=company, group="fin-analysts", tenant=finance, role=Role.VIEWER)
    client.post("/accounts/logout/")
    oidc_sign_in(client, oidc_provider, login="cy")
    assert Membership.unscoped.get(user=user, tenant=finance).role == Role.VIEWER
    assert AuditEvent.objects.filter(action="membership.role", tenant=finance).count() == 1


def test_oidc_callback_used_twice_is_refused(client, company, departments, oidc_provider, caplog):
    oidc_provider.person("dan", groups=["legal"])
    start = client.get("/sso/oidc/company/login/")
    callback = oidc_provider.sign_in(start["Location"], login="dan")
    parts = urlsplit(callback)
    assert client.get(f"{parts.path}?{parts.query}").status_code == 302
    client.post("/accounts/logout/")
    again = client.get(f"{parts.path}?{parts.query}")
    assert again.status_code == 401
    assert b"does not match a sign-in started in this browser" in again.content
    code = parse_qs(parts.query)["code"][0]
    assert any(getattr(r, "reason", "") == "oidc_state_mismatch" for r in caplog.records)
    assert code not in caplog.text


def test_oidc_unregistered_redirect_uri_is_refused_by_the_provider(client, company, oidc_provider):
    # the portal reached under a host name the provider does not know: the redirect URI it sends is unregistered
    start = client.get("/sso/oidc/company/login/", HTTP_HOST="localhost")
    assert start.status_code == 302
    assert "redirect_uri=http%3A%2F%2Flocalhost%2Fsso%2Foidc%2Fcompany%2Fcallback%2F" in start["Location"]
    import httpx

    with httpx.Client(timeout=10) as http:
        answer = http.get(start["Location"])
    assert answer.status_code == 400
    assert "invalid_redirect_uri" in answer.text and "redirect_uri did not match any of the client" in answer.text
    assert "code=" not in answer.headers.get("location", "")


def test_oidc_provider_error_is_refused_and_logged_without_secrets(client, company, oidc_provider, caplog):
    start = client.get("/sso/oidc/company/login/")
    state = parse_qs(urlsplit(start["Location"]).query)["state"][0]
    response = client.get(f"/sso/oidc/company/callback/?error=access_denied&state={state}")
    assert response.status_code == 401
    assert b"did not sign you in (access denied)" in response.content
    assert any(getattr(r, "reason", "") == "oidc_provider_error" for r in caplog.records)
    assert state not in caplog.text


def test_oidc_sign_out_ends_the_session_and_offers_rp_initiated_logout(client, company, departments, oidc_provider):
    oidc_provider.person("eve", groups=["legal"])
    oidc_sign_in(client, oidc_provider, login="eve")
    assert client.get("/").status_code == 200
    response = client.post("/accounts/logout/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "You are signed out of the portal" in body
    link = body.split('data-testid="provider-logout" href="')[1].split('"')[0].replace("&amp;", "&")
    assert link.startswith(oidc_provider.issuer + "/session/end?")
    query = parse_qs(urlsplit(link).query)
    assert query["client_id"] == ["portal"] and query["id_token_hint"][0].count(".") == 2
    assert query["post_logout_redirect_uri"] == ["http://testserver/accounts/login/"]
    assert client.get("/").status_code == 302  # signed out here
    import httpx

    with httpx.Client(timeout=10) as http:  # the provider accepts the logout request (its confirmation page)
        answer = http.get(link)
    assert answer.status_code == 200 and "logout" in answer.text.lower()


def test_oidc_provider_from_three_environment_variables(client, db, settings, oidc_provider):
    from identity import services

    services._env_synced = None
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID = "portal"
    settings.OIDC_CLIENT_SECRET = "portal-client-secret-0123456789abcdef"
    page = client.get("/accounts/login/")
    assert b'data-testid="sso-sso"' in page.content and b"Sign in with Company sign-in" in page.content
    oidc_provider.person("fay", groups=[])
    assert oidc_sign_in(client, oidc_provider, login="fay", slug="sso").status_code == 302
    assert ExternalIdentity.objects.filter(provider__slug="sso", provider__source="environment", subject="fay").exists()
    assert AuditEvent.objects.filter(action="identity.provider.create", details__source="environment").exists()
    services._env_synced = None


@pytest.mark.django_db(transaction=True)
def test_oidc_first_sign_in_twice_at_once_makes_one_account():
    """Two tabs finishing the first sign-in together: one account, both sign-ins succeed."""
    import threading

    from django.db import connection

    from identity.services import DirectoryPerson, identity_sign_in, provider_create

    provider = provider_create(
        kind="oidc", name="Race", slug="race", issuer="https://race.example", client_id="a", client_secret="b"
    )
    person = DirectoryPerson(subject="twin", username="twin", email="twin@corp.example", groups=("x",))
    barrier = threading.Barrier(4)
    users: list[int] = []
    errors: list[BaseException] = []

    def sign_in() -> None:
        try:
            barrier.wait()
            users.append(identity_sign_in(provider=provider, person=person).pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sign_in) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(users) == 4 and len(set(users)) == 1
    assert ExternalIdentity.objects.filter(provider=provider, subject="twin").count() == 1
