"""What enterprise sign-in costs the portal (``make bench-sso``).

Setup: a throw-away PostgreSQL (``PORTAL_EPHEMERAL_DB=1``), the real OpenID provider of the tests
(node-oidc-provider, tests/oidc_provider) and the pysaml2 identity provider (xmlsec1 signatures); the portal runs
in process behind Django's test client (no network hop to the portal itself).

1. OIDC callback: the portal's side of a sign-in (code exchange and userinfo at the provider over HTTP, ID-token
   checks against the cached JWKS, nonce spent, account and memberships synced); the provider's login page is
   driven beforehand and not timed;
2. SAML ACS: verifying a signed response (xmlsec1) and signing in;
3. SCIM deactivation while ``--sessions`` other browser sessions are stored (ending the person's sessions scans
   the session table).

Ends with one line: ``oidc_callback_p50_ms=<x> saml_acs_p50_ms=<x> scim_deactivate_ms=<x> sessions=<n>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=5000)
    args = parser.parse_args()
    os.environ.setdefault("PORTAL_EPHEMERAL_DB", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.test import Client

    from identity.services import group_mapping_set, provider_create, scim_token_issue
    from tenants.services import tenant_create
    from tests.sso_providers import (
        PORTAL_CLIENT_ID,
        PORTAL_CLIENT_SECRET,
        OidcProvider,
        SamlIdp,
        oidc_provider_install,
    )

    call_command("migrate", verbosity=0)
    oidc_provider_install()
    work = Path(tempfile.mkdtemp(prefix="bench-sso-"))
    (work / "oidc").mkdir()
    (work / "saml").mkdir()
    idp = OidcProvider(
        work / "oidc",
        redirect_uris=["http://testserver/sso/oidc/company/callback/"],
        post_logout_redirect_uris=["http://testserver/accounts/login/"],
    ).start()
    saml_idp = SamlIdp(work / "saml")
    try:
        finance = tenant_create(name="Finance", slug="finance")
        company = provider_create(
            kind="oidc",
            name="Company",
            slug="company",
            issuer=idp.issuer,
            client_id=PORTAL_CLIENT_ID,
            client_secret=PORTAL_CLIENT_SECRET,
        )
        corp = provider_create(
            kind="saml",
            name="Corp",
            slug="corp",
            idp_entity_id=saml_idp.entity_id,
            idp_sso_url=saml_idp.sso_url,
            idp_certificate=saml_idp.certificate,
        )
        for provider in (company, corp):
            group_mapping_set(provider=provider, group="fin", tenant=finance, role="member")

        oidc_ms: list[float] = []
        for i in range(args.rounds):
            login = f"person{i}"
            idp.person(login, groups=["fin"])
            client = Client()
            start = client.get("/sso/oidc/company/login/")
            callback = urlsplit(idp.sign_in(start["Location"], login=login))
            t0 = time.perf_counter()
            response = client.get(f"{callback.path}?{callback.query}")
            oidc_ms.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 302 and response["Location"] == "/", response.content[:300]

        saml_ms: list[float] = []
        for i in range(args.rounds):
            login = f"saml{i}"
            saml_idp.person(login, groups=["fin"])
            client = Client()
            start = client.get("/sso/saml/corp/login/")
            metadata = client.get("/sso/saml/corp/metadata/").content.decode()
            acs, form = saml_idp.sso(start["Location"], sp_metadata=metadata, login=login)
            t0 = time.perf_counter()
            response = client.post(urlsplit(acs).path, form)
            saml_ms.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 302, response.content[:300]

        # stored sessions of other people, then deactivate one person by SCIM
        others = list(User.objects.order_by("pk")[:1])
        for n in range(args.sessions):
            store = SessionStore()
            store["_auth_user_id"] = str(others[0].pk if n % 2 else 10**9 + n)
            store.create()
        token = scim_token_issue(provider=company)
        scim = Client()
        bearer = f"Bearer {token}"
        created = scim.post(
            "/scim/v2/Users",
            data=json.dumps({"userName": "leaver@corp.example", "active": True}),
            content_type="application/scim+json",
            HTTP_AUTHORIZATION=bearer,
        ).json()
        t0 = time.perf_counter()
        done = scim.patch(
            f"/scim/v2/Users/{created['id']}",
            data=json.dumps({"Operations": [{"op": "replace", "path": "active", "value": False}]}),
            content_type="application/scim+json",
            HTTP_AUTHORIZATION=bearer,
        )
        deactivate_ms = (time.perf_counter() - t0) * 1000
        assert done.status_code == 200 and done.json()["active"] is False
    finally:
        idp.stop()

    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    for label, values in (("OIDC callback", oidc_ms), ("SAML ACS", saml_ms)):
        print(f"{label} ({args.rounds} sign-ins): p50 {statistics.median(values):.1f} ms, p95 {p(values, 0.95):.1f} ms")
    print(f"SCIM deactivation with {args.sessions} stored sessions: {deactivate_ms:.0f} ms")
    print(
        f"oidc_callback_p50_ms={statistics.median(oidc_ms):.1f} saml_acs_p50_ms={statistics.median(saml_ms):.1f} "
        f"scim_deactivate_ms={deactivate_ms:.0f} sessions={args.sessions}"
    )


if __name__ == "__main__":
    main()
