"""One caller resolver (``tenants.auth``) behind all four doors: REST, ``/v1``, the chat socket and the agents
socket answer the same, fail-closed, for the same caller. The case that used to differ: a user whose only
department is suspended (the agents socket and the REST session answered 404, the chat socket 403)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from tenants.models import Role, Tenant
from tenants.services import api_key_create
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://testserver")


def _socket(user: Any, path: str) -> tuple[str, int]:
    """The error frame's code and the close code a socket answers with."""
    headers = [ORIGIN]
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))

    async def talk() -> tuple[str, int]:
        from portal.asgi import application

        comm = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await comm.connect(timeout=10)
        assert connected
        frame = await comm.receive_json_from(timeout=10)
        closed = await comm.receive_output(timeout=10)
        await comm.disconnect()
        return frame["code"], closed["code"]

    return async_to_sync(talk)()


def _rest(user: Any) -> tuple[str, int]:
    client = Client()
    if user is not None:
        client.force_login(user)
    response = client.get("/api/v1/conversations/")
    body = response.json()
    return (body.get("code", "") if isinstance(body, dict) and "code" in body else ""), response.status_code


def _doors(user: Any) -> dict[str, tuple[str, int]]:
    return {
        "rest": _rest(user),
        "chat_socket": _socket(user, "/ws/chat/987654/"),
        "agents_socket": _socket(user, "/ws/agents/runs/987654/"),
    }


def test_a_user_whose_only_department_is_suspended_is_refused_alike_at_every_door(world):
    _, secret = api_key_create(tenant=world.tenant, name="crm", role=Role.MEMBER)
    Tenant.objects.filter(pk=world.tenant.pk).update(status="suspended")

    assert _doors(world.member) == {
        "rest": ("tenant_suspended", 403),
        "chat_socket": ("tenant_suspended", 4403),
        "agents_socket": ("tenant_suspended", 4403),
    }
    v1 = Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert (v1.status_code, v1.json()["error"]["code"]) == (403, "tenant_suspended")


def test_a_suspended_department_is_skipped_when_the_user_has_an_active_one(world):
    from tests.factories import MembershipFactory

    MembershipFactory(tenant=world.other_tenant, user=world.member, role=Role.MEMBER)
    Tenant.objects.filter(pk=world.tenant.pk).update(status="suspended")
    # the active department is chosen: the conversation and the run are simply not there (404), never the
    # suspended department's data
    assert _doors(world.member) == {
        "rest": ("", 200),
        "chat_socket": ("not_found", 4404),
        "agents_socket": ("not_found", 4404),
    }


@pytest.mark.parametrize(
    "who, expected",
    [
        pytest.param(
            "anonymous",
            {
                "rest": ("not_authenticated", 401),
                "chat_socket": ("not_authenticated", 4401),
                "agents_socket": ("not_authenticated", 4401),
            },
            id="anonymous",
        ),
        pytest.param(
            "no_department",
            {
                "rest": ("not_found", 404),
                "chat_socket": ("not_found", 4404),
                "agents_socket": ("not_found", 4404),
            },
            id="no-department",
        ),
    ],
)
def test_callers_without_access_are_refused_alike(world, who, expected):
    user = None if who == "anonymous" else UserFactory(username="nobody")
    assert _doors(user) == expected


def test_v1_refuses_missing_and_unknown_keys_like_rest(world):
    missing = Client().get("/v1/models")
    unknown = Client().get("/v1/models", HTTP_AUTHORIZATION="Bearer pk_live_nope.nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "invalid_api_key")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "invalid_api_key")
    rest = Client().get("/api/v1/conversations/", HTTP_AUTHORIZATION="Bearer pk_live_nope.nope")
    assert rest.status_code == 401
