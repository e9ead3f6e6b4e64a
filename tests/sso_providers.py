"""Real identity providers for the SSO tests.

- ``OidcProvider``: node-oidc-provider (OpenID-certified) in a child process, installed from
  tests/oidc_provider/package-lock.json by scripts/install_test_oidc_provider.sh. Its signing key is generated here,
  so that tests can also mint tokens that carry the provider's real signature but a wrong issuer or audience.
- ``SamlIdp``: a pysaml2 identity provider (signatures by xmlsec1) answering the portal's AuthnRequests with signed
  responses; knobs for unsigned, expired and tampered answers.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.engine import free_port

ROOT = Path(__file__).resolve().parent.parent
OIDC_DIR = ROOT / "tests" / "oidc_provider"
PORTAL_CLIENT_ID = "portal"
PORTAL_CLIENT_SECRET = "portal-client-secret-0123456789abcdef"
OTHER_CLIENT_ID = "other-app"
OTHER_CLIENT_SECRET = "other-client-secret-0123456789abcdef"


def oidc_provider_install() -> None:
    subprocess.run([str(ROOT / "scripts" / "install_test_oidc_provider.sh")], check=True, timeout=600)


class OidcProvider:
    def __init__(self, workdir: Path, *, redirect_uris: list[str], post_logout_redirect_uris: list[str]) -> None:
        from joserfc.jwk import RSAKey

        self.workdir = workdir
        self.port = free_port()
        self.issuer = f"http://localhost:{self.port}"
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-signing-1", "use": "sig", "alg": "RS256"})
        self.accounts_file = workdir / "accounts.json"
        self.accounts: dict[str, dict[str, Any]] = {}
        self.save_accounts()
        clients = [
            {
                "client_id": cid,
                "client_secret": secret,
                "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": post_logout_redirect_uris,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
            for cid, secret in ((PORTAL_CLIENT_ID, PORTAL_CLIENT_SECRET), (OTHER_CLIENT_ID, OTHER_CLIENT_SECRET))
        ]
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "clients": clients,
            "jwks": {"keys": [self.key.as_dict(private=True)]},
            "accounts_file": str(self.accounts_file),
        }
        self.config_file = workdir / "provider.json"
        self.config_file.write_text(json.dumps(config))
        self.log_file = workdir / "provider.log"
        self.process: subprocess.Popen[bytes] | None = None

    def save_accounts(self) -> None:
        self.accounts_file.write_text(json.dumps(self.accounts))

    def person(self, login: str, *, groups: list[str], email: str = "", name: str = "") -> None:
        self.accounts[login] = {
            "email": email or f"{login}@example.com",
            "name": name or login.title(),
            "groups": groups,
        }
        self.save_accounts()

    def start(self) -> OidcProvider:
        log = self.log_file.open("wb")
        self.process = subprocess.Popen(
            ["node", str(OIDC_DIR / "server.mjs"), str(self.config_file)],
            cwd=OIDC_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the OpenID provider exited: {self.log_file.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the OpenID provider did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def mint(self, claims: dict[str, Any], *, alg: str = "RS256", header: dict[str, Any] | None = None) -> str:
        """A token signed with the provider's own key (what only the provider could do), claims as given."""
        from joserfc import jwt

        return jwt.encode({"alg": alg, "kid": "test-signing-1", **(header or {})}, claims, self.key)

    # --- driving the provider's login pages like a browser would (httpx, its own cookie jar) ---------------------
    def sign_in(self, authorize_url: str, *, login: str, http: httpx.Client | None = None) -> str:
        """Follow the authorization request through the provider's login page; return the URL it redirects to
        (the portal's callback with code and state), without following it."""
        own = http is None
        http = http or httpx.Client(timeout=10)
        try:
            url = authorize_url
            for _ in range(10):
                response = http.get(url)
                if response.status_code in (302, 303):
                    url = str(response.next_request.url) if response.next_request else response.headers["location"]
                    if not url.startswith(self.issuer):
                        return url
                    continue
                if response.status_code != 200:
                    raise AssertionError(f"provider answered {response.status_code}: {response.text[:500]}")
                form = re.search(r'<form[^>]*action="([^"]+)"', response.text)
                assert form, response.text[:1000]
                action = httpx.URL(url).join(form.group(1).replace("&amp;", "&"))
                posted = http.post(action, data={"prompt": "login", "login": login, "password": "any-password"})
                assert posted.status_code in (302, 303), posted.text[:500]
                url = posted.headers["location"]
                if url.startswith("/"):
                    url = self.issuer + url
                if not url.startswith(self.issuer):
                    return url
            raise AssertionError("too many redirects at the provider")
        finally:
            if own:
                http.close()


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory, sso_portal_port: int) -> Iterator[OidcProvider]:
    oidc_provider_install()
    workdir = tmp_path_factory.mktemp("oidc-provider")
    bases = ["http://testserver", f"http://127.0.0.1:{sso_portal_port}"]
    provider = OidcProvider(
        workdir,
        redirect_uris=[f"{b}/sso/oidc/{slug}/callback/" for b in bases for slug in ("company", "other", "sso")],
        post_logout_redirect_uris=[f"{b}/accounts/login/" for b in bases],
    ).start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="session")
def sso_portal_port() -> int:
    """The port of the portal's live server in browser tests (fixed for the session: redirect URIs are registered
    at the provider once)."""
    return free_port()


