"""Django's middleware hooks run on the event loop under ASGI (core/inline_middleware.py), with the same behaviour:
CSRF, sessions, sign-in and messages work through the async handler, and only a saved session takes a thread."""

from __future__ import annotations

import re
from typing import Any

import django.utils.deprecation
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient

import core.inline_middleware

pytestmark = pytest.mark.django_db


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The middleware hooks sent to a thread: by Django's own mixin and by ours."""
    seen: list[str] = []

    def counting(module: Any) -> None:
        def wrapper(fn: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(getattr(fn, "__qualname__", repr(fn)))
            return sync_to_async(fn, *args, **kwargs)

        monkeypatch.setattr(module, "sync_to_async", wrapper)

    counting(django.utils.deprecation)
    counting(core.inline_middleware)
    return seen


def test_a_request_through_the_async_handler_takes_no_thread_hop_in_the_middleware(hops: list[str]) -> None:
    async def go() -> int:
        response = await AsyncClient().get("/accounts/login/")
        return response.status_code

    assert async_to_sync(go)() == 200
    assert hops == []


def test_csrf_sign_in_and_the_session_work_through_the_async_handler(hops: list[str]) -> None:
    User.objects.create_user(username="ada", password="a long enough password 1")

    async def go() -> tuple[int, int, int, str]:
        client = AsyncClient(enforce_csrf_checks=True)
        page = await client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
        assert token is not None, "the login form carries a CSRF token"
        refused = await client.post("/accounts/login/", {"username": "ada", "password": "a long enough password 1"})
        signed_in = await client.post(
            "/accounts/login/",
            {"username": "ada", "password": "a long enough password 1", "csrfmiddlewaretoken": token.group(1)},
        )
        home = await client.get("/accounts/login/")  # signed in: the login page sends you on
        return refused.status_code, signed_in.status_code, home.status_code, home.get("Location", "")

    refused, signed_in, home, location = async_to_sync(go)()
    assert refused == 403  # no token: CSRF refused it, inline
    assert signed_in == 302
    assert home == 302 and "/accounts/login/" not in location
    assert any("SessionMiddleware.process_response" in h for h in hops)  # the session was saved in the thread
    assert not any("CsrfViewMiddleware" in h or "SecurityMiddleware" in h for h in hops)


def test_the_deploy_check_finds_the_security_middleware_by_class(settings: Any) -> None:
    from core.inline_middleware import middleware_check

    assert middleware_check() == []
    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if not m.endswith(("SecurityMiddleware", "CsrfViewMiddleware"))
    ]
    assert sorted(w.id for w in middleware_check()) == ["portal.W001", "portal.W003"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.security.SecurityMiddleware"]
    assert [w.id for w in middleware_check()] == ["portal.W003"]
