"""Pages under /agents/: define agents (admins), start runs (members), watch a run's steps live, approve or reject,
cancel, see the result and the usage; the HTTP tool's allowlist, secrets and webhooks (admins).

Thin: parse, call ``agents.services`` / ``agents.selectors``, render. Errors go through ``core.pages``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from adapters.selectors import adapter_list_for_tenant
from agents import selectors, services
from agents.forms import AgentDefinitionForm, DecisionForm, HttpRuleForm, RunStartForm, SecretForm, WebhookForm
from agents.models import AgentDefinition, AgentRun, RunStatus, StepKind
from agents.tools import TOOLS
from core.errors import ApplicationError, Conflict, InvalidInput
from core.pages import page_errors
from knowledge.selectors import knowledge_base_list_readable
from tenants.models import Membership, Role, role_at_least
from tenants.selectors import membership_require


def _membership(request: HttpRequest, min_role: str = Role.VIEWER) -> Membership:
    return membership_require(user=request.user, tenant=getattr(request, "tenant", None), min_role=min_role)


def _ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def _form_error(form: Any, error: ApplicationError) -> None:
    for field in error.details or {}:
        if field in form.fields:
            form.add_error(field, error.message)
            return
    form.add_error(None, error.message)


# --- agents -----------------------------------------------------------------------------------------------


@require_GET
@login_required
@page_errors
def index(request: HttpRequest) -> HttpResponse:
    membership = _membership(request)
    tenant = membership.tenant
    runs = selectors.agent_run_list(tenant=tenant, role=membership.role, user=request.user)[:20]
    return render(
        request,
        "agents/index.html",
        {
            "definitions": selectors.agent_definition_list(tenant=tenant),
            "runs": runs,
            "is_admin": role_at_least(membership.role, Role.ADMIN),
            "may_run": role_at_least(membership.role, Role.MEMBER),
        },
    )


def _definition_form(request: HttpRequest, membership: Membership, *, data: Any = None, initial: Any = None) -> Any:
    return AgentDefinitionForm(
        data,
        initial=initial,
        knowledge_bases=knowledge_base_list_readable(tenant=membership.tenant, role=Role.OWNER),
        adapters=adapter_list_for_tenant(tenant=membership.tenant),
    )


@require_http_methods(["GET", "POST"])
@login_required
@page_errors
def definition_new(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    form = _definition_form(request, membership, data=request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            definition = services.agent_definition_create(
                tenant=membership.tenant, actor=request.user, **form.cleaned_data
            )
        except (InvalidInput, Conflict) as error:
            _form_error(form, error)
        else:
            messages.success(request, f"Agent “{definition.name}” created.")
            return redirect("agents:definition_detail", definition_id=definition.pk)
    return render(request, "agents/definition_form.html", {"form": form, "definition": None})


@require_http_methods(["GET", "POST"])
@login_required
@page_errors
def definition_edit(request: HttpRequest, definition_id: int) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    definition = selectors.agent_definition_get(tenant=membership.tenant, definition_id=definition_id)
    initial = {name: getattr(definition, name) for name in services.DEFINITION_FIELDS}
    form = _definition_form(
        request, membership, data=request.POST if request.method == "POST" else None, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.agent_definition_update(
                definition=definition, actor=request.user, is_active=True, **form.cleaned_data
            )
        except (InvalidInput, Conflict) as error:
            _form_error(form, error)
        else:
            messages.success(request, "Agent saved.")
            return redirect("agents:definition_detail", definition_id=definition.pk)
    return render(request, "agents/definition_form.html", {"form": form, "definition": definition})


@require_POST
@login_required
@page_errors
def definition_archive(request: HttpRequest, definition_id: int) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    definition = selectors.agent_definition_get(tenant=membership.tenant, definition_id=definition_id)
    services.agent_definition_archive(definition=definition, actor=request.user)
    messages.success(request, f"Agent “{definition.name}” archived; its runs stay.")
    return redirect("agents:index")


@require_GET
@login_required
@page_errors
def definition_detail(request: HttpRequest, definition_id: int) -> HttpResponse:
    membership = _membership(request)
    definition = selectors.agent_definition_get(tenant=membership.tenant, definition_id=definition_id)
    return _render_definition(request, membership, definition, RunStartForm())


def _render_definition(
    request: HttpRequest, membership: Membership, definition: AgentDefinition, form: Any, status: int = 200
) -> HttpResponse:
    runs = selectors.agent_run_list(
        tenant=membership.tenant, role=membership.role, user=request.user, definition_id=definition.pk
    )[:20]
    return render(
        request,
        "agents/definition_detail.html",
        {
            "definition": definition,
            "tools": [TOOLS[name] for name in definition.tools if name in TOOLS],
            "form": form,
            "runs": runs,
            "is_admin": role_at_least(membership.role, Role.ADMIN),
            "may_run": role_at_least(membership.role, Role.MEMBER) and definition.is_active,
        },
        status=status,
    )


@require_POST
@login_required
@page_errors
def run_start(request: HttpRequest, definition_id: int) -> HttpResponse:
    membership = _membership(request, Role.MEMBER)
    definition = selectors.agent_definition_get(
        tenant=membership.tenant, definition_id=definition_id, include_archived=False
    )
    form = RunStartForm(request.POST)
    if not form.is_valid():
        return _render_definition(request, membership, definition, form, status=400)
    try:
        run = services.agent_run_start(
            definition=definition,
            role=membership.role,
            text=form.cleaned_data["input"],
            user=request.user,
            ip=_ip(request),
        )
    except InvalidInput as error:
        _form_error(form, error)
        return _render_definition(request, membership, definition, form, status=400)
    return redirect("agents:run_detail", run_id=run.pk)


# --- runs -------------------------------------------------------------------------------------------------


@require_GET
@login_required
@page_errors
def run_list(request: HttpRequest) -> HttpResponse:
    membership = _membership(request)
    status = request.GET.get("status") or None
    if status not in (None, *RunStatus.values):
        raise InvalidInput("Unknown status.")
    runs = selectors.agent_run_list(tenant=membership.tenant, role=membership.role, user=request.user, status=status)
    return render(
        request, "agents/run_list.html", {"runs": runs[:100], "status": status, "statuses": RunStatus.choices}
    )


def _run_context(request: HttpRequest, membership: Membership, run: AgentRun) -> dict[str, Any]:
    steps = list(selectors.agent_step_list(run=run))
    pending = next((s for s in reversed(steps) if s.kind == StepKind.APPROVAL and s.status == "pending"), None)
    return {
        "run": run,
        "steps": steps,
        "pending": pending if run.status == RunStatus.WAITING_APPROVAL else None,
        "may_cancel": not run.is_terminal
        and selectors.agent_run_may_cancel(run=run, role=membership.role, user=request.user),
        "may_decide": selectors.agent_run_may_decide(run=run, role=membership.role),
        "budget_percent": min(100, round(100 * run.tokens_used / max(run.definition.token_budget, 1))),
        "steps_percent": min(100, round(100 * run.steps_used / max(run.definition.max_steps, 1))),
    }


def _get_run(request: HttpRequest, run_id: int, min_role: str = Role.VIEWER) -> tuple[Membership, AgentRun]:
    membership = _membership(request)
    run = selectors.agent_run_get(tenant=membership.tenant, role=membership.role, user=request.user, run_id=run_id)
    _membership(request, min_role)
    return membership, run


@require_GET
@login_required
@page_errors
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    membership, run = _get_run(request, run_id)
    return render(request, "agents/run_detail.html", _run_context(request, membership, run))


@require_GET
@login_required
@page_errors
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    membership, run = _get_run(request, run_id)
    return render(request, "agents/_run_live.html", _run_context(request, membership, run))


def _after_action(request: HttpRequest, run: AgentRun) -> HttpResponse:
    if getattr(request, "htmx", False):
        membership, fresh = _get_run(request, run.pk)
        return render(request, "agents/_run_live.html", _run_context(request, membership, fresh))
    return redirect(reverse("agents:run_detail", kwargs={"run_id": run.pk}))


@require_POST
@login_required
@page_errors
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    membership, run = _get_run(request, run_id, Role.MEMBER)
    services.agent_run_cancel(run=run, role=membership.role, user=request.user, ip=_ip(request))
    return _after_action(request, run)


def _decide(request: HttpRequest, run_id: int, *, approve: bool) -> HttpResponse:
    membership, run = _get_run(request, run_id, Role.MEMBER)
    form = DecisionForm(request.POST)
    note = form.cleaned_data.get("note", "") if form.is_valid() else ""
    services.agent_run_decide(
        run=run, approve=approve, role=membership.role, user=request.user, note=note, ip=_ip(request)
    )
    return _after_action(request, run)


@require_POST
@login_required
@page_errors
def run_approve(request: HttpRequest, run_id: int) -> HttpResponse:
    return _decide(request, run_id, approve=True)


@require_POST
@login_required
@page_errors
def run_reject(request: HttpRequest, run_id: int) -> HttpResponse:
    return _decide(request, run_id, approve=False)


# --- tool settings (admins) -------------------------------------------------------------------------------


def _settings_page(
    request: HttpRequest,
    membership: Membership,
    *,
    rule_form: Any = None,
    secret_form: Any = None,
    webhook_form: Any = None,
    status: int = 200,
    new_webhook_secret: str = "",
) -> HttpResponse:
    tenant = membership.tenant
    definitions = selectors.agent_definition_list(tenant=tenant)
    return render(
        request,
        "agents/settings.html",
        {
            "rules": selectors.http_tool_rule_list(tenant=tenant),
            "secrets": selectors.agent_secret_list(tenant=tenant),
            "webhooks": selectors.webhook_endpoint_list(tenant=tenant),
            "rule_form": rule_form or HttpRuleForm(),
            "secret_form": secret_form or SecretForm(),
            "webhook_form": webhook_form or WebhookForm(definitions=definitions),
            "new_webhook_secret": new_webhook_secret,
        },
        status=status,
    )


@require_GET
@login_required
@page_errors
def tool_settings(request: HttpRequest) -> HttpResponse:
    return _settings_page(request, _membership(request, Role.ADMIN))


@require_POST
@login_required
@page_errors
def rule_create(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    form = HttpRuleForm(request.POST)
    if form.is_valid():
        try:
            services.http_tool_rule_create(tenant=membership.tenant, actor=request.user, **form.cleaned_data)
        except (InvalidInput, Conflict) as error:
            _form_error(form, error)
        else:
            messages.success(request, "Allowlist rule added.")
            return redirect("agents:settings")
    return _settings_page(request, membership, rule_form=form, status=400)


@require_POST
@login_required
@page_errors
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    services.http_tool_rule_delete(tenant=membership.tenant, rule_id=rule_id, actor=request.user)
    messages.success(request, "Allowlist rule removed.")
    return redirect("agents:settings")


@require_POST
@login_required
@page_errors
def secret_set(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    form = SecretForm(request.POST)
    if form.is_valid():
        try:
            services.agent_secret_set(tenant=membership.tenant, actor=request.user, **form.cleaned_data)
        except InvalidInput as error:
            _form_error(form, error)
        else:
            messages.success(request, "Secret stored (it is never shown again).")
            return redirect("agents:settings")
    return _settings_page(request, membership, secret_form=form, status=400)


@require_POST
@login_required
@page_errors
def secret_delete(request: HttpRequest, secret_id: int) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    services.agent_secret_delete(tenant=membership.tenant, secret_id=secret_id, actor=request.user)
    messages.success(request, "Secret removed.")
    return redirect("agents:settings")


@require_POST
@login_required
@page_errors
def webhook_create(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    form = WebhookForm(request.POST, definitions=selectors.agent_definition_list(tenant=membership.tenant))
    if form.is_valid():
        try:
            _, secret = services.webhook_endpoint_create(
                tenant=membership.tenant, actor=request.user, **form.cleaned_data
            )
        except (InvalidInput, Conflict) as error:
            _form_error(form, error)
        else:
            return _settings_page(request, membership, new_webhook_secret=secret)
    return _settings_page(request, membership, webhook_form=form, status=400)


@require_POST
@login_required
@page_errors
def webhook_delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    services.webhook_endpoint_delete(tenant=membership.tenant, endpoint_id=endpoint_id, actor=request.user)
    messages.success(request, "Webhook removed.")
    return redirect("agents:settings")
