"""Suspending a department in the console refuses its users and keys at once: on pages, on the REST API and on the
chat WebSocket; reactivating lets them back in."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client
from django.urls import reverse

from chat.models import Conversation
from tenants.models import Role, Tenant
from tenants.services import api_key_create
from tests.factories import MembershipFactory, TenantFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)  # the socket's ORM calls run in other threads


def socket_frames(user: Any, conversation_id: int) -> tuple[bool, dict[str, Any] | None, int | None]:
    """Open the chat socket as ``user``: (accepted, first frame if one came, close code if it closed)."""
    from portal.asgi import application

    browser = Client()
    browser.force_login(user)
    cookie = browser.cookies[settings.SESSION_COOKIE_NAME].value

    async def run() -> tuple[bool, dict[str, Any] | None, int | None]:
        comm = WebsocketCommunicator(
            application,
            f"/ws/chat/{conversation_id}/",
            headers=[
                (b"origin", b"http://testserver"),
                (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
            ],
        )
        connected, _ = await comm.connect(timeout=10)
        frame = code = None
        if connected and not await comm.receive_nothing(timeout=0.5):
            output = await comm.receive_output(timeout=5)
            if output["type"] == "websocket.send":
                import json

                frame = json.loads(output["text"])
                output = await comm.receive_output(timeout=5)
            if output["type"] == "websocket.close":
                code = output.get("code")
        await comm.disconnect()
        return connected, frame, code

    return async_to_sync(run)()


def test_suspension_refuses_pages_api_and_socket_at_once(django_user_model):
    tenant = TenantFactory(slug="alpha", name="Alpha")
    admin = MembershipFactory(tenant=tenant, user=UserFactory(username="alpha-admin"), role=Role.ADMIN).user
    member = MembershipFactory(tenant=tenant, user=UserFactory(username="alpha-member"), role=Role.MEMBER).user
    staff = UserFactory(username="platform-staff", is_staff=True)
    conversation = Conversation.objects.create(tenant=tenant, user=member)
    _, secret = api_key_create(tenant=tenant, name="crm", role=Role.MEMBER)

    admin_page, member_page, api = Client(), Client(), Client()
    admin_page.force_login(admin)
    member_page.force_login(member)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    tenant_api = f"/api/v1/tenants/{tenant.pk}/"

    # before: everything works
    assert admin_page.get(reverse("console:tenant_detail", kwargs={"tenant_id": tenant.pk})).status_code == 200
    assert member_page.get("/chat/").status_code == 200
    assert api.get(tenant_api, **bearer).status_code == 200
    connected, frame, code = socket_frames(member, conversation.pk)
    assert connected and frame is None and code is None

    staff_page = Client()
    staff_page.force_login(staff)
    response = staff_page.post(
        reverse("console:tenant_status", kwargs={"tenant_id": tenant.pk}), {"status": "suspended"}
    )
    assert response.status_code == 302
    assert Tenant.objects.get(pk=tenant.pk).status == "suspended"

    # after: refused everywhere, with the same sessions and key
    console = admin_page.get(reverse("console:tenant_detail", kwargs={"tenant_id": tenant.pk}))
    assert console.status_code == 403 and b'data-code="tenant_suspended"' in console.content
    assert member_page.get("/chat/").status_code == 403
    response = api.get(tenant_api, **bearer)
    assert response.status_code == 403 and response.json()["code"] == "tenant_suspended"
    connected, frame, code = socket_frames(member, conversation.pk)
    assert frame is not None and frame["code"] == "tenant_suspended"
    assert code == 4403

    # reactivated: back in
    staff_page.post(reverse("console:tenant_status", kwargs={"tenant_id": tenant.pk}), {"status": "active"})
    assert admin_page.get(reverse("console:tenant_detail", kwargs={"tenant_id": tenant.pk})).status_code == 200
    assert api.get(tenant_api, **bearer).status_code == 200
    assert socket_frames(member, conversation.pk)[1:] == (None, None)