# ------------------------------------------------------------------------------------------------ SAML
def self_signed_certificate(common_name: str) -> tuple[str, str]:
    """(private key PEM, certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@contextlib.contextmanager
def idp_clock_behind(*, minutes: int) -> Iterator[None]:
    """pysaml2's clock (``saml2.time_util``, which stamps IssueInstant, NotBefore and NotOnOrAfter) set back."""
    if not minutes:
        yield
        return
    import time as real_time
    from datetime import datetime as real_datetime
    from unittest import mock

    import saml2.time_util as time_util

    shift = minutes * 60

    class ShiftedTime:
        def __getattr__(self, name: str) -> Any:
            return getattr(real_time, name)

        def time(self) -> float:
            return real_time.time() - shift

        def gmtime(self, seconds: float | None = None) -> Any:
            return real_time.gmtime(real_time.time() - shift if seconds is None else seconds)

    class ShiftedDatetime(real_datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
            return real_datetime.now(tz) - dt.timedelta(seconds=shift)

    with mock.patch.object(time_util, "time", ShiftedTime()), mock.patch.object(time_util, "datetime", ShiftedDatetime):
        yield


class SamlIdp:
    """A pysaml2 IdP. ``sso(url)`` takes the portal's redirect (HTTP-Redirect binding) and returns what the IdP's
    auto-submitting form would post to the ACS: (acs_url, {"SAMLResponse": ..., "RelayState": ...})."""

    def __init__(self, workdir: Path, *, entity_id: str = "https://idp.example.test/saml") -> None:
        self.workdir = workdir
        self.entity_id = entity_id
        self.sso_url = "https://idp.example.test/saml/sso"
        key_pem, cert_pem = self_signed_certificate("idp.example.test")
        self.key_file = workdir / "idp.key"
        self.cert_file = workdir / "idp.crt"
        self.key_file.write_text(key_pem)
        self.cert_file.write_text(cert_pem)
        self.certificate = cert_pem
        self.people: dict[str, dict[str, list[str]]] = {}

    def person(self, login: str, *, groups: list[str], email: str = "") -> None:
        self.people[login] = {
            "uid": [login],
            "mail": [email or f"{login}@example.com"],
            "givenName": [login.title()],
            "groups": groups,
        }

    def _server(self, sp_metadata: str, *, lifetime_minutes: int = 5, extra_metadata: list[str] = ()) -> Any:  # type: ignore[assignment]
        import shutil

        from saml2 import BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig
        from saml2.server import Server

        conf = {
            "entityid": self.entity_id,
            "xmlsec_binary": shutil.which("xmlsec1"),
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(self.sso_url, BINDING_HTTP_REDIRECT)]},
                    "policy": {"default": {"lifetime": {"minutes": lifetime_minutes}, "attribute_restrictions": None}},
                    "name_id_format": ["urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"],
                }
            },
            "metadata": {"inline": [sp_metadata, *extra_metadata]},
            "allow_unknown_attributes": True,
        }
        config = IdPConfig()
        config.load(conf)
        return Server(config=config)

    def sso(
        self,
        redirect_url: str,
        *,
        sp_metadata: str,
        login: str,
        sign: bool = True,
        lifetime_minutes: int = 5,
        issued_minutes_ago: int = 0,
        audience: str | None = None,
        recipient: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """``audience``: issue the assertion for another service provider (as if the IdP knew one at that entity id
        with the portal's ACS); ``issued_minutes_ago``: the IdP's clock runs that far behind."""
        from saml2 import BINDING_HTTP_REDIRECT

        query = parse_qs(urlsplit(redirect_url).query)
        extra = []
        if audience:
            portal_entity = re.search(r'entityID="([^"]+)"', sp_metadata)
            assert portal_entity
            extra.append(sp_metadata.replace(portal_entity.group(1), audience))
        server = self._server(sp_metadata, lifetime_minutes=lifetime_minutes, extra_metadata=extra)
        request = server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT)
        message = request.message
        destination = message.assertion_consumer_service_url
        sp_entity_id = message.issuer.text
        with idp_clock_behind(minutes=issued_minutes_ago):
            response = self._respond(server, message, recipient or destination, audience or sp_entity_id, login, sign)
        encoded = base64.b64encode(str(response).encode()).decode()
        return destination, {"SAMLResponse": encoded, "RelayState": query.get("RelayState", [""])[0]}

    def _respond(self, server: Any, message: Any, destination: str, sp_entity_id: str, login: str, sign: bool) -> Any:
        from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID

        return server.create_authn_response(
            identity=self.people[login],
            in_response_to=message.id,
            destination=destination,
            sp_entity_id=sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=f"saml-{login}"),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password", "authn_auth": self.entity_id},
            sign_assertion=sign,
            sign_response=False,
        )


@pytest.fixture(scope="session")
def saml_idp(tmp_path_factory: pytest.TempPathFactory) -> SamlIdp:
    return SamlIdp(tmp_path_factory.mktemp("saml-idp"))


@pytest.fixture(autouse=True)
def _identity_policy_cache_fresh() -> Iterator[None]:
    """The sign-in policy is cached for a few seconds; a test starts and ends without another test's."""
    from django.core.cache import cache

    from identity.selectors import POLICY_CACHE_KEY

    cache.delete(POLICY_CACHE_KEY)
    yield
    cache.delete(POLICY_CACHE_KEY)
