"""/api/v1/ tenants, members, API keys and usage: behaviour and the permission matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from tenants.apikeys import hash_key
from tenants.models import ApiKey, AuditEvent, Membership, Role, Tenant, UsageRecord
from tenants.selectors import api_key_authenticate
from tests.api_harness import (
    MATRIX_CALLERS,
    api_call,
    api_keys,  # noqa: F401  (fixture)
    assert_error_body,
    expected_status,
)
from tests.factories import UserFactory


def _snapshot(world: Any) -> tuple[Any, ...]:
    """Department A's rows that a denied call (or another department's call) must leave untouched."""
    return (
        sorted(Membership.objects.for_tenant(world.tenant).values_list("user_id", "role")),
        sorted(ApiKey.objects.for_tenant(world.tenant).values_list("id", "revoked_at")),
        Tenant.objects.filter(pk=world.tenant.pk).values_list("name", "system_prompt").get(),
    )


@dataclass
class Endpoint:
    id: str
    method: str
    path: Callable[[Any, Any], str]
    min_role: str
    ok: int
    body: Callable[[Any, Any], Any] | None = None
    # list endpoints answer another department's key with that department's own data
    other_tenant: int = 404
    # must not appear in the body when another department's key calls
    leak: Callable[[Any, Any], list[str]] | None = None


def _newcomer(world: Any) -> Any:
    return UserFactory(username="newcomer")


ENDPOINTS = [
    Endpoint(
        "tenants-list",
        "get",
        lambda w, k: "/api/v1/tenants/",
        Role.VIEWER,
        200,
        other_tenant=200,
        leak=lambda w, k: ['"alpha"'],
    ),
    Endpoint("tenants-detail", "get", lambda w, k: f"/api/v1/tenants/{w.tenant.pk}/", Role.VIEWER, 200),
    Endpoint(
        "tenants-update",
        "patch",
        lambda w, k: f"/api/v1/tenants/{w.tenant.pk}/",
        Role.ADMIN,
        200,
        body=lambda w, k: {"name": "Renamed"},
    ),
    Endpoint(
        "members-list",
        "get",
        lambda w, k: "/api/v1/members/",
        Role.ADMIN,
        200,
        other_tenant=200,
        leak=lambda w, k: ["alpha-member", "alpha-viewer"],
    ),
    Endpoint(
        "members-create",
        "post",
        lambda w, k: "/api/v1/members/",
        Role.ADMIN,
        201,
        body=lambda w, k: {"username": _newcomer(w).username, "role": "member"},
        other_tenant=201,  # another department adds the user to its own department, never to ours
    ),
    Endpoint("members-detail", "get", lambda w, k: f"/api/v1/members/{w.member.pk}/", Role.ADMIN, 200),
    Endpoint(
        "members-update",
        "patch",
        lambda w, k: f"/api/v1/members/{w.member.pk}/",
        Role.ADMIN,
        200,
        body=lambda w, k: {"role": "viewer"},
    ),
    Endpoint("members-delete", "delete", lambda w, k: f"/api/v1/members/{w.viewer.pk}/", Role.ADMIN, 204),
    Endpoint(
        "api-keys-list",
        "get",
        lambda w, k: "/api/v1/api-keys/",
        Role.ADMIN,
        200,
        other_tenant=200,
        leak=lambda w, k: [k.keys["member"].prefix, "viewer key"],
    ),
    Endpoint(
        "api-keys-create",
        "post",
        lambda w, k: "/api/v1/api-keys/",
        Role.ADMIN,
        201,
        body=lambda w, k: {"name": "ci", "role": "viewer", "scopes": ["chat"]},
        other_tenant=201,
    ),
    Endpoint("api-keys-detail", "get", lambda w, k: f"/api/v1/api-keys/{k.keys['member'].pk}/", Role.ADMIN, 200),
    Endpoint("api-keys-revoke", "delete", lambda w, k: f"/api/v1/api-keys/{k.keys['viewer'].pk}/", Role.ADMIN, 204),
    Endpoint(
        "usage",
        "get",
        lambda w, k: "/api/v1/usage/?group_by=model",
        Role.ADMIN,
        200,
        other_tenant=200,
        leak=lambda w, k: ["alpha-only-model"],
    ),
]


@pytest.mark.parametrize("caller", MATRIX_CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_permission_matrix(world, api_keys, endpoint, caller):  # noqa: F811
    UsageRecord.objects.create(tenant=world.tenant, model="alpha-only-model", tokens_in=3, tokens_out=4)
    path = endpoint.path(world, api_keys)
    body = endpoint.body(world, api_keys) if endpoint.body else None
    before = _snapshot(world)
    audit_before = AuditEvent.objects.filter(tenant=world.tenant).count()

    response = api_call(endpoint.method, path, key=api_keys[caller], body=body)

    want = expected_status(caller, endpoint.min_role, endpoint.ok, other_tenant=endpoint.other_tenant)
    assert response.status_code == want, (response.status_code, response.json_body)
    if want >= 400:
        assert_error_body(response, want)
        if want == 401:
            assert response["WWW-Authenticate"].startswith("Bearer")
    if caller == "other_tenant" or want >= 400:
        # nothing of department A changed, and its audit trail holds no new event
        assert _snapshot(world) == before
        assert AuditEvent.objects.filter(tenant=world.tenant).count() == audit_before
    if caller == "other_tenant" and endpoint.leak:
        text = response.content.decode()
        for needle in endpoint.leak(world, api_keys):
            assert needle not in text


def test_session_callers_use_their_current_department(world, client):
    client.force_login(world.admin)
    response = client.get("/api/v1/members/")
    assert response.status_code == 200
    names = {m["username"] for m in response.json()["results"]}
    assert names == {"alpha-owner", "alpha-admin", "alpha-member", "alpha-viewer"}
    client.force_login(world.outsider)
    assert client.get(f"/api/v1/tenants/{world.tenant.pk}/").status_code == 404


def test_session_writes_need_csrf(world):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(world.admin)
    response = client.post("/api/v1/api-keys/", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not ApiKey.objects.for_tenant(world.tenant).filter(name="x").exists()


def test_key_secret_is_shown_once_and_works(world, api_keys):  # noqa: F811
    response = api_call("post", "/api/v1/api-keys/", key=api_keys["admin"], body={"name": "etl", "role": "member"})
    assert response.status_code == 201
    created = response.json_body
    secret = created["secret"]
    assert secret.startswith(f"ep_{created['prefix']}_")
    assert created["scopes"] == ["chat", "knowledge:read"]
    assert created["created_by"] == "alpha-admin"
    stored = ApiKey.objects.for_tenant(world.tenant).get(pk=created["id"])
    assert stored.hashed_secret == hash_key(secret)
    # never again: not in the detail, not in the list
    detail = api_call("get", f"/api/v1/api-keys/{created['id']}/", key=api_keys["admin"])
    listing = api_call("get", "/api/v1/api-keys/", key=api_keys["admin"])
    assert "secret" not in detail.json_body
    assert secret.split("_", 2)[2] not in detail.content.decode() + listing.content.decode()
    # the new key works at its own role
    assert api_call("get", "/api/v1/tenants/", key=secret).status_code == 200
    assert api_call("get", "/api/v1/members/", key=secret).status_code == 403


def test_revoked_key_stops_working_at_once(world, api_keys):  # noqa: F811
    response = api_call("post", "/api/v1/api-keys/", key=api_keys["admin"], body={"name": "tmp"})
    secret, key_id = response.json_body["secret"], response.json_body["id"]
    assert api_call("get", "/api/v1/tenants/", key=secret).status_code == 200
    assert api_call("delete", f"/api/v1/api-keys/{key_id}/", key=api_keys["admin"]).status_code == 204
    denied = api_call("get", "/api/v1/tenants/", key=secret)
    assert_error_body(denied, 401)
    assert "revoked" in denied.json_body["message"]
    listing = api_call("get", "/api/v1/api-keys/?active=false", key=api_keys["admin"]).json_body["results"]
    assert key_id in {k["id"] for k in listing}
    active = api_call("get", "/api/v1/api-keys/?active=true", key=api_keys["admin"]).json_body["results"]
    assert key_id not in {k["id"] for k in active}
    assert AuditEvent.objects.filter(action="api_key.revoke", target_id=str(key_id)).count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param({"name": "x", "role": "owner"}, 403, "forbidden", id="higher-role"),
        pytest.param({"name": "x", "scopes": ["agents"]}, 403, "forbidden", id="scope-the-issuer-lacks"),
        pytest.param({"name": "x", "scopes": ["everything"]}, 400, "invalid", id="unknown-scope"),
        pytest.param({"name": "   "}, 400, "invalid", id="blank-name"),
        pytest.param({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}, 400, "invalid", id="expired-at-birth"),
    ],
)
def test_a_key_cannot_issue_more_than_it_has(world, body, status, code):
    from tenants.services import api_key_create

    _, issuer = api_key_create(tenant=world.tenant, name="issuer", role=Role.ADMIN, scopes=["admin", "chat"])
    before = ApiKey.objects.for_tenant(world.tenant).count()
    response = api_call("post", "/api/v1/api-keys/", key=issuer, body=body)
    assert_error_body(response, status)
    assert response.json_body["code"] == code
    assert ApiKey.objects.for_tenant(world.tenant).count() == before


def test_admin_scope_is_required_for_admin_endpoints(world):
    from tenants.services import api_key_create

    _, secret = api_key_create(tenant=world.tenant, name="chat only", role=Role.ADMIN, scopes=["chat"])
    response = api_call("get", "/api/v1/members/", key=secret)
    assert_error_body(response, 403)
    assert "admin" in response.json_body["message"]
    assert api_call("get", "/api/v1/tenants/", key=secret).status_code == 200


def test_members_add_change_remove(world, api_keys):  # noqa: F811
    UserFactory(username="carol")
    added = api_call("post", "/api/v1/members/", key=api_keys["admin"], body={"username": "carol", "role": "viewer"})
    assert added.status_code == 201
    assert added.json_body["username"] == "carol" and added.json_body["role"] == "viewer"
    user_id = added.json_body["user_id"]
    changed = api_call("patch", f"/api/v1/members/{user_id}/", key=api_keys["admin"], body={"role": "member"})
    assert changed.json_body["role"] == "member"
    assert api_call("delete", f"/api/v1/members/{user_id}/", key=api_keys["admin"]).status_code == 204
    assert api_call("get", f"/api/v1/members/{user_id}/", key=api_keys["admin"]).status_code == 404
    actions = list(
        AuditEvent.objects.filter(tenant=world.tenant, action__startswith="membership.")
        .order_by("created_at", "id")
        .values_list("action", flat=True)
    )
    assert actions == ["membership.add", "membership.role", "membership.remove"]


def test_members_filter_by_role(world, api_keys):  # noqa: F811
    response = api_call("get", "/api/v1/members/?role=viewer", key=api_keys["admin"])
    assert [m["username"] for m in response.json_body["results"]] == ["alpha-viewer"]
    bad = api_call("get", "/api/v1/members/?role=king", key=api_keys["admin"])
    assert_error_body(bad, 400)
    assert "role" in bad.json_body["details"]


def test_unknown_user_is_a_clear_400(world, api_keys):  # noqa: F811
    response = api_call("post", "/api/v1/members/", key=api_keys["admin"], body={"username": "nobody"})
    assert_error_body(response, 400)
    assert response.json_body["details"] == {"username": ["unknown user"]}


def test_only_owners_touch_owners(world, api_keys):  # noqa: F811
    grant = api_call("patch", f"/api/v1/members/{world.member.pk}/", key=api_keys["admin"], body={"role": "owner"})
    assert_error_body(grant, 403)
    demote = api_call("patch", f"/api/v1/members/{world.owner.pk}/", key=api_keys["admin"], body={"role": "member"})
    assert_error_body(demote, 403)
    remove = api_call("delete", f"/api/v1/members/{world.owner.pk}/", key=api_keys["admin"])
    assert_error_body(remove, 403)
    # the owner may grant owner, but the last owner cannot step down
    last = api_call("patch", f"/api/v1/members/{world.owner.pk}/", key=api_keys["owner"], body={"role": "admin"})
    assert_error_body(last, 409)
    ok = api_call("patch", f"/api/v1/members/{world.member.pk}/", key=api_keys["owner"], body={"role": "owner"})
    assert ok.status_code == 200
    step_down = api_call("patch", f"/api/v1/members/{world.owner.pk}/", key=api_keys["owner"], body={"role": "admin"})
    assert step_down.status_code == 200
    assert Membership.objects.for_tenant(world.tenant).get(user=world.owner).role == "admin"


def test_tenant_update_and_detail(world, api_keys):  # noqa: F811
    response = api_call(
        "patch",
        f"/api/v1/tenants/{world.tenant.pk}/",
        key=api_keys["admin"],
        body={"system_prompt": "Answer briefly."},
    )
    assert response.status_code == 200
    assert response.json_body["system_prompt"] == "Answer briefly."
    assert response.json_body["role"] == "admin"
    assert response.json_body["quota"]["requests_per_minute"] == 120
    detail = api_call("get", f"/api/v1/tenants/{world.tenant.pk}/", key=api_keys["viewer"]).json_body
    assert detail["system_prompt"] == "Answer briefly." and detail["role"] == "viewer"
    blank = api_call("patch", f"/api/v1/tenants/{world.tenant.pk}/", key=api_keys["admin"], body={"name": ""})
    assert_error_body(blank, 400)
    assert "name" in blank.json_body["details"]


def _usage(world: Any, **kw: Any) -> UsageRecord:
    return UsageRecord.objects.create(tenant=world.tenant, **kw)


def test_usage_grouped_by_day_user_adapter_model_and_key(world, api_keys):  # noqa: F811
    now = timezone.now()
    yesterday = now - timedelta(days=1)
    key = api_keys.keys["member"]
    _usage(world, user=world.member, model="m1", adapter="", tokens_in=10, tokens_out=5, cost=Decimal("0.5"))
    _usage(world, user=world.member, model="m1", adapter="legal", tokens_in=20, tokens_out=5, created_at=yesterday)
    _usage(world, user=world.viewer, model="m2", adapter="legal", tokens_in=1, tokens_out=1, api_key=key)
    UsageRecord.objects.create(tenant=world.other_tenant, model="m1", tokens_in=1000, tokens_out=1000)

    def rows(group_by: str, extra: str = "") -> dict[str, dict[str, Any]]:
        response = api_call("get", f"/api/v1/usage/?group_by={group_by}{extra}", key=api_keys["admin"])
        assert response.status_code == 200, response.json_body
        return {r["key"]: r for r in response.json_body["results"]}

    by_model = rows("model")
    assert {k: (r["requests"], r["tokens_in"], r["tokens_out"]) for k, r in by_model.items()} == {
        "m1": (2, 30, 10),
        "m2": (1, 1, 1),
    }
    assert Decimal(by_model["m1"]["cost"]) == Decimal("0.5")
    by_adapter = rows("adapter")
    assert by_adapter[""]["label"] == "(base model)" and by_adapter["legal"]["requests"] == 2
    by_user = rows("user")
    assert {r["label"]: r["tokens_in"] for r in by_user.values()} == {"alpha-member": 30, "alpha-viewer": 1}
    by_day = rows("day")
    assert [r["key"] for r in by_day.values()] == [str(yesterday.date()), str(now.date())]
    by_key = rows("api_key")
    assert by_key[str(key.pk)]["label"] == f"member key ({key.prefix}…)"
    assert by_key[""]["label"] == "(browser session)"
    since = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert set(rows("model", f"&since={since}")) == {"m1", "m2"}
    assert rows("model", f"&since={since}")["m1"]["tokens_in"] == 10
    assert set(rows("user", "&adapter=legal")) == {str(world.member.pk), str(world.viewer.pk)}


@pytest.mark.parametrize(
    "query",
    ["group_by=colour", "since=yesterday", "since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", "user_id=-1"],
)
def test_usage_rejects_bad_filters_clearly(world, api_keys, query):  # noqa: F811
    response = api_call("get", f"/api/v1/usage/?{query}", key=api_keys["admin"])
    assert_error_body(response, 400)
    assert response.json_body["code"] == "invalid"
    assert response.json_body["details"]


def test_pagination(world, api_keys):  # noqa: F811
    response = api_call("get", "/api/v1/api-keys/?limit=2&offset=1", key=api_keys["admin"])
    body = response.json_body
    assert body["count"] == ApiKey.objects.for_tenant(world.tenant).count() == 6
    assert len(body["results"]) == 2
    assert body["next"] and body["previous"]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/api-keys/99999999999999999999999/", "/api/v1/api-keys/abc/", "/api/v1/nowhere/", "/api/v2/"],
)
def test_unknown_paths_and_wild_ids_are_json_404(world, api_keys, path):  # noqa: F811
    assert_error_body(api_call("get", path, key=api_keys["admin"]), 404)


def test_malformed_json_is_a_400_in_the_error_shape(world, api_keys):  # noqa: F811
    from rest_framework.test import APIClient

    response = APIClient().post(
        "/api/v1/api-keys/",
        data=b"{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_keys['admin']}",
    )
    assert response.status_code == 400
    assert set(response.json()) == {"code", "message", "details"}


def test_key_use_is_recorded(world, api_keys):  # noqa: F811
    assert api_keys.keys["viewer"].last_used_at is None
    api_call("get", "/api/v1/tenants/", key=api_keys["viewer"])
    assert ApiKey.objects.for_tenant(world.tenant).get(pk=api_keys.keys["viewer"].pk).last_used_at is not None
    assert api_key_authenticate(raw_key=api_keys["viewer"]).tenant == world.tenant


def test_throttling_per_key(world, api_keys):  # noqa: F811
    from tenants.throttling import ApiKeyRateThrottle

    original = ApiKeyRateThrottle.THROTTLE_RATES
    ApiKeyRateThrottle.THROTTLE_RATES = {"api_key": "3/min"}
    try:
        statuses = [api_call("get", "/api/v1/tenants/", key=api_keys["viewer"]).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = api_call("get", "/api/v1/tenants/", key=api_keys["viewer"])
        assert_error_body(limited, 429)
        assert limited.json_body["code"] == "rate_limited"
        assert int(limited["Retry-After"]) > 0
        # another key has its own budget
        assert api_call("get", "/api/v1/tenants/", key=api_keys["member"]).status_code == 200
    finally:
        ApiKeyRateThrottle.THROTTLE_RATES = original
