"""Test-wide fixtures. The database is a real embedded PostgreSQL 18 + pgvector (PORTAL_EPHEMERAL_DB=1, set by
`make test`), the engine a real llama-server (see tests/engine.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PORTAL_EPHEMERAL_DB", "1")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_local_caches():  # type: ignore[no-untyped-def]
    """In-process caches (keys, policies, prices) never carry rows of an earlier test's rolled-back transaction."""
    from core.localcache import local_caches_clear

    local_caches_clear()
    yield
    local_caches_clear()


pytest_plugins = ["tests.fixtures", "tests.sso_providers"]
