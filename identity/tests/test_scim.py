"""SCIM 2.0 provisioning over HTTP: the provider's bearer token, Users (create, read, filter, patch, deactivate,
delete), Groups whose membership moves department membership, and deprovisioning that ends sessions, revokes API
keys and closes the person's open chat socket."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from identity.models import ExternalIdentity
from identity.services import group_mapping_set, provider_create, scim_token_issue
from tenants.models import ApiKey, AuditEvent, Membership, Role
from tenants.services import api_key_create
from tests.factories import TenantFactory

SCIM = "application/scim+json"


@pytest.fixture
def directory(db: Any) -> Any:
    provider = provider_create(
        kind="oidc",
        name="Okta",
        slug="okta",
        issuer="https://okta.example.test",
        client_id="portal",
        client_secret="not-used-by-scim-0123456789",
    )
    token = scim_token_issue(provider=provider)
    engineering = TenantFactory(slug="engineering", name="Engineering")
    group_mapping_set(provider=provider, group="eng", tenant=engineering, role=Role.MEMBER)
    group_mapping_set(provider=provider, group="eng-leads", tenant=engineering, role=Role.ADMIN)
    return provider, token, engineering


class Scim:
    def __init__(self, token: str) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path: str) -> Any:
        return self.client.get(f"/scim/v2/{path}", **self.headers)

    def send(self, method: str, path: str, body: dict[str, Any]) -> Any:
        return getattr(self.client, method)(
            f"/scim/v2/{path}", data=json.dumps(body), content_type=SCIM, **self.headers
        )

    def delete(self, path: str) -> Any:
        return self.client.delete(f"/scim/v2/{path}", **self.headers)


def _user(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": name.split("@")[0].title(), "familyName": "Doe"},
        "emails": [{"value": name, "type": "work", "primary": True}],
        "active": True,
        **extra,
    }


def _deactivate() -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "Bearer nope", "Bearer scim_000000000000_wrong", "Basic dXNlcjpwYXNz"])
def test_scim_refuses_requests_without_the_providers_token(directory, header):
    client = Client()
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get("/scim/v2/Users", **kwargs)
    assert response.status_code == 401
    body = response.json()
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "401"
    assert response["WWW-Authenticate"] == 'Bearer realm="scim"'


@pytest.mark.django_db
def test_scim_create_read_filter_and_uniqueness(directory):
    provider, token, _eng = directory
    scim = Scim(token)
    created = scim.send("post", "Users", _user("ann@corp.example", externalId="00u1"))
    assert created.status_code == 201, created.content
    assert created["Content-Type"].startswith(SCIM)
    body = created.json()
    assert body["userName"] == "ann@corp.example" and body["active"] is True and body["externalId"] == "00u1"
    assert body["meta"]["location"] == f"http://testserver/scim/v2/Users/{body['id']}"
    assert scim.get(f"Users/{body['id']}").json()["emails"][0]["value"] == "ann@corp.example"
    found = scim.get('Users?filter=userName eq "ann@corp.example"').json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == body["id"]
    assert scim.get('Users?filter=userName eq "nobody@corp.example"').json()["totalResults"] == 0
    again = scim.send("post", "Users", _user("ann@corp.example"))
    assert again.status_code == 409 and again.json()["scimType"] == "uniqueness"
    bad_filter = scim.get('Users?filter=emails co "corp"')
    assert bad_filter.status_code == 400 and bad_filter.json()["scimType"] == "invalidFilter"
    # another provider's token does not reach this provider's people
    other = provider_create(
        kind="oidc", name="Other", slug="other", issuer="https://o.example", client_id="x", client_secret="y"
    )
    assert Scim(scim_token_issue(provider=other)).get(f"Users/{body['id']}").status_code == 404
    user = ExternalIdentity.objects.get(provider=provider, scim_user_name="ann@corp.example").user
    assert not user.has_usable_password() and user.first_name == "Ann"


@pytest.mark.django_db
def test_scim_group_membership_moves_department_membership(directory):
    _provider, token, engineering = directory
    scim = Scim(token)
    ann = scim.send("post", "Users", _user("ann@corp.example")).json()["id"]
    bob = scim.send("post", "Users", _user("bob@corp.example")).json()["id"]
    group = scim.send("post", "Groups", {"displayName": "eng", "members": [{"value": ann}]})
    assert group.status_code == 201, group.content
    group_id = group.json()["id"]
    ann_user = ExternalIdentity.objects.get(scim_id=ann).user
    bob_user = ExternalIdentity.objects.get(scim_id=bob).user
    assert Membership.unscoped.get(user=ann_user, tenant=engineering).role == Role.MEMBER
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [
            {"op": "add", "path": "members", "value": [{"value": bob}]},
            {"op": "remove", "path": f'members[value eq "{ann}"]'},
        ],
    }
    assert scim.send("patch", f"Groups/{group_id}", patch).status_code == 200
    assert not Membership.unscoped.filter(user=ann_user, tenant=engineering).exists()
    assert Membership.unscoped.get(user=bob_user, tenant=engineering).role == Role.MEMBER
    leads = scim.send("post", "Groups", {"displayName": "eng-leads", "members": [{"value": bob}]}).json()["id"]
    assert Membership.unscoped.get(user=bob_user, tenant=engineering).role == Role.ADMIN
    assert {g["display"] for g in scim.get(f"Users/{bob}").json()["groups"]} == {"eng", "eng-leads"}
    assert scim.delete(f"Groups/{leads}").status_code == 204
    assert Membership.unscoped.get(user=bob_user, tenant=engineering).role == Role.MEMBER
    members = scim.get(f"Groups/{group_id}").json()["members"]
    assert [m["value"] for m in members] == [bob]
    actions = list(AuditEvent.objects.filter(tenant=engineering).values_list("action", flat=True))
    assert actions.count("identity.membership.grant") >= 3 and "identity.membership.revoke" in actions
    add_unknown = {"Operations": [{"op": "add", "path": "members", "value": [{"value": "not-a-user"}]}]}
    unknown = scim.send("patch", f"Groups/{group_id}", add_unknown)
    assert unknown.status_code == 400 and "Unknown member" in unknown.json()["detail"]


@pytest.mark.django_db(transaction=True)
async def test_scim_deactivation_closes_the_chat_socket_revokes_api_keys_and_ends_sessions(directory):
    from chat.services import conversation_create
    from chat.tests.conftest import ws_open

    _provider, token, engineering = directory
    scim = Scim(token)

    def provision() -> tuple[Any, Any, str, Client]:
        ann = scim.send("post", "Users", _user("ann@corp.example")).json()["id"]
        scim.send("post", "Groups", {"displayName": "eng", "members": [{"value": ann}]})
        user = ExternalIdentity.objects.get(scim_id=ann).user
        _key, secret = api_key_create(tenant=engineering, name="ann's script", created_by=user)
        browser = Client()
        browser.force_login(user)
        conv = conversation_create(tenant=engineering, user=user, role=Role.MEMBER, knowledge_base_ids=[])
        return ann, user, secret, browser, conv

    ann, user, secret, browser, conv = await database_sync_to_async(provision)()

    def api_status() -> int:
        return Client().get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code

    assert await database_sync_to_async(api_status)() == 200
    assert await database_sync_to_async(lambda: browser.get("/").status_code)() == 200
    comm, connected = await ws_open(user, conv.pk, tenant=engineering)
    assert connected

    response = await database_sync_to_async(lambda: scim.send("patch", f"Users/{ann}", _deactivate()))()
    assert response.status_code == 200 and response.json()["active"] is False

    frame = await comm.receive_json_from(timeout=10)
    assert frame == {"type": "error", "code": "account_deactivated", "message": "Your access has ended. Sign in again."}
    closed = await comm.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()

    assert await database_sync_to_async(api_status)() == 401
    assert await database_sync_to_async(lambda: browser.get("/").status_code)() == 302
    key = await ApiKey.unscoped.aget(created_by=user)
    assert key.revoked_at is not None
    event = await AuditEvent.objects.aget(action="identity.user.deactivate")
    assert event.details == {"provider": "okta", "api_keys_revoked": 1, "sessions_ended": 2}
    # a new socket is refused too (the account is inactive)
    comm2, _connected2 = await ws_open(user, conv.pk, tenant=engineering)
    frame2 = await comm2.receive_json_from(timeout=10)
    assert frame2["code"] == "not_authenticated"
    await comm2.disconnect()


@pytest.mark.django_db
def test_scim_reactivation_and_delete(directory):
    _provider, token, engineering = directory
    scim = Scim(token)
    ann = scim.send("post", "Users", _user("ann@corp.example")).json()["id"]
    scim.send("post", "Groups", {"displayName": "eng", "members": [{"value": ann}]})
    entra_style = {"Operations": [{"op": "Replace", "value": {"active": "False"}}]}
    assert scim.send("patch", f"Users/{ann}", entra_style).json()["active"] is False
    user = ExternalIdentity.objects.get(scim_id=ann).user
    user.refresh_from_db()
    assert user.is_active is False
    put = scim.send("put", f"Users/{ann}", _user("ann@corp.example"))
    assert put.status_code == 200 and put.json()["active"] is True
    user.refresh_from_db()
    assert user.is_active is True
    assert scim.delete(f"Users/{ann}").status_code == 204
    assert scim.get(f"Users/{ann}").status_code == 404
    user.refresh_from_db()
    assert user.is_active is False
    assert not Membership.unscoped.filter(user=user, tenant=engineering).exists()


@pytest.mark.django_db
def test_scim_service_provider_config(directory):
    _provider, token, _eng = directory
    body = Scim(token).get("ServiceProviderConfig").json()
    assert body["patch"]["supported"] is True and body["bulk"]["supported"] is False


@pytest.mark.django_db(transaction=True)
async def test_scim_deactivation_closes_the_agent_run_socket(directory):
    from agents.services import agent_definition_create, agent_run_start
    from agents.tests.test_events import _open

    _provider, token, engineering = directory
    scim = Scim(token)

    def provision() -> tuple[str, Any, Any]:
        ann = scim.send("post", "Users", _user("ann@corp.example")).json()["id"]
        scim.send("post", "Groups", {"displayName": "eng-leads", "members": [{"value": ann}]})
        user = ExternalIdentity.objects.get(scim_id=ann).user
        definition = agent_definition_create(
            tenant=engineering, actor=user, name="Watcher", instructions="Do things.", tools=["calculator"]
        )
        run = agent_run_start(definition=definition, role=Role.ADMIN, text="watch", user=user)
        return ann, user, run

    ann, user, run = await database_sync_to_async(provision)()
    comm, connected = await _open(user, engineering, run.pk, after=1)
    assert connected
    await database_sync_to_async(lambda: scim.send("patch", f"Users/{ann}", _deactivate()))()
    frame = await comm.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "account_deactivated"
    assert await comm.receive_output(timeout=10) == {"type": "websocket.close", "code": 4401}
    await comm.disconnect()
