"""ID-token validation against the real provider's published keys: bad tokens refused with a reason code, each
refusal logged once without the token or any secret. Tokens come from the real provider (a full code flow run by
the test as the relying party) or are minted with the provider's own signing key to carry one defect each."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from identity import flows, oidc
from identity.errors import SignInRefused
from tests.sso_providers import OTHER_CLIENT_ID, OTHER_CLIENT_SECRET, PORTAL_CLIENT_SECRET, OidcProvider

pytestmark = pytest.mark.django_db

NONCE = "n-0S6_WzA2Mj-expected-nonce-value"


def _claims(provider: OidcProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": provider.issuer, "aud": "portal", "sub": "ada", "nonce": NONCE, "iat": now, "exp": now + 300} | (
        overrides
    )


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def real_id_token(provider: OidcProvider, *, client_id: str, client_secret: str, slug: str, login: str) -> tuple:
    """A genuine ID token from the provider: the test plays the relying party through the code flow."""
    meta = oidc.metadata_get(issuer=provider.issuer)
    url, pending = oidc.authorization_start(
        provider_slug=slug,
        client_id=client_id,
        scopes="openid email profile groups",
        metadata=meta,
        redirect_uri=f"http://testserver/sso/oidc/{slug}/callback/",
        next_url="/",
    )
    callback = provider.sign_in(url, login=login)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    token = oidc.code_exchange(
        client_id=client_id, client_secret=client_secret, metadata=meta, pending=pending, code=code
    )
    return token["id_token"], pending.nonce


def _refusal(caplog: Any, company: Any, token: str, nonce: str = NONCE) -> SignInRefused:
    meta = oidc.metadata_get(issuer=company.issuer)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="identity.sign_in"), pytest.raises(SignInRefused) as caught:
        flows.oidc_id_token_accept(provider=company, metadata=meta, id_token=token, nonce=nonce)
    refusals = [r for r in caplog.records if r.name == "identity.sign_in"]
    assert len(refusals) == 1 and refusals[0].reason == caught.value.code
    assert token not in caplog.text and token.split(".")[1] not in caplog.text
    assert PORTAL_CLIENT_SECRET not in caplog.text
    return caught.value


def test_oidc_genuine_token_is_accepted_once_and_a_reused_nonce_is_refused(company, oidc_provider, caplog):
    oidc_provider.person("ada", groups=["x"])
    token, nonce = real_id_token(
        oidc_provider, client_id="portal", client_secret=PORTAL_CLIENT_SECRET, slug="company", login="ada"
    )
    meta = oidc.metadata_get(issuer=company.issuer)
    claims = flows.oidc_id_token_accept(provider=company, metadata=meta, id_token=token, nonce=nonce)
    assert claims["sub"] == "ada" and claims["aud"] == "portal" and claims["iss"] == oidc_provider.issuer
    error = _refusal(caplog, company, token, nonce)  # the same token again: the nonce is spent
    assert error.code == "oidc_nonce_replayed"
    assert "already used" in error.message


def test_oidc_token_of_another_application_wrong_audience_is_refused(company, oidc_provider, caplog):
    oidc_provider.person("ben", groups=[])
    token, nonce = real_id_token(
        oidc_provider, client_id=OTHER_CLIENT_ID, client_secret=OTHER_CLIENT_SECRET, slug="other", login="ben"
    )
    assert OTHER_CLIENT_SECRET not in caplog.text
    error = _refusal(caplog, company, token, nonce)
    assert error.code == "oidc_wrong_audience"
    assert error.message == "The ID token was issued for a different application."


@pytest.mark.parametrize(
    ("defect", "code", "message_part"),
    [
        pytest.param({"iss": "https://evil.example"}, "oidc_wrong_issuer", "different provider", id="wrong-issuer"),
        pytest.param({"aud": "someone-else"}, "oidc_wrong_audience", "different application", id="wrong-audience"),
        pytest.param(
            {"aud": ["portal", "someone-else"]}, "oidc_wrong_audience", "different application", id="multi-aud-no-azp"
        ),
        pytest.param({"azp": "someone-else"}, "oidc_wrong_audience", "different application", id="wrong-azp"),
        pytest.param({"exp": int(time.time()) - 3600}, "oidc_expired_token", "expired", id="expired"),
        pytest.param({"iat": int(time.time()) + 3600}, "oidc_malformed_token", "future", id="issued-in-future"),
        pytest.param({"nonce": "another-sign-in"}, "oidc_nonce_mismatch", "does not belong", id="nonce-mismatch"),
    ],
)
def test_oidc_token_with_a_bad_claim_is_refused(company, oidc_provider, caplog, defect, code, message_part):
    token = oidc_provider.mint(_claims(oidc_provider, **defect))
    error = _refusal(caplog, company, token)
    assert error.code == code
    assert message_part in error.message


def test_oidc_none_algorithm_token_is_refused(company, oidc_provider, caplog):
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(oidc_provider))}."
    error = _refusal(caplog, company, token)
    assert error.code == "oidc_unsigned_token"
    assert "not signed" in error.message


def test_oidc_token_signed_with_the_client_secret_hs256_is_refused(company, oidc_provider, caplog):
    from joserfc import jwt
    from joserfc.jwk import OctKey

    token = jwt.encode({"alg": "HS256"}, _claims(oidc_provider), OctKey.import_key(PORTAL_CLIENT_SECRET))
    error = _refusal(caplog, company, token)
    assert error.code == "oidc_bad_algorithm"


def test_oidc_token_signed_by_another_key_under_the_providers_key_id_is_refused(company, oidc_provider, caplog):
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    forger = RSAKey.generate_key(2048, parameters={"kid": "test-signing-1"})
    token = jwt.encode({"alg": "RS256", "kid": "test-signing-1"}, _claims(oidc_provider), forger)
    error = _refusal(caplog, company, token)
    assert error.code == "oidc_bad_signature"


def test_oidc_tampered_token_is_refused(company, oidc_provider, caplog):
    header, _payload, signature = oidc_provider.mint(_claims(oidc_provider)).split(".")
    token = f"{header}.{_b64(_claims(oidc_provider, sub='admin'))}.{signature}"
    error = _refusal(caplog, company, token)
    assert error.code == "oidc_bad_signature"


def test_oidc_well_formed_token_from_the_provider_key_is_accepted(company, oidc_provider):
    """The control case of the table above: the same minting, no defect, is accepted."""
    meta = oidc.metadata_get(issuer=company.issuer)
    token = oidc_provider.mint(_claims(oidc_provider, nonce="control-nonce"))
    claims = flows.oidc_id_token_accept(provider=company, metadata=meta, id_token=token, nonce="control-nonce")
    assert claims["sub"] == "ada"


def test_oidc_discovery_naming_a_different_issuer_is_refused(db, oidc_provider):
    # the same provider reached at 127.0.0.1: its discovery document names http://localhost:<port> as issuer
    configured = oidc_provider.issuer.replace("localhost", "127.0.0.1")
    with pytest.raises(SignInRefused) as caught:
        oidc.metadata_get(issuer=configured)
    assert caught.value.code == "oidc_discovery_issuer_mismatch"
