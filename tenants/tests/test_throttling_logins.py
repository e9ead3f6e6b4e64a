"""Guessing is throttled: wrong passwords lock the account and the address (django-axes), failed API-key attempts
are limited per address."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from tenants.services import api_key_create

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


@pytest.fixture(autouse=True)
def _clean_cache() -> Any:
    cache.clear()
    yield
    cache.clear()


def _login(client: Client, username: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address)


def test_an_account_is_locked_after_repeated_wrong_passwords(world: Any, settings: Any) -> None:
    world.member.set_password("right-password-123")
    world.member.save()
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _login(client, world.member.username, f"wrong-{n}", address=f"10.0.1.{n}").status_code == 200
    locked = _login(client, world.member.username, "wrong-last", address="10.0.2.1")
    assert locked.status_code == 429
    # the right password from yet another address is refused too: the account is locked, not the address
    right = _login(client, world.member.username, "right-password-123", address="10.0.3.1")
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    assert "locked" in right.content.decode().lower()


def test_an_address_is_locked_after_guessing_many_accounts(world: Any, settings: Any) -> None:
    world.viewer.set_password("viewer-password-123")
    world.viewer.save()
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, f"nobody-{n}", "guess", address="10.9.9.9")
    assert _login(client, world.viewer.username, "viewer-password-123", address="10.9.9.9").status_code == 429
    # the same person from their own address signs in
    assert _login(Client(), world.viewer.username, "viewer-password-123", address="10.0.0.7").status_code == 302


def test_a_success_before_the_limit_starts_the_count_again(world: Any, settings: Any) -> None:
    world.admin.set_password("admin-password-123")
    world.admin.save()
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(Client(), world.admin.username, f"wrong-{n}")
    assert _login(Client(), world.admin.username, "admin-password-123").status_code == 302
    assert _login(Client(), world.admin.username, "wrong-again").status_code == 200


def test_failed_api_key_attempts_are_limited_per_address(world: Any, settings: Any) -> None:
    settings.API_KEY_FAILURES_PER_ADDRESS = 5
    _, secret = api_key_create(tenant=world.tenant, name="ci", created_by=world.admin)
    guesser = APIClient(REMOTE_ADDR="10.6.6.6")
    for n in range(5):
        guesser.credentials(HTTP_AUTHORIZATION=f"Bearer ep_{n:012d}_guess")
        assert guesser.get("/api/v1/tenants/").status_code == 401
    guesser.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    blocked = guesser.get("/api/v1/tenants/")
    assert blocked.status_code == 429 and blocked.json()["code"] == "too_many_failed_attempts"
    # /v1 counts the same failures
    assert guesser.get("/v1/models").status_code == 429
    # a caller from another address with the right key is unaffected
    other = APIClient(REMOTE_ADDR="10.7.7.7")
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert other.get("/api/v1/tenants/").status_code == 200
