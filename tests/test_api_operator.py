"""What an operator needs to point the pool at an external engine, over REST: departments created by platform
staff, base models registered by platform staff, a department's guard policy read and changed by its admins.
Permission matrix for each: anonymous, another department, viewer, member, admin, owner, platform staff, keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from guardrails.selectors import guardrail_policy_get
from inference_pool.models import BaseModel
from tenants.models import ApiKey, AuditEvent, Membership, Role, Tenant
from tenants.services import api_key_create
from tests.api_harness import api_call, api_keys, assert_error_body  # noqa: F401  (api_keys: a fixture)

SESSION_CALLERS = ("anonymous", "other_tenant", "viewer", "member", "admin", "owner", "staff")


def session_call(world: Any, caller: str, method: str, path: str, body: Any = None) -> Any:
    client = APIClient()
    user = world.user(caller)
    if user is not None:
        client.force_login(user)
    response = client.generic(
        method.upper(),
        path,
        data=None if body is None else json.dumps(body),
        content_type="application/json",
    )
    response.json_body = response.json() if response.content else None
    return response


# --- departments -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("caller", SESSION_CALLERS)
def test_only_platform_staff_create_departments(world, caller):
    before = Tenant.objects.count()
    response = session_call(world, caller, "post", "/api/v1/tenants/", {"name": "Legal Team", "owner": "alpha-member"})
    expected = {"anonymous": 401, "staff": 201}.get(caller, 403)
    if expected != 201:
        assert_error_body(response, expected)
        assert Tenant.objects.count() == before
        return
    assert response.status_code == 201, response.json_body
    body = response.json_body
    assert (body["slug"], body["name"], body["status"]) == ("legal-team", "Legal Team", "active")
    assert body["quota"]["tokens_per_day"] > 0
    tenant = Tenant.objects.get(slug="legal-team")
    owner = Membership.objects.for_tenant(tenant).get()
    assert (owner.user, owner.role) == (world.member, Role.OWNER)
    assert AuditEvent.objects.filter(action="tenant.create", tenant=tenant, actor=world.staff).exists()


def test_an_api_key_never_creates_a_department(world, api_keys):  # noqa: F811
    response = api_call("post", "/api/v1/tenants/", key=api_keys["owner"], body={"name": "Sneaky"})
    assert_error_body(response, 403)
    assert not Tenant.objects.filter(name="Sneaky").exists()


def test_department_creation_explains_bad_input(world):
    assert_error_body(session_call(world, "staff", "post", "/api/v1/tenants/", {"name": "  "}), 400)
    assert_error_body(session_call(world, "staff", "post", "/api/v1/tenants/", {"name": "Alpha", "slug": "alpha"}), 409)
    response = session_call(world, "staff", "post", "/api/v1/tenants/", {"name": "X", "owner": "nobody"})
    assert_error_body(response, 400)
    assert not Tenant.objects.filter(name="X").exists()
    response = session_call(
        world, "staff", "post", "/api/v1/tenants/", {"name": "Small", "tokens_per_day": 1000, "requests_per_minute": 5}
    )
    assert response.status_code == 201
    assert (response.json_body["quota"]["tokens_per_day"], response.json_body["quota"]["requests_per_minute"]) == (
        1000,
        5,
    )


# --- base models -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("caller", SESSION_CALLERS)
def test_only_platform_staff_register_base_models(world, caller):
    body = {"name": "qwen2.5-7b-instruct", "family": "Qwen2.5", "params_b": 7.6, "context_length": 32768}
    response = session_call(world, caller, "post", "/api/v1/base-models/", body)
    listing = session_call(world, caller, "get", "/api/v1/base-models/")
    expected = {"anonymous": 401, "staff": 201}.get(caller, 403)
    if expected != 201:
        assert_error_body(response, expected)
        assert_error_body(listing, expected)
        assert not BaseModel.objects.filter(name="qwen2.5-7b-instruct").exists()
        return
    assert response.status_code == 201, response.json_body
    model = BaseModel.objects.get(name="qwen2.5-7b-instruct")
    assert (model.family, model.params_b, model.context_length) == ("Qwen2.5", 7.6, 32768)
    assert response.json_body["id"] == model.pk
    assert "qwen2.5-7b-instruct" in [m["name"] for m in listing.json_body["results"]]
    detail = session_call(world, caller, "get", f"/api/v1/base-models/{model.pk}/")
    assert detail.json_body["name"] == "qwen2.5-7b-instruct"
    assert AuditEvent.objects.filter(action="base_model.create", actor=world.staff).exists()


def test_base_models_refuse_api_keys_duplicates_and_bad_names(world, api_keys):  # noqa: F811
    assert_error_body(api_call("post", "/api/v1/base-models/", key=api_keys["owner"], body={"name": "m"}), 403)
    assert session_call(world, "staff", "post", "/api/v1/base-models/", {"name": "m1"}).status_code == 201
    assert_error_body(session_call(world, "staff", "post", "/api/v1/base-models/", {"name": "m1"}), 409)
    assert_error_body(session_call(world, "staff", "post", "/api/v1/base-models/", {"name": "has space"}), 400)
    assert_error_body(session_call(world, "staff", "get", "/api/v1/base-models/999999/"), 404)


def test_the_console_registers_a_base_model(world, client):
    client.force_login(world.staff)
    response = client.post("/console/pool/models/create/", {"name": "llama-3.1-8b", "context_length": 8192})
    assert response.status_code == 302
    assert BaseModel.objects.get(name="llama-3.1-8b").context_length == 8192
    assert "Add a base model" in client.get("/console/pool/").content.decode()
    client.force_login(world.admin)  # a department admin is not platform staff
    assert client.post("/console/pool/models/create/", {"name": "other", "context_length": 8192}).status_code == 403
    assert not BaseModel.objects.filter(name="other").exists()


# --- the guard policy ------------------------------------------------------------------------------------------
POLICY_PATCH = {"injection_strictness": "high", "entity_actions": {"LOCATION": "mask"}}


@pytest.mark.parametrize("caller", SESSION_CALLERS)
def test_guard_policy_matrix_for_signed_in_callers(world, caller):
    read = session_call(world, caller, "get", "/api/v1/guardrail-policy/")
    write = session_call(world, caller, "patch", "/api/v1/guardrail-policy/", POLICY_PATCH)
    alpha = guardrail_policy_get(tenant=world.tenant)
    if caller == "anonymous":
        assert_error_body(read, 401)
        assert_error_body(write, 401)
    elif caller == "staff":  # platform staff belong to no department: nothing to show
        assert_error_body(read, 404)
        assert_error_body(write, 404)
    elif caller == "other_tenant":  # its own department's policy, never Alpha's
        assert read.status_code == 200 and write.status_code == 200
        assert guardrail_policy_get(tenant=world.other_tenant).injection_strictness == "high"
    elif caller in ("viewer", "member"):
        assert read.status_code == 200
        assert read.json_body["injection_strictness"] == "medium"
        assert read.json_body["entity_actions"]["PERSON"] == "mask"
        assert_error_body(write, 403)
    else:
        assert read.status_code == 200
        assert write.status_code == 200, write.json_body
        assert write.json_body["injection_strictness"] == "high"
        assert write.json_body["entity_actions"]["LOCATION"] == "mask"
        assert write.json_body["entity_actions"]["PERSON"] == "mask"  # PATCH keeps what it does not name
        assert (alpha.injection_strictness, alpha.action("LOCATION")) == ("high", "mask")
        return
    assert (alpha.injection_strictness, alpha.action("LOCATION")) == ("medium", "allow")


@pytest.mark.parametrize(
    "caller,status", [("revoked", 401), ("other_tenant", 200), ("viewer", 403), ("member", 403), ("admin", 200)]
)
def test_guard_policy_matrix_for_keys(world, api_keys, caller, status):  # noqa: F811
    response = api_call("patch", "/api/v1/guardrail-policy/", key=api_keys[caller], body=POLICY_PATCH)
    assert response.status_code == status, response.json_body
    alpha = guardrail_policy_get(tenant=world.tenant)
    assert alpha.injection_strictness == ("high" if caller == "admin" else "medium")


def test_a_key_without_the_admin_scope_reads_but_does_not_change_the_policy(world):
    _, secret = api_key_create(tenant=world.tenant, name="chat", role=Role.ADMIN, scopes=[ApiKey.Scope.CHAT])
    assert api_call("get", "/api/v1/guardrail-policy/", key=secret).status_code == 200
    assert_error_body(api_call("patch", "/api/v1/guardrail-policy/", key=secret, body=POLICY_PATCH), 403)


def test_guard_policy_put_and_bad_values(world, api_keys):  # noqa: F811
    key = api_keys["admin"]
    bad = api_call(
        "patch",
        "/api/v1/guardrail-policy/",
        key=key,
        body={"custom_recognizers": [{"entity_type": "EMPLOYEE_ID", "pattern": "("}]},
    )
    assert_error_body(bad, 400)
    assert "not a valid regular expression" in bad.json_body["message"]
    body = {
        "entity_actions": {"PERSON": "block"},
        "injection_strictness": "low",
        "custom_recognizers": [{"entity_type": "EMPLOYEE_ID", "pattern": r"EMP-\d{6}"}],
        "deny_lists": {"PROJECT": ["Falcon"]},
    }
    response = api_call("put", "/api/v1/guardrail-policy/", key=key, body=body)
    assert response.status_code == 200, response.json_body
    policy = guardrail_policy_get(tenant=world.tenant)
    assert (policy.action("PERSON"), policy.injection_strictness) == ("block", "low")
    assert [p.entity_type for p in policy.custom_patterns] == ["EMPLOYEE_ID"]
    assert dict(policy.deny_lists) == {"PROJECT": ("Falcon",)}
    assert response.json_body["version"] == policy.version
