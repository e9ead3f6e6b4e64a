"""Reads: agent definitions, the runs a caller may see, steps, the event log, the HTTP allowlist and webhooks.

Who sees a run: the department's admins and owners; the person (in the browser) or the API key that started it
(a key does not see its creator's browser runs, nor the creator the key's); and, for agents
whose approvals any member may give (``approver_role`` member), every member. Anything else answers 404, the
same as a run that does not exist.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import (
    AgentDefinition,
    AgentEvent,
    AgentRun,
    AgentSecret,
    AgentStep,
    HttpToolRule,
    StepKind,
    StepStatus,
    WebhookEndpoint,
)
from core.errors import NotFound
from tenants.models import ApiKey, Role, Tenant, role_at_least


def agent_definition_list(*, tenant: Tenant, include_archived: bool = False) -> QuerySet[AgentDefinition]:
    qs = AgentDefinition.objects.for_tenant(tenant).order_by("name", "id")
    return qs if include_archived else qs.filter(is_active=True)


def agent_definition_get(*, tenant: Tenant, definition_id: int, include_archived: bool = True) -> AgentDefinition:
    found = agent_definition_list(tenant=tenant, include_archived=include_archived).filter(pk=definition_id).first()
    if found is None:
        raise NotFound("Agent not found.")
    return found


def agent_run_list(
    *,
    tenant: Tenant,
    role: str,
    user: Any = None,
    api_key: ApiKey | None = None,
    status: str | None = None,
    definition_id: int | None = None,
) -> QuerySet[AgentRun]:
    """The runs this caller may see, newest first."""
    qs = AgentRun.objects.for_tenant(tenant).select_related("definition", "user", "api_key")
    if not role_at_least(role, Role.ADMIN):
        visible = Q(pk__in=[])
        if api_key is not None:  # a key sees the runs it started (not its creator's)
            visible |= Q(api_key_id=api_key.pk)
        elif user is not None and getattr(user, "pk", None):
            visible |= Q(user_id=user.pk, api_key__isnull=True)
        if role_at_least(role, Role.MEMBER):
            visible |= Q(definition__approver_role=Role.MEMBER)
        qs = qs.filter(visible)
    if status:
        qs = qs.filter(status=status)
    if definition_id:
        qs = qs.filter(definition_id=definition_id)
    return qs.order_by("-created_at", "-id")


def agent_run_get(
    *, tenant: Tenant, role: str, user: Any = None, api_key: ApiKey | None = None, run_id: int
) -> AgentRun:
    run = agent_run_list(tenant=tenant, role=role, user=user, api_key=api_key).filter(pk=run_id).first()
    if run is None:
        raise NotFound("Run not found.")
    return run


def agent_run_is_starter(*, run: AgentRun, user: Any = None, api_key: ApiKey | None = None) -> bool:
    if api_key is not None:
        return run.api_key_id == api_key.pk
    return (
        run.api_key_id is None and user is not None and getattr(user, "pk", None) is not None and run.user_id == user.pk
    )


def agent_run_may_cancel(*, run: AgentRun, role: str, user: Any = None, api_key: ApiKey | None = None) -> bool:
    return role_at_least(role, Role.ADMIN) or (
        role_at_least(role, Role.MEMBER) and agent_run_is_starter(run=run, user=user, api_key=api_key)
    )


def agent_run_may_decide(*, run: AgentRun, role: str) -> bool:
    return role_at_least(role, Role.MEMBER) and role_at_least(role, run.definition.approver_role)


def agent_step_list(*, run: AgentRun) -> QuerySet[AgentStep]:
    return AgentStep.objects.for_tenant(run.tenant_id).filter(run=run).select_related("decided_by").order_by("ordinal")


def agent_step_pending_approval(*, run: AgentRun) -> AgentStep | None:
    return (
        agent_step_list(run=run).filter(kind=StepKind.APPROVAL, status=StepStatus.PENDING).order_by("-ordinal").first()
    )


def agent_event_list(*, run: AgentRun, after: int = 0, limit: int = 500) -> list[AgentEvent]:
    return list(
        AgentEvent.objects.for_tenant(run.tenant_id).filter(run=run, seq__gt=after).order_by("seq")[: max(1, limit)]
    )


def agent_run_state(*, run_id: int, tenant_id: int) -> tuple[str, int, bool] | None:
    """(status, last event seq, a worker still holds it) — what an event stream needs to know whether to end."""
    row = (
        AgentRun.objects.for_tenant(tenant_id)
        .filter(pk=run_id)
        .values_list("status", "event_seq", "lease_owner", "lease_expires_at")
        .first()
    )
    if row is None:
        return None
    status, seq, owner, expires = row
    held = bool(owner) and expires is not None and expires > timezone.now()
    return status, seq, held


def http_tool_rule_list(*, tenant: Tenant) -> QuerySet[HttpToolRule]:
    return HttpToolRule.objects.for_tenant(tenant).order_by("name")


def agent_secret_list(*, tenant: Tenant) -> QuerySet[AgentSecret]:
    """Names and dates only: the values never leave ``agents.crypto``."""
    return AgentSecret.objects.for_tenant(tenant).defer("encrypted_value").order_by("name")


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.for_tenant(tenant).defer("encrypted_secret").select_related("definition")
