"""Writes: agent definitions, starting, cancelling, approving and rejecting runs, the HTTP tool's allowlist and
secrets, webhooks. Every decision a person takes on a run is audited; queuing happens after the commit."""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.utils import timezone

from adapters.selectors import adapter_get_for_tenant
from agents import crypto, dispatch
from agents.checkpoints import scope_key
from agents.events import event_append, status_data, step_public
from agents.models import (
    AgentDefinition,
    AgentRun,
    AgentSecret,
    AgentStep,
    HttpMethod,
    HttpToolRule,
    RunStatus,
    StepKind,
    StepStatus,
    WebhookEndpoint,
)
from agents.selectors import agent_run_may_cancel, agent_run_may_decide
from agents.tools import TOOLS, ToolError, normalize_url
from core.egress import EgressRefused, egress_validate_url
from core.errors import Conflict, GuardrailBlocked, InvalidInput, NotFound, PermissionDenied
from guardrails.services import inspect_input, mask
from knowledge.selectors import knowledge_base_list_readable
from tenants.models import ApiKey, Role, Tenant, role_at_least
from tenants.services import audit_record

MAX_INPUT_CHARS = 20_000
MAX_INSTRUCTIONS_CHARS = 20_000
LIMITS = {
    "max_steps": (1, 50),
    "token_budget": (200, 5_000_000),
    "max_output_tokens": (32, 4_096),
    "min_tool_calls": (0, 50),
}
DEFINITION_FIELDS = (
    "name",
    "description",
    "instructions",
    "tools",
    "approval_tools",
    "approver_role",
    "knowledge_base_ids",
    "adapter",
    "max_steps",
    "token_budget",
    "max_output_tokens",
    "min_tool_calls",
    "max_tool_calls",
)


# --- definitions ------------------------------------------------------------------------------------------


def _int_field(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{name.replace('_', ' ').capitalize()} must be a whole number.", details={name: ["number"]}
        ) from None
    if not low <= number <= high:
        raise InvalidInput(
            f"{name.replace('_', ' ').capitalize()} must be between {low:,} and {high:,}.",
            details={name: [f"between {low} and {high}"]},
        )
    return number


