"""Test-wide fixtures. The database is a real embedded PostgreSQL 18 + pgvector (PORTAL_EPHEMERAL_DB=1, set by
`make test`), the engine a real llama-server (see tests/engine.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PORTAL_EPHEMERAL_DB", "1")
# the suite runs on the small model (fast), and so do the processes it starts; `make run` defaults to qwen
os.environ.setdefault("PORTAL_MODEL", "smollm2")


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


@pytest.fixture(autouse=True)
def _answers_settled():  # type: ignore[no-untyped-def]
    """An answer the /v1 door persists after its [DONE] (on a thread of its own) is settled before the test's
    database is rolled back or flushed, so that it never lands in, or holds a connection into, the next test."""
    yield
    from tests.live_server import finishes_settled

    finishes_settled(timeout=30.0)
