"""Test-wide fixtures. The database is a real embedded PostgreSQL 18 + pgvector (PORTAL_EPHEMERAL_DB=1, set by
`make test`), the engine a real llama-server (see tests/engine.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PORTAL_EPHEMERAL_DB", "1")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # the test client always comes from 127.0.0.1: the per-address limit on failed API-key attempts (tenants.lockout)
    # would carry one test's deliberate failures into the next; the tests of that limit set their own
    settings.API_KEY_FAILURES_PER_ADDRESS = 1_000_000
    # pages rendered in-process need no collectstatic manifest (the acceptance suite checks the hashed files as
    # the launcher serves them)
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_local_caches():  # type: ignore[no-untyped-def]
    """In-process caches (keys, policies, prices) never carry rows of an earlier test's rolled-back transaction."""
    from core.localcache import local_caches_clear

    local_caches_clear()
    yield
    local_caches_clear()


pytest_plugins = ["tests.fixtures", "tests.sso_providers"]
