"""Local accounts: TOTP as a second step (required of platform staff once any SSO provider is configured), codes
used once, and the console's switch that turns password sign-in off for everyone but break-glass admins."""

from __future__ import annotations

import re
from typing import Any

import pyotp
import pytest

from core.errors import Conflict
from identity import services
from identity.models import TotpDevice
from tenants.models import AuditEvent
from tests.factories import UserFactory
from tests.fixtures import PASSWORD

pytestmark = pytest.mark.django_db


def _device(user: Any) -> pyotp.TOTP:
    device, _uri = services.totp_begin(user=user)
    totp = pyotp.TOTP(device.secret)
    services.totp_confirm(user=user, code=totp.now())
    TotpDevice.objects.filter(user=user).update(last_step=0)  # the enrolment code may be reused by the test
    return totp


def _sso_configured() -> Any:
    return services.provider_create(
        kind="oidc", name="Entra", slug="entra", issuer="https://login.example.test", client_id="a", client_secret="b"
    )


def _login(client: Any, user: Any, next_url: str = "") -> Any:
    return client.post("/accounts/login/", {"username": user.username, "password": PASSWORD, "next": next_url})


def test_mfa_local_account_with_an_authenticator_needs_the_code(client, world):
    totp = _device(world.member)
    response = _login(client, world.member, "/chat/")
    assert response.status_code == 302 and response["Location"] == "/accounts/mfa/"
    assert client.get("/").status_code == 302  # not signed in before the code
    wrong = client.post("/accounts/mfa/", {"code": "000000" if totp.now() != "000000" else "111111"})
    assert wrong.status_code == 401 and b"not valid" in wrong.content
    right = client.post("/accounts/mfa/", {"code": totp.now()})
    assert right.status_code == 302 and right["Location"] == "/chat/"
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.filter(action="identity.mfa.fail", actor=world.member).count() == 1
    assert AuditEvent.objects.filter(action="identity.sign_in", details__kind="password+totp").count() == 1


def test_mfa_code_is_accepted_once(client, world):
    totp = _device(world.member)
    code = totp.now()
    _login(client, world.member)
    assert client.post("/accounts/mfa/", {"code": code}).status_code == 302
    client.post("/accounts/logout/")
    _login(client, world.member)
    again = client.post("/accounts/mfa/", {"code": code})
    assert again.status_code == 401 and b"already used" in again.content


def test_mfa_too_many_wrong_codes_end_the_attempt(client, world):
    _device(world.member)
    _login(client, world.member)
    for _ in range(4):
        assert client.post("/accounts/mfa/", {"code": "12345x"}).status_code == 401
    last = client.post("/accounts/mfa/", {"code": "12345x"})
    assert last.status_code == 302 and last["Location"] == "/accounts/login/"
    assert client.get("/accounts/mfa/").status_code == 302  # the pending sign-in is gone


def test_mfa_platform_staff_must_enrol_once_sso_is_configured(client, world):
    _sso_configured()
    response = _login(client, world.staff)
    assert response.status_code == 302 and response["Location"] == "/accounts/mfa/setup/"
    page = client.get("/accounts/mfa/setup/")
    assert page.status_code == 200 and b"Platform staff need a second factor" in page.content
    secret = re.search(rb'data-testid="totp-secret">([A-Z2-7]+)<', page.content).group(1).decode()
    assert client.get("/console/").status_code == 302  # not signed in yet
    done = client.post("/accounts/mfa/setup/", {"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 302
    assert client.get("/console/").status_code == 200
    assert TotpDevice.objects.get(user=world.staff).confirmed
    assert AuditEvent.objects.filter(action="identity.mfa.enroll", actor=world.staff).exists()


def test_mfa_not_asked_of_staff_without_sso_or_of_members_without_a_device(client, world):
    assert _login(client, world.staff)["Location"] == "/"
    client.post("/accounts/logout/")
    _sso_configured()
    assert _login(client, world.member)["Location"] == "/"  # members keep password-only unless they enrol


def test_mfa_existing_staff_session_ends_when_sso_gets_configured(client, world):
    client.force_login(world.staff)
    assert client.get("/console/").status_code == 200
    _sso_configured()
    response = client.get("/console/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_mfa_password_sign_in_off_spares_only_break_glass_admins(client, world):
    with pytest.raises(Conflict):
        services.password_sign_in_set(enabled=False)  # nobody could undo it
    glass = UserFactory(username="glass", is_staff=True)
    services.break_glass_set(user=glass, enabled=True)
    other = client.__class__()
    other.force_login(world.member)  # a session from before the switch
    services.password_sign_in_set(enabled=False)
    refused = _login(client, world.member)
    assert refused.status_code == 403 and b"Password sign-in is turned off" in refused.content
    assert client.get("/").status_code == 302
    assert other.get("/").status_code == 302  # ended at its next request
    api = other.get("/api/v1/members/")
    assert api.status_code == 401
    assert _login(client, glass)["Location"] == "/"
    assert client.get("/console/").status_code == 200
    assert AuditEvent.objects.filter(action="identity.policy.password_sign_in", details__enabled=False).exists()
    with pytest.raises(Conflict):
        services.break_glass_set(user=glass, enabled=False)


def test_mfa_admin_site_login_goes_through_the_portal_sign_in(client):
    response = client.get("/django-admin/login/?next=/django-admin/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_mfa_sso_session_is_not_asked_for_a_local_code(client, world):
    _sso_configured()
    client.force_login(world.staff)
    session = client.session
    session["identity_method"] = "sso"
    session.save()
    assert client.get("/console/").status_code == 200


def test_mfa_enrolment_by_choice_from_a_signed_in_session(client, world):
    client.force_login(world.member)
    page = client.get("/accounts/mfa/setup/")
    secret = re.search(rb'data-testid="totp-secret">([A-Z2-7]+)<', page.content).group(1).decode()
    assert client.get("/accounts/mfa/setup/").content.count(secret.encode()) >= 1  # same key until confirmed
    bad = client.post("/accounts/mfa/setup/", {"code": "abc"})
    assert bad.status_code == 400 and b"6-digit" in bad.content
    assert client.post("/accounts/mfa/setup/", {"code": pyotp.TOTP(secret).now()}).status_code == 302
    assert TotpDevice.objects.get(user=world.member).confirmed
