"""Pages under /agents/: the permission matrix (anonymous, another department, viewer, member, admin) and the
flows a person goes through: define an agent, start a run, watch it, approve, cancel, manage the HTTP tool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from agents.models import AgentDefinition, AgentRun, AgentSecret, HttpToolRule, RunStatus, WebhookEndpoint
from agents.services import agent_definition_create, agent_run_start, webhook_endpoint_create
from agents.tests.test_api import make_waiting
from tenants.models import AuditEvent, Role

pytestmark = pytest.mark.django_db


@dataclass
class Pages:
    definition: AgentDefinition
    run: AgentRun  # started by the member in the browser
    waiting: AgentRun  # waiting for an admin's approval, started by the member
    webhook: WebhookEndpoint


@pytest.fixture
def pages(world: Any) -> Pages:
    definition = agent_definition_create(
        tenant=world.tenant,
        actor=world.admin,
        name="Researcher",
        instructions="Answer questions about policy.",
        tools=["calculator"],
        approval_tools=["calculator"],
    )
    run = agent_run_start(definition=definition, role=Role.MEMBER, text="What is 2+2?", user=world.member)
    waiting = make_waiting(
        agent_run_start(definition=definition, role=Role.MEMBER, text="What is 3+3?", user=world.member)
    )
    webhook, _ = webhook_endpoint_create(tenant=world.tenant, url="https://hooks.example.com/a", actor=world.admin)
    return Pages(definition=definition, run=run, waiting=waiting, webhook=webhook)


@dataclass
class Page:
    id: str
    method: str
    path: Callable[[Pages], str]
    expect: dict[str, int]  # viewer, member, admin, other_tenant (anonymous: login redirect)
    data: dict[str, Any] | None = None


def _e(viewer: int, member: int, admin: int, other: int) -> dict[str, int]:
    return {"viewer": viewer, "member": member, "admin": admin, "other_tenant": other}


AGENT_FORM = {
    "name": "Auditor",
    "instructions": "Audit contracts.",
    "tools": ["knowledge_search"],
    "approver_role": "admin",
    "max_steps": "6",
    "token_budget": "10000",
    "max_output_tokens": "256",
    "min_tool_calls": "0",
}

PAGES = [
    Page("index", "get", lambda p: "/agents/", _e(200, 200, 200, 200)),
    Page("new-form", "get", lambda p: "/agents/new/", _e(403, 403, 200, 200)),
    Page("new-post", "post", lambda p: "/agents/new/", _e(403, 403, 302, 302), data=AGENT_FORM),
    Page("detail", "get", lambda p: f"/agents/{p.definition.pk}/", _e(200, 200, 200, 404)),
    Page("edit-form", "get", lambda p: f"/agents/{p.definition.pk}/edit/", _e(403, 403, 200, 404)),
    Page(
        "edit-post",
        "post",
        lambda p: f"/agents/{p.definition.pk}/edit/",
        _e(403, 403, 302, 404),
        data={**AGENT_FORM, "name": "Researcher", "tools": ["calculator"]},
    ),
    Page("archive", "post", lambda p: f"/agents/{p.definition.pk}/archive/", _e(403, 403, 302, 404)),
    Page("run-start", "post", lambda p: f"/agents/{p.definition.pk}/run/", _e(403, 302, 302, 404), {"input": "Hi"}),
    Page("runs", "get", lambda p: "/agents/runs/", _e(200, 200, 200, 200)),
    Page("run", "get", lambda p: f"/agents/runs/{p.run.pk}/", _e(404, 200, 200, 404)),
    Page("run-live", "get", lambda p: f"/agents/runs/{p.run.pk}/live/", _e(404, 200, 200, 404)),
    Page("run-cancel", "post", lambda p: f"/agents/runs/{p.run.pk}/cancel/", _e(404, 302, 302, 404)),
    Page("run-approve", "post", lambda p: f"/agents/runs/{p.waiting.pk}/approve/", _e(404, 403, 302, 404)),
    Page("run-reject", "post", lambda p: f"/agents/runs/{p.waiting.pk}/reject/", _e(404, 403, 302, 404)),
    Page("settings", "get", lambda p: "/agents/settings/", _e(403, 403, 200, 200)),
    Page(
        "rule-create",
        "post",
        lambda p: "/agents/settings/rules/",
        _e(403, 403, 302, 302),
        data={
            "name": "crm",
            "method": "GET",
            "url_prefix": "https://crm.example.com/api/",
            "max_response_bytes": "65536",
            "timeout_s": "10",
        },
    ),
    Page(
        "secret-set",
        "post",
        lambda p: "/agents/settings/secrets/",
        _e(403, 403, 302, 302),
        data={"name": "crm-token", "value": "s3cr3t"},
    ),
    Page(
        "webhook-create",
        "post",
        lambda p: "/agents/settings/webhooks/",
        _e(403, 403, 200, 200),
        data={"url": "https://hooks.example.org/b"},
    ),
    Page(
        "webhook-delete", "post", lambda p: f"/agents/settings/webhooks/{p.webhook.pk}/delete/", _e(403, 403, 302, 404)
    ),
]


def _snapshot(world: Any) -> tuple[Any, ...]:
    return (
        sorted(AgentDefinition.objects.for_tenant(world.tenant).values_list("id", "name", "is_active", "max_steps")),
        sorted(AgentRun.objects.for_tenant(world.tenant).values_list("id", "status")),
        sorted(WebhookEndpoint.objects.for_tenant(world.tenant).values_list("id", flat=True)),
        sorted(HttpToolRule.objects.for_tenant(world.tenant).values_list("id", flat=True)),
        sorted(AgentSecret.objects.for_tenant(world.tenant).values_list("id", flat=True)),
    )


@pytest.mark.parametrize("who", ["anonymous", "viewer", "member", "admin", "other_tenant"])
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.id)
def test_page_permission_matrix(world: Any, pages: Pages, page: Page, who: str) -> None:
    client = Client()
    if who != "anonymous":
        client.force_login(world.user(who))
    before = _snapshot(world)
    response = getattr(client, page.method)(page.path(pages), page.data or {})
    if who == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        assert _snapshot(world) == before
        return
    expected = page.expect[who]
    assert response.status_code == expected, (response.status_code, response.content[:500])
    if expected >= 400 or who == "other_tenant":
        assert _snapshot(world) == before
    if who == "other_tenant":
        body = response.content.decode()
        assert "What is 2+2" not in body and "Researcher" not in body


def test_an_admin_defines_an_agent_and_a_member_runs_it(world: Any) -> None:
    admin = Client()
    admin.force_login(world.admin)
    response = admin.post("/agents/new/", {**AGENT_FORM, "tools": ["knowledge_search", "calculator"]})
    definition = AgentDefinition.objects.for_tenant(world.tenant).get(name="Auditor")
    assert response.status_code == 302 and response["Location"] == f"/agents/{definition.pk}/"
    assert definition.tools == ["calculator", "knowledge_search"] and definition.max_steps == 6
    assert AuditEvent.objects.filter(action="agent.define", actor=world.admin).count() == 1

    bad = admin.post("/agents/new/", {**AGENT_FORM, "approval_tools": ["http_request"]})
    assert bad.status_code == 200 and "must also be enabled" in bad.content.decode()

    member = Client()
    member.force_login(world.member)
    page = member.get(f"/agents/{definition.pk}/")
    assert 'data-testid="run-form"' in page.content.decode()
    started = member.post(f"/agents/{definition.pk}/run/", {"input": "Check the contracts"})
    run = AgentRun.objects.for_tenant(world.tenant).get(definition=definition)
    assert started["Location"] == f"/agents/runs/{run.pk}/"
    view = member.get(f"/agents/runs/{run.pk}/").content.decode()
    assert "Check the contracts" in view and 'data-status="queued"' in view
    assert f'data-socket="/ws/agents/runs/{run.pk}/?after=1"' in view
    assert 'data-testid="cancel"' in view
    empty = member.post(f"/agents/{definition.pk}/run/", {"input": ""})
    assert empty.status_code == 400

    viewer = Client()
    viewer.force_login(world.viewer)
    assert 'data-testid="run-form"' not in viewer.get(f"/agents/{definition.pk}/").content.decode()


def test_the_approver_sees_the_pending_call_and_decides_with_htmx(world: Any, pages: Pages) -> None:
    admin = Client()
    admin.force_login(world.admin)
    page = admin.get(f"/agents/runs/{pages.waiting.pk}/").content.decode()
    assert 'data-testid="approval"' in page and 'data-testid="approve"' in page and "1+1" in page
    member = Client()
    member.force_login(world.member)
    assert 'data-testid="approve"' not in member.get(f"/agents/runs/{pages.waiting.pk}/").content.decode()

    response = admin.post(f"/agents/runs/{pages.waiting.pk}/reject/", {"note": "no"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-status="cancelled"' in body and "rejected the call to calculator" in body
    assert AgentRun.unscoped.get(pk=pages.waiting.pk).status == RunStatus.CANCELLED


def test_tool_settings_store_secrets_without_showing_them(world: Any) -> None:
    admin = Client()
    admin.force_login(world.admin)
    admin.post("/agents/settings/secrets/", {"name": "crm-token", "value": "super-s3cr3t-value"})
    response = admin.post(
        "/agents/settings/rules/",
        {
            "name": "crm",
            "method": "GET",
            "url_prefix": "https://crm.example.com/api/",
            "header_secrets": "Authorization: crm-token",
            "max_response_bytes": "1000",
            "timeout_s": "5",
        },
    )
    assert response.status_code == 302
    rule = HttpToolRule.objects.for_tenant(world.tenant).get(name="crm")
    assert rule.header_secrets == {"Authorization": "crm-token"}
    page = admin.get("/agents/settings/").content.decode()
    assert "crm-token" in page and "super-s3cr3t-value" not in page
    refused = admin.post(
        "/agents/settings/rules/",
        {"name": "bad", "method": "GET", "url_prefix": "ftp://x/", "max_response_bytes": "1000", "timeout_s": "5"},
    )
    assert refused.status_code == 400 and "Only http and https" in refused.content.decode()
    created = admin.post("/agents/settings/webhooks/", {"url": "https://hooks.example.org/c"})
    assert 'data-testid="webhook-secret"' in created.content.decode() and "whsec_" in created.content.decode()
    assert "whsec_" not in admin.get("/agents/settings/").content.decode()
