"""Test-wide fixtures. The database is a real embedded PostgreSQL 18 + pgvector (PORTAL_EPHEMERAL_DB=1, set by
`make test`), the engine a real llama-server (see tests/engine.py)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PORTAL_EPHEMERAL_DB", "1")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


pytest_plugins = ["tests.fixtures", "tests.sso_providers"]
