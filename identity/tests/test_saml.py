"""SAML 2.0 sign-in against a real pysaml2 identity provider with signed assertions (xmlsec1): accepted once, and
tampered, unsigned, expired, replayed and misaddressed answers refused with clear errors."""

from __future__ import annotations

import base64
import logging
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from identity.models import ExternalIdentity
from identity.services import group_mapping_set, provider_create
from tenants.models import AuditEvent, Membership, Role
from tests.factories import TenantFactory
from tests.sso_providers import SamlIdp

pytestmark = pytest.mark.django_db


@pytest.fixture
def corp(db: Any, saml_idp: SamlIdp) -> Any:
    provider = provider_create(
        kind="saml",
        name="Corp ADFS",
        slug="corp",
        idp_entity_id=saml_idp.entity_id,
        idp_sso_url=saml_idp.sso_url,
        idp_certificate=saml_idp.certificate,
    )
    research = TenantFactory(slug="research", name="Research")
    group_mapping_set(provider=provider, group="researchers", tenant=research, role=Role.MEMBER)
    saml_idp.person("gus", groups=["researchers"])
    return provider, research


def _answer(client: Any, idp: SamlIdp, **kwargs: Any) -> tuple[str, dict[str, str]]:
    start = client.get("/sso/saml/corp/login/")
    assert start.status_code == 302 and start["Location"].startswith(idp.sso_url + "?SAMLRequest=")
    metadata = client.get("/sso/saml/corp/metadata/").content.decode()
    acs, form = idp.sso(start["Location"], sp_metadata=metadata, login=kwargs.pop("login", "gus"), **kwargs)
    assert acs == "http://testserver/sso/saml/corp/acs/"
    return urlsplit(acs).path, form


def _xml(form: dict[str, str]) -> str:
    return base64.b64decode(form["SAMLResponse"]).decode()


def _refused(client: Any, path: str, form: dict[str, str], caplog: Any) -> tuple[str, str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="identity.sign_in"):
        response = client.post(path, form)
    assert response.status_code == 401, response.content[:300]
    reasons = [r.reason for r in caplog.records if r.name == "identity.sign_in"]
    assert len(reasons) == 1
    assert form["SAMLResponse"][:40] not in caplog.text
    assert client.get("/").status_code == 302  # not signed in
    return reasons[0], response.content.decode()


def test_saml_signed_assertion_signs_in_to_the_mapped_department(client, corp, saml_idp):
    _provider, research = corp
    path, form = _answer(client, saml_idp)
    assert "<ds:Signature" in _xml(form) or "Signature" in _xml(form)
    response = client.post(path, form)
    assert response.status_code == 302 and response["Location"] == "/"
    identity = ExternalIdentity.objects.select_related("user").get(subject="saml-gus")
    assert identity.user.email == "gus@example.com"
    assert Membership.unscoped.get(user=identity.user).tenant_id == research.pk
    assert Membership.unscoped.get(user=identity.user).role == Role.MEMBER
    assert b"Welcome to Research" in client.get("/").content
    assert AuditEvent.objects.filter(action="identity.sign_in", actor=identity.user, details__kind="saml").exists()


def test_saml_metadata_names_the_acs_and_wants_signed_assertions(client, corp):
    xml = client.get("/sso/saml/corp/metadata/").content.decode()
    assert 'entityID="http://testserver/sso/saml/corp/metadata/"' in xml
    assert 'Location="http://testserver/sso/saml/corp/acs/"' in xml
    assert 'WantAssertionsSigned="true"' in xml


def test_saml_unsigned_assertion_is_refused(client, corp, saml_idp, caplog):
    path, form = _answer(client, saml_idp, sign=False)
    assert "SignatureValue" not in _xml(form)
    reason, page = _refused(client, path, form, caplog)
    assert reason == "saml_unsigned"
    assert "signed assertions are required" in page


def test_saml_tampered_assertion_is_refused(client, corp, saml_idp, caplog):
    path, form = _answer(client, saml_idp)
    xml = _xml(form)
    assert "researchers" in xml
    tampered = xml.replace(">researchers<", ">administrators<")
    assert tampered != xml
    form["SAMLResponse"] = base64.b64encode(tampered.encode()).decode()
    reason, page = _refused(client, path, form, caplog)
    assert reason == "saml_bad_signature"
    assert "signature does not match" in page


def test_saml_expired_assertion_is_refused(client, corp, saml_idp, caplog):
    path, form = _answer(client, saml_idp, issued_minutes_ago=120, lifetime_minutes=5)
    reason, page = _refused(client, path, form, caplog)
    assert reason == "saml_expired"
    assert "has expired" in page


def test_saml_replayed_response_is_refused(client, corp, saml_idp, caplog):
    path, form = _answer(client, saml_idp)
    assert client.post(path, form).status_code == 302
    client.post("/accounts/logout/")
    reason, page = _refused(client, path, form, caplog)
    assert reason in {"saml_unsolicited", "saml_assertion_replayed"}
    assert "already used" in page


def test_saml_assertion_replayed_into_a_new_sign_in_is_refused(client, corp, saml_idp, caplog):
    """Even answering a fresh request (the attacker starts one), an assertion id is accepted once."""
    path, form = _answer(client, saml_idp)
    assert client.post(path, form).status_code == 302
    client.post("/accounts/logout/")
    from identity import views

    original = views.saml.in_response_to
    first_request = original(form["SAMLResponse"])
    # a new sign-in is in flight; pretend its id is the old one, so that only the assertion-id guard is left
    client.get("/sso/saml/corp/login/")
    from django.core.cache import cache

    cache.set(f"identity:saml:req:{first_request}", {"provider": "corp", "next": "/"}, 600)
    client.cookies[views.SAML_BINDING_COOKIE] = views._binding(first_request)
    reason, page = _refused(client, path, form, caplog)
    assert reason == "saml_assertion_replayed"
    assert "already used" in page


def test_saml_assertion_for_another_service_provider_is_refused(client, corp, saml_idp, caplog):
    path, form = _answer(client, saml_idp, audience="https://other.example/sp")
    assert re.search(r"Audience>https://other.example/sp</", _xml(form))
    reason, page = _refused(client, path, form, caplog)
    assert reason == "saml_wrong_audience"
    assert "different application" in page


def test_saml_response_addressed_to_another_recipient_is_refused(client, corp, saml_idp, caplog):
    path, form = _answer(client, saml_idp, recipient="https://other.example/sso/acs/")
    assert 'Recipient="https://other.example/sso/acs/"' in _xml(form)
    reason, page = _refused(client, path, form, caplog)
    assert reason == "saml_wrong_recipient"
    assert "addressed to a different URL" in page
