"""Fixtures of the enterprise sign-in tests: the real providers (tests/sso_providers.py) and portal-side setup."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache

from tests.sso_providers import PORTAL_CLIENT_ID, PORTAL_CLIENT_SECRET, OidcProvider


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def company(db: Any, oidc_provider: OidcProvider) -> Any:
    """The portal's provider "company" pointing at the real OpenID provider."""
    from identity.services import provider_create

    return provider_create(
        kind="oidc",
        name="Company",
        slug="company",
        issuer=oidc_provider.issuer,
        client_id=PORTAL_CLIENT_ID,
        client_secret=PORTAL_CLIENT_SECRET,
    )


def oidc_sign_in(client: Any, provider: OidcProvider, *, login: str, slug: str = "company") -> Any:
    """Sign in through the real provider's login page: the portal's redirect, the provider's form, the callback."""
    start = client.get(f"/sso/oidc/{slug}/login/")
    assert start.status_code == 302, start.content[:500]
    callback = provider.sign_in(start["Location"], login=login)
    parts = urlsplit(callback)
    assert parts.netloc == "testserver", callback
    return client.get(f"{parts.path}?{parts.query}")
