"""Permission matrix: every console page and action, for anonymous, member, viewer, an admin of another
department, the department's admin and platform staff. A refusal changes nothing (not even the audit log)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from adapters.models import Adapter, AdapterAssignment
from inference_pool.models import Backend, BackendAdapter, BaseModel
from tenants.models import ApiKey, AuditEvent, Membership, ModelPrice, Quota, Tenant

STAFF = "staff"  # platform staff only
ADMIN = "admin"  # the department's admins and owners, and platform staff

ROLES = ["anonymous", "member", "viewer", "other_tenant", "admin", "owner", "staff"]


@dataclass
class Case:
    name: str
    who: str  # STAFF or ADMIN
    url: Callable[[Any], str]
    method: str = "get"
    data: Callable[[Any], dict[str, Any]] = field(default=lambda cw: {})
    tenant_scoped: bool = False  # the URL names department alpha: another department's admin gets 404
    changes: bool = True  # a successful POST changes something
    other_status: int | None = None  # what another department's admin gets, when it is not the rule below


def u(name: str, **kw: Callable[[Any], Any]) -> Callable[[Any], str]:
    return lambda cw: reverse(f"console:{name}", kwargs={k: f(cw) for k, f in kw.items()})


def alpha(cw: Any) -> int:
    return cw.world.tenant.pk


CASES = [
    # pages
    Case("overview", ADMIN, u("overview")),
    Case("tenant_list", ADMIN, u("tenant_list")),
    Case("tenant_detail", ADMIN, u("tenant_detail", tenant_id=alpha), tenant_scoped=True),
    Case("adapter_list", ADMIN, u("adapter_list")),
    Case("adapter_detail", ADMIN, u("adapter_detail", adapter_id=lambda cw: cw.shared.pk), tenant_scoped=True),
    Case("adapter_locations", STAFF, u("adapter_locations", adapter_id=lambda cw: cw.shared.pk)),
    Case("pool", STAFF, u("pool")),
    Case("backend_detail", STAFF, u("backend_detail", backend_id=lambda cw: cw.llamacpp.pk)),
    Case(
        "planner",
        STAFF,
        lambda cw: (
            reverse("console:planner")
            + "?params_b=7&precision=fp16&layers=32&kv_heads=8&head_dim=128&gpu_memory_gb=80&context=8192"
        ),
    ),
    Case("usage", ADMIN, u("usage")),
    Case("usage_of_alpha", ADMIN, lambda cw: reverse("console:usage") + f"?tenant={alpha(cw)}", tenant_scoped=True),
    Case("usage_csv", ADMIN, u("usage_csv")),
    Case("prices", ADMIN, u("prices")),
    Case("audit", ADMIN, u("audit")),
    Case("feedback", ADMIN, u("feedback")),
    Case(
        "feedback_of_alpha", ADMIN, lambda cw: reverse("console:feedback") + f"?tenant={alpha(cw)}", tenant_scoped=True
    ),
    Case("feedback_csv", ADMIN, u("feedback_csv")),
    Case("drift", ADMIN, u("drift")),
    Case("drift_of_alpha", ADMIN, lambda cw: reverse("console:drift") + f"?tenant={alpha(cw)}", tenant_scoped=True),
    # department actions
    Case("tenant_create", STAFF, u("tenant_create"), "post", lambda cw: {"name": "Gamma"}),
    Case(
        "tenant_suspend",
        STAFF,
        u("tenant_status", tenant_id=alpha),
        "post",
        lambda cw: {"status": "suspended"},
        tenant_scoped=True,
    ),
    Case(
        "tenant_quota",
        STAFF,
        u("tenant_quota", tenant_id=alpha),
        "post",
        lambda cw: {
            "tokens_per_day": 5,
            "tokens_per_month": 50,
            "requests_per_minute": 1,
            "max_upload_mb": 1,
            "max_documents": 1,
            "monthly_budget": "9.50",
        },
        tenant_scoped=True,
    ),
    Case(
        "member_add",
        ADMIN,
        u("member_add", tenant_id=alpha),
        "post",
        lambda cw: {"identifier": "loner@example.com", "role": "member"},
        tenant_scoped=True,
    ),
    Case(
        "member_create",
        ADMIN,
        u("member_create", tenant_id=alpha),
        "post",
        lambda cw: {"username": "fresh", "email": "", "role": "viewer"},
        tenant_scoped=True,
    ),
    Case(
        "member_role",
        ADMIN,
        u("member_role", tenant_id=alpha, user_id=lambda cw: cw.world.viewer.pk),
        "post",
        lambda cw: {"role": "member"},
        tenant_scoped=True,
    ),
    Case(
        "member_remove",
        ADMIN,
        u("member_remove", tenant_id=alpha, user_id=lambda cw: cw.world.viewer.pk),
        "post",
        tenant_scoped=True,
    ),
    Case(
        "key_create",
        ADMIN,
        u("key_create", tenant_id=alpha),
        "post",
        lambda cw: {"name": "ci", "role": "member", "scopes": ["chat"]},
        tenant_scoped=True,
    ),
    Case(
        "key_revoke",
        ADMIN,
        u("key_revoke", tenant_id=alpha, key_id=lambda cw: cw.key.pk),
        "post",
        tenant_scoped=True,
    ),
    Case(
        "adapter_default",
        ADMIN,
        u("tenant_adapter_default", tenant_id=alpha),
        "post",
        lambda cw: {"adapter_id": cw.shared.pk},
        tenant_scoped=True,
    ),
    # adapters
    Case(
        "adapter_create",
        ADMIN,
        u("adapter_create"),
        "post",
        lambda cw: {
            "name": "new-one",
            "base_model": cw.base_model.pk,
            "format": "peft",
            "source": "/models/new-one",
            "rank": 16,
            "description": "",
            "owner_tenant": "",
        },
    ),
    Case(
        "adapter_edit_owned",
        ADMIN,
        u("adapter_edit", adapter_id=lambda cw: cw.owned.pk),
        "post",
        lambda cw: {"base_model": cw.base_model.pk, "format": "peft", "source": "/models/v2", "rank": 4},
        tenant_scoped=True,
    ),
    Case(
        "adapter_edit_shared",
        STAFF,
        u("adapter_edit", adapter_id=lambda cw: cw.shared.pk),
        "post",
        lambda cw: {"base_model": cw.base_model.pk, "format": "gguf", "source": "/models/v2.gguf", "rank": 8},
        tenant_scoped=True,
        other_status=404,  # not even visible to another department
    ),
    Case(
        "adapter_delete_owned",
        ADMIN,
        u("adapter_delete", adapter_id=lambda cw: cw.owned.pk),
        "post",
        tenant_scoped=True,
    ),
    Case(
        "adapter_assign",
        STAFF,
        u("adapter_assign", adapter_id=lambda cw: cw.shared.pk),
        "post",
        lambda cw: {"tenant_id": cw.world.other_tenant.pk},
    ),
    Case(
        "adapter_unassign",
        STAFF,
        u("adapter_unassign", adapter_id=lambda cw: cw.shared.pk),
        "post",
        lambda cw: {"tenant_id": alpha(cw)},
    ),
    Case(
        "adapter_load",
        STAFF,
        u("adapter_load", adapter_id=lambda cw: cw.owned.pk),
        "post",
        lambda cw: {"backend_id": cw.tgi.pk},
    ),
    Case(
        "adapter_unload",
        STAFF,
        u("adapter_unload", adapter_id=lambda cw: cw.shared.pk),
        "post",
        lambda cw: {"backend_id": cw.llamacpp.pk},
    ),
    Case("adapter_sync", STAFF, u("adapter_sync"), "post", changes=False),
    # the pool
    Case(
        "backend_create",
        STAFF,
        u("backend_create"),
        "post",
        lambda cw: {
            "name": "gpu-9",
            "kind": "vllm",
            "base_url": "http://gpu-9.internal:8000",
            "base_model": cw.base_model.pk,
            "quantization": "awq",
            "context_length": 8192,
            "max_concurrent": 64,
            "weight": 2,
        },
    ),
    Case(
        "backend_edit",
        STAFF,
        u("backend_edit", backend_id=lambda cw: cw.llamacpp.pk),
        "post",
        lambda cw: {
            "kind": "llamacpp",
            "base_url": cw.llamacpp.base_url,
            "base_model": cw.base_model.pk,
            "quantization": "q4",
            "context_length": 4096,
            "max_concurrent": 3,
            "weight": 1,
        },
    ),
    Case(
        "backend_drain",
        STAFF,
        u("backend_state", backend_id=lambda cw: cw.llamacpp.pk),
        "post",
        lambda cw: {"state": "drain"},
    ),
    Case(
        "backend_disable",
        STAFF,
        u("backend_state", backend_id=lambda cw: cw.llamacpp.pk),
        "post",
        lambda cw: {"state": "disable"},
    ),
    Case("backend_confirm", STAFF, u("backend_confirm", backend_id=lambda cw: cw.tgi.pk), "post"),
    Case(
        "price_set",
        STAFF,
        u("price_set"),
        "post",
        lambda cw: {"model": "legal", "input_per_1k": "0.01", "output_per_1k": "0.03"},
    ),
    Case("price_delete", STAFF, u("price_delete", price_id=lambda cw: cw.price.pk), "post"),
]


def snapshot() -> dict[str, Any]:
    """Every row a console action could change."""

    def rows(qs: Any, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k not in exclude} for r in qs.order_by("pk").values()]

    return {
        "tenants": rows(Tenant.objects),
        "quotas": rows(Quota.objects),
        "memberships": rows(Membership.unscoped),
        "keys": rows(ApiKey.unscoped),
        "users": rows(User.objects, exclude=("last_login",)),
        "adapters": rows(Adapter.objects),
        "assignments": rows(AdapterAssignment.unscoped),
        "backends": rows(Backend.objects, exclude=("updated_at",)),
        "backend_adapters": rows(BackendAdapter.objects),
        "base_models": rows(BaseModel.objects),
        "prices": rows(ModelPrice.objects),
        "audit": AuditEvent.objects.count(),
    }


def allowed(case: Case, role: str) -> bool:
    if role == "staff":
        return True
    if case.who == STAFF:
        return False
    if role in ("admin", "owner"):
        return True
    return role == "other_tenant" and not case.tenant_scoped


def expected_denial(case: Case, role: str) -> int:
    if role == "anonymous":
        return 302
    if role == "other_tenant" and case.other_status is not None:
        return case.other_status
    if role == "other_tenant" and case.tenant_scoped and case.who != STAFF:
        return 404  # another department's objects answer like missing ones (staff-only pages: 403 first)
    return 403


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_console_permission_matrix(cw, client, case, role):
    user = cw.world.user(role) if role != "other_tenant" else cw.world.outsider
    if user is not None:
        client.force_login(user)
    before = snapshot()
    url = case.url(cw)
    response = client.get(url) if case.method == "get" else client.post(url, case.data(cw))
    after = snapshot()
    if allowed(case, role):
        assert response.status_code in (200, 204, 302), (response.status_code, response.content[:500])
        if response.status_code == 302:
            assert "/accounts/login/" not in response["Location"]
        if case.method == "post" and case.changes:
            assert after != before, "an allowed action changed nothing"
            assert after["audit"] > before["audit"], "a console change without an audit event"
    else:
        status = expected_denial(case, role)
        assert response.status_code == status, (response.status_code, response.content[:300])
        if status == 302:
            assert response["Location"].startswith("/accounts/login/")
        assert after == before, "a refused request changed something"


@pytest.mark.parametrize("role", ["member", "viewer", "other_tenant", "admin"])
def test_htmx_refusal_goes_to_the_flash_slot(cw, client, role):
    user = cw.world.outsider if role == "other_tenant" else cw.world.user(role)
    client.force_login(user)
    before = snapshot()
    response = client.post(
        reverse("console:tenant_status", kwargs={"tenant_id": cw.world.tenant.pk}),
        {"status": "suspended"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code in (403, 404)
    assert response["HX-Retarget"] == "#flash"
    assert snapshot() == before