def _validate_definition(*, tenant: Tenant, fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in fields:
        name = str(fields["name"] or "").strip()
        if not name or len(name) > 100:
            raise InvalidInput("An agent needs a name of at most 100 characters.", details={"name": ["required"]})
        out["name"] = name
    if "description" in fields:
        out["description"] = str(fields["description"] or "").strip()[:300]
    if "instructions" in fields:
        instructions = str(fields["instructions"] or "").strip()
        if not instructions:
            raise InvalidInput("Tell the agent what to do (instructions).", details={"instructions": ["required"]})
        if len(instructions) > MAX_INSTRUCTIONS_CHARS:
            raise InvalidInput(f"The instructions are too long (at most {MAX_INSTRUCTIONS_CHARS:,} characters).")
        out["instructions"] = instructions
    for key in ("tools", "approval_tools"):
        if key in fields:
            names = [str(t) for t in (fields[key] or [])]
            unknown = sorted(set(names) - set(TOOLS))
            if unknown:
                raise InvalidInput(f"Unknown tools: {', '.join(unknown)}.", details={key: unknown})
            out[key] = sorted(set(names))
    if "approver_role" in fields:
        role = str(fields["approver_role"] or Role.ADMIN)
        if role not in (Role.MEMBER, Role.ADMIN):
            raise InvalidInput("Approvals are given by members or by admins.", details={"approver_role": [role]})
        out["approver_role"] = role
    if "knowledge_base_ids" in fields:
        try:
            wanted = sorted({int(i) for i in (fields["knowledge_base_ids"] or [])})
        except (TypeError, ValueError):
            raise InvalidInput("Knowledge bases are given by their ids.") from None
        found = set(
            knowledge_base_list_readable(tenant=tenant, role=Role.OWNER)
            .filter(pk__in=wanted)
            .values_list("pk", flat=True)
        )
        missing = [i for i in wanted if i not in found]
        if missing:
            raise InvalidInput("Some knowledge bases were not found.", details={"knowledge_base_ids": missing})
        out["knowledge_base_ids"] = wanted
    if "adapter" in fields:
        adapter = str(fields["adapter"] or "").strip()
        if adapter:
            adapter_get_for_tenant(tenant=tenant, name=adapter)
        out["adapter"] = adapter
    for key, (low, high) in LIMITS.items():
        if key in fields:
            out[key] = _int_field(key, fields[key], low, high)
    if "max_tool_calls" in fields:
        value = fields["max_tool_calls"]
        out["max_tool_calls"] = None if value in (None, "") else _int_field("max_tool_calls", value, 0, 50)
    return out


def _check_consistency(definition: AgentDefinition) -> None:
    extra = sorted(set(definition.approval_tools) - set(definition.tools))
    if extra:
        raise InvalidInput(
            f"Tools that need approval must also be enabled: {', '.join(extra)}.", details={"approval_tools": extra}
        )
    if definition.min_tool_calls and not definition.tools:
        raise InvalidInput("An agent without tools cannot be required to call tools.")
    if definition.min_tool_calls >= definition.max_steps:
        raise InvalidInput("The required tool calls must leave at least one step for the answer.")
    if definition.max_tool_calls is not None and definition.max_tool_calls < definition.min_tool_calls:
        raise InvalidInput("The most tool calls allowed cannot be fewer than the tool calls required.")


@transaction.atomic
def agent_definition_create(*, tenant: Tenant, actor: Any = None, **fields: Any) -> AgentDefinition:
    unknown = set(fields) - set(DEFINITION_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
    fields.setdefault("instructions", "")
    fields.setdefault("name", "")
    clean = _validate_definition(tenant=tenant, fields=fields)
    definition = AgentDefinition(tenant=tenant, created_by=actor if getattr(actor, "pk", None) else None, **clean)
    _check_consistency(definition)
    if AgentDefinition.objects.for_tenant(tenant).filter(name=definition.name).exists():
        raise Conflict(f"An agent named '{definition.name}' already exists.", details={"name": ["taken"]})
    definition.save()
    audit_record(
        action="agent.define",
        tenant=tenant,
        actor=actor,
        target=definition,
        details={"tools": definition.tools, "approval_tools": definition.approval_tools},
    )
    return definition


@transaction.atomic
def agent_definition_update(*, definition: AgentDefinition, actor: Any = None, **changes: Any) -> AgentDefinition:
    unknown = set(changes) - set(DEFINITION_FIELDS) - {"is_active"}
    if unknown:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
    clean = _validate_definition(tenant=definition.tenant, fields=changes)
    if "is_active" in changes:
        clean["is_active"] = bool(changes["is_active"])
    for key, value in clean.items():
        setattr(definition, key, value)
    _check_consistency(definition)
    if (
        "name" in clean
        and AgentDefinition.objects.for_tenant(definition.tenant_id)
        .filter(name=definition.name)
        .exclude(pk=definition.pk)
        .exists()
    ):
        raise Conflict(f"An agent named '{definition.name}' already exists.", details={"name": ["taken"]})
    definition.updated_at = timezone.now()
    definition.save()
    audit_record(
        action="agent.update",
        tenant=definition.tenant,
        actor=actor,
        target=definition,
        details={"fields": sorted(clean)},
    )
    return definition


def agent_definition_archive(*, definition: AgentDefinition, actor: Any = None) -> AgentDefinition:
    """Definitions are archived, not deleted: their runs keep pointing at what ran."""
    return agent_definition_update(definition=definition, actor=actor, is_active=False)


# --- runs -------------------------------------------------------------------------------------------------


def agent_run_start(
    *,
    definition: AgentDefinition,
    role: str,
    text: str,
    user: Any = None,
    api_key: ApiKey | None = None,
    ip: str | None = None,
) -> AgentRun:
    """Queue a run. The task is checked by the input guard first (a block refuses it) and its PII is masked."""
    tenant = definition.tenant
    if not role_at_least(role, Role.MEMBER):
        raise PermissionDenied("Running agents needs the member role or higher.")
    if not definition.is_active:
        raise Conflict("This agent is archived; an admin can restore it.")
    text = (text or "").strip()
    if not text:
        raise InvalidInput("Describe the task for the agent.", details={"input": ["required"]})
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidInput(f"The task is too long (at most {MAX_INPUT_CHARS:,} characters).")
    verdict = inspect_input(tenant=tenant, text=text)
    if verdict.decision == "block":
        reasons = "; ".join(list(verdict.reasons)[:2])
        raise GuardrailBlocked(
            "The task was blocked by the content policy" + (f": {reasons}." if reasons else "."),
            details={"score": round(float(verdict.score), 3)},
        )
    with transaction.atomic():
        run = AgentRun.objects.create(
            tenant=tenant,
            definition=definition,
            user=user if getattr(user, "pk", None) else None,
            api_key=api_key,
            input=text,
        )
        run.input_masked = mask(tenant=tenant, scope_key=scope_key(run.pk), text=text).text
        run.save(update_fields=["input_masked"])
        locked = AgentRun.unscoped.select_for_update(of=("self",)).select_related("definition").get(pk=run.pk)
        event_append(locked, "status", status_data(locked))
        audit_record(
            action="agent.run_start",
            tenant=tenant,
            actor=user if getattr(user, "pk", None) else None,
            actor_label=f"api-key:{api_key.prefix}" if api_key is not None else "",
            target=run,
            ip=ip,
            details={"definition_id": definition.pk, "input_guard": verdict.decision},
        )
        run_id = run.pk
        transaction.on_commit(lambda: dispatch.enqueue_step(run_id=run_id, checkpoint=0))
    run.refresh_from_db()
    return run


def _lock(run: AgentRun) -> AgentRun:
    return (
        AgentRun.objects.for_tenant(run.tenant_id)
        .select_for_update(of=("self",))
        .select_related("definition", "tenant")
        .get(pk=run.pk)
    )


def _label(user: Any, api_key: ApiKey | None) -> str:
    if api_key is not None:
        return f"api-key:{api_key.prefix}"
    return user.get_username() if user is not None and getattr(user, "pk", None) else "system"


@transaction.atomic
def agent_run_cancel(
    *, run: AgentRun, role: str, user: Any = None, api_key: ApiKey | None = None, ip: str | None = None
) -> AgentRun:
    """Cancel at any point: queued, running (the worker stops within about a second) or waiting for approval."""
    if not agent_run_may_cancel(run=run, role=role, user=user, api_key=api_key):
        raise PermissionDenied("Only the person who started the run or an admin can cancel it.")
    locked = _lock(run)
    if locked.status == RunStatus.CANCELLED:
        return locked
    if locked.is_terminal:
        raise Conflict(f"The run already ended ({locked.get_status_display().lower()}).")
    label = _label(user, api_key)
    for step in AgentStep.objects.for_tenant(locked.tenant_id).filter(
        run=locked, kind=StepKind.APPROVAL, status=StepStatus.PENDING
    ):
        step.status = StepStatus.SKIPPED
        step.save(update_fields=["status"])
        event_append(locked, "step", step_public(step))
    locked.status = RunStatus.CANCELLED
    locked.error_code = "cancelled"
    locked.error = f"Cancelled by {label}."
    locked.finished_at = timezone.now()
    locked.cancelled_by = user if getattr(user, "pk", None) else None
    locked.updated_at = timezone.now()
    locked.save()
    event_append(locked, "status", status_data(locked))
    audit_record(
        action="agent.run_cancel",
        tenant=locked.tenant,
        actor=user if getattr(user, "pk", None) else None,
        actor_label=label,
        target=locked,
        ip=ip,
        details={"definition_id": locked.definition_id},
    )
    return locked


@transaction.atomic
def agent_run_decide(
    *,
    run: AgentRun,
    approve: bool,
    role: str,
    user: Any = None,
    api_key: ApiKey | None = None,
    note: str = "",
    ip: str | None = None,
) -> AgentRun:
    """Approve or reject the tool call a run waits on. Approve: it runs (again, for an interrupted call, with the
    same idempotency key). Reject: it does not run and the run stops (cancelled, code ``rejected``)."""
    if not agent_run_may_decide(run=run, role=role):
        raise PermissionDenied(f"Approvals for this agent need the {run.definition.approver_role} role or higher.")
    locked = _lock(run)
    if locked.status != RunStatus.WAITING_APPROVAL:
        raise Conflict("This run is not waiting for an approval.")
    approval = (
        AgentStep.objects.for_tenant(locked.tenant_id)
        .filter(run=locked, kind=StepKind.APPROVAL, status=StepStatus.PENDING)
        .order_by("-ordinal")
        .first()
    )
    if approval is None:
        raise Conflict("This run has no pending approval.")
    call = AgentStep.objects.for_tenant(locked.tenant_id).get(run=locked, ordinal=approval.payload["call"])
    label = _label(user, api_key)
    now = timezone.now()
    approval.status = StepStatus.APPROVED if approve else StepStatus.REJECTED
    approval.decided_by = user if getattr(user, "pk", None) else None
    approval.decided_at = now
    approval.finished_at = now
    approval.payload = {**approval.payload, "decision": approval.status, "by": label, "note": (note or "")[:500]}
    approval.save()
    event_append(locked, "step", step_public(approval))
    if approve:
        call.status = StepStatus.APPROVED
        call.save(update_fields=["status"])
        event_append(locked, "step", step_public(call))
        locked.status = RunStatus.RUNNING
        locked.checkpoint += 1
        locked.updated_at = now
        locked.save()
        event_append(locked, "status", status_data(locked))
        run_id, checkpoint = locked.pk, locked.checkpoint
        transaction.on_commit(lambda: dispatch.enqueue_step(run_id=run_id, checkpoint=checkpoint))
    else:
        call.status = StepStatus.SKIPPED if call.status == StepStatus.PENDING else StepStatus.FAILED
        call.payload = {**call.payload, "rejected": True}
        call.save(update_fields=["status", "payload"])
        event_append(locked, "step", step_public(call))
        locked.status = RunStatus.CANCELLED
        locked.error_code = "rejected"
        locked.error = f"{label} rejected the call to {call.tool}; the run stopped."
        locked.finished_at = now
        locked.checkpoint += 1
        locked.updated_at = now
        locked.save()
        event_append(locked, "status", status_data(locked))
    audit_record(
        action="agent.approve" if approve else "agent.reject",
        tenant=locked.tenant,
        actor=user if getattr(user, "pk", None) else None,
        actor_label=label,
        target=locked,
        ip=ip,
        details={"tool": call.tool, "step": call.ordinal, "reason": approval.payload.get("reason", "")},
    )
    return locked


# --- the HTTP tool: secrets and the allowlist -----------------------------------------------------------

_SECRET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_FORBIDDEN_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "idempotency-key"}


@transaction.atomic
def agent_secret_set(*, tenant: Tenant, name: str, value: str, actor: Any = None) -> AgentSecret:
    name = (name or "").strip().lower()
    if not _SECRET_NAME.match(name):
        raise InvalidInput("A secret's name uses lowercase letters, digits, - and _ (at most 60).")
    if not value or len(value) > 4_000 or any(c in value for c in "\r\n"):
        raise InvalidInput("A secret's value is one line of at most 4,000 characters.")
    secret = AgentSecret.objects.for_tenant(tenant).filter(name=name).first()
    created = secret is None
    if secret is None:
        secret = AgentSecret(tenant=tenant, name=name, created_by=actor if getattr(actor, "pk", None) else None)
    secret.encrypted_value = crypto.encrypt(value)
    secret.updated_at = timezone.now()
    secret.save()
    audit_record(
        action="agent.secret_set",
        tenant=tenant,
        actor=actor,
        target=secret,
        details={"name": name, "created": created},
    )
    return secret


@transaction.atomic
def agent_secret_delete(*, tenant: Tenant, secret_id: int, actor: Any = None) -> None:
    secret = AgentSecret.objects.for_tenant(tenant).filter(pk=secret_id).first()
    if secret is None:
        raise NotFound()
    used = [r.name for r in HttpToolRule.objects.for_tenant(tenant) if secret.name in (r.header_secrets or {}).values()]
    if used:
        raise Conflict(f"The secret is used by allowlist rules: {', '.join(used)}. Remove them first.")
    secret.delete()
    audit_record(action="agent.secret_delete", tenant=tenant, actor=actor, details={"name": secret.name})


@transaction.atomic
def http_tool_rule_create(
    *,
    tenant: Tenant,
    name: str,
    method: str,
    url_prefix: str,
    header_secrets: dict[str, str] | None = None,
    max_response_bytes: int = 65_536,
    timeout_s: float = 10.0,
    idempotent: bool = False,
    description: str = "",
    actor: Any = None,
) -> HttpToolRule:
    name = (name or "").strip().lower()
    if not _SECRET_NAME.match(name):
        raise InvalidInput("A rule's name uses lowercase letters, digits, - and _ (at most 60).")
    method = (method or "").upper()
    if method not in HttpMethod.values:
        raise InvalidInput(f"The method must be one of {', '.join(HttpMethod.values)}.")
    try:
        prefix = normalize_url(url_prefix)
    except ToolError as exc:
        raise InvalidInput(
            f"The URL prefix is not valid: {exc.message}", details={"url_prefix": [exc.message]}
        ) from None
    if urlsplit_query(prefix):
        raise InvalidInput("A URL prefix cannot hold a query string.")
    _refuse_internal(prefix, field="url_prefix")
    headers = dict(header_secrets or {})
    for header, secret_name in headers.items():
        if not _HEADER_NAME.match(str(header)) or str(header).lower() in _FORBIDDEN_HEADERS:
            raise InvalidInput(f"'{header}' cannot be set as a header.")
        if not AgentSecret.objects.for_tenant(tenant).filter(name=str(secret_name)).exists():
            raise InvalidInput(f"There is no stored secret named '{secret_name}'.")
    max_bytes = _int_field("max_response_bytes", max_response_bytes, 256, 5_000_000)
    try:
        timeout = float(timeout_s)
    except (TypeError, ValueError):
        raise InvalidInput("The timeout must be a number of seconds.") from None
    if not 0.5 <= timeout <= 120:
        raise InvalidInput("The timeout must be between 0.5 and 120 seconds.")
    if HttpToolRule.objects.for_tenant(tenant).filter(name=name).exists():
        raise Conflict(f"An allowlist rule named '{name}' already exists.")
    rule = HttpToolRule.objects.create(
        tenant=tenant,
        name=name,
        method=method,
        url_prefix=prefix,
        header_secrets={str(k): str(v) for k, v in headers.items()},
        max_response_bytes=max_bytes,
        timeout_s=timeout,
        idempotent=bool(idempotent),
        description=(description or "")[:300],
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    audit_record(
        action="agent.http_rule_create",
        tenant=tenant,
        actor=actor,
        target=rule,
        details={"method": method, "url_prefix": rule.url_prefix, "headers": sorted(headers)},
    )
    return rule


def _refuse_internal(url: str, *, field: str) -> None:
    """Internal destinations are refused when the URL is stored (and again at every call, see core.egress)."""
    try:
        egress_validate_url(url)
    except EgressRefused as refused:
        raise InvalidInput(refused.message, details={field: [refused.message]}) from None


def urlsplit_query(url: str) -> str:
    return urlsplit(url).query


@transaction.atomic
def http_tool_rule_delete(*, tenant: Tenant, rule_id: int, actor: Any = None) -> None:
    rule = HttpToolRule.objects.for_tenant(tenant).filter(pk=rule_id).first()
    if rule is None:
        raise NotFound()
    rule.delete()
    audit_record(action="agent.http_rule_delete", tenant=tenant, actor=actor, details={"name": rule.name})


# --- webhooks ---------------------------------------------------------------------------------------------

EVENT_TYPES = ("status", "step", "resumed", "thinking", "budget")  # budget: the department's budget alerts


@transaction.atomic
def webhook_endpoint_create(
    *,
    tenant: Tenant,
    url: str,
    definition_id: int | None = None,
    event_types: list[str] | None = None,
    actor: Any = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its signing secret (shown once)."""
    try:
        normalized = normalize_url(url)
    except ToolError as exc:
        raise InvalidInput(f"The webhook URL is not valid: {exc.message}", details={"url": [exc.message]}) from None
    _refuse_internal(normalized, field="url")
    types = sorted({str(t) for t in (event_types or [])})
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"Unknown event types: {', '.join(unknown)}.", details={"event_types": unknown})
    definition = None
    if definition_id:
        definition = AgentDefinition.objects.for_tenant(tenant).filter(pk=definition_id).first()
        if definition is None:
            raise InvalidInput("That agent was not found.", details={"definition_id": [definition_id]})
    secret = "whsec_" + secrets.token_urlsafe(32)
    try:
        endpoint = WebhookEndpoint.objects.create(
            tenant=tenant,
            url=normalized,
            encrypted_secret=crypto.encrypt(secret),
            definition=definition,
            event_types=types,
            created_by=actor if getattr(actor, "pk", None) else None,
        )
    except IntegrityError:
        raise Conflict("That webhook could not be saved.") from None
    audit_record(
        action="agent.webhook_create",
        tenant=tenant,
        actor=actor,
        target=endpoint,
        details={"definition_id": definition_id, "event_types": types},
    )
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_delete(*, tenant: Tenant, endpoint_id: int, actor: Any = None) -> None:
    endpoint = WebhookEndpoint.objects.for_tenant(tenant).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound()
    endpoint.delete()
    audit_record(action="agent.webhook_delete", tenant=tenant, actor=actor, details={"endpoint_id": endpoint_id})
