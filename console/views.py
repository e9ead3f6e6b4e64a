"""Console pages: overview, departments (status, quotas, members, API keys), usage and cost, prices, audit log.

Views parse input and call services/selectors; the pool and adapter pages are in ``views_pool``/``views_adapters``.
"""

from __future__ import annotations

import csv
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from adapters.selectors import adapter_list_for_tenant
from adapters.services import adapter_set_default
from chat.selectors import (
    feedback_csv_rows,
    feedback_review_models,
    feedback_review_queryset,
    feedback_review_rows,
)
from console import selectors, services
from console.access import ConsoleScope
from console.charts import Bar, bar_chart_svg
from console.decorators import back, console_view, is_htmx
from console.forms import (
    ApiKeyCreateForm,
    MemberAddForm,
    MemberCreateForm,
    PriceForm,
    QuotaForm,
    RoleForm,
    TenantCreateForm,
    cleaned,
)
from core.errors import InvalidInput
from tenants import services as tenant_services
from tenants.models import ApiKey, Role, Tenant
from tenants.selectors import audit_event_list, quota_get


# --------------------------------------------------------------------------------------------------------- overview
@console_view()
def overview(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    tenants = scope.tenants()
    budgets = selectors.budget_list(tenants=tenants)
    since = timezone.now() - timedelta(days=1)
    recent = audit_event_list(tenant=scope.tenant)[:10]
    usage_day = selectors.usage_totals(
        qs=selectors.usage_queryset(
            tenant=scope.tenant, filters=selectors.UsageFilters(since=since, until=timezone.now())
        )
    )
    return render(
        request,
        "console/overview.html",
        {"scope": scope, "budgets": budgets, "recent": recent, "usage_day": usage_day, "section": "overview"},
    )


# -------------------------------------------------------------------------------------------------------- tenants
@console_view()
def tenant_list(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    if not scope.is_staff:
        assert scope.tenant is not None
        return redirect("console:tenant_detail", tenant_id=scope.tenant.pk)
    tenants = scope.tenants()
    budgets = {b.tenant.pk: b for b in selectors.budget_list(tenants=tenants)}
    rows = [(t, budgets[t.pk]) for t in tenants]
    return render(request, "console/tenants/list.html", {"scope": scope, "rows": rows, "section": "tenants"})


@console_view(methods=("POST",), staff_only=True)
def tenant_create(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    data = cleaned(TenantCreateForm(request.POST))
    tenant = tenant_services.tenant_create(name=data["name"].strip(), slug=data["slug"], actor=scope.user)
    messages.success(request, f"Department {tenant.name} created.")
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = reverse("console:tenant_detail", kwargs={"tenant_id": tenant.pk})
        return response
    return redirect("console:tenant_detail", tenant_id=tenant.pk)


def _tenant_context(scope: ConsoleScope, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    quota = quota_get(tenant=tenant)
    return {
        "scope": scope,
        "tenant": tenant,
        "quota_form": QuotaForm(instance=quota),
        "budget": selectors.budget_list(tenants=[tenant])[0],
        "members": selectors.member_list(tenant=tenant),
        "keys": selectors.api_key_list_with_users(tenant=tenant),
        "adapters": adapter_list_for_tenant(tenant=tenant),
        "roles": Role.choices,
        "grantable_roles": [(v, label) for v, label in Role.choices if v != Role.OWNER or scope.may_manage_owners()],
        "scopes": ApiKey.Scope.choices,
        "now": timezone.now(),
        "section": "tenants",
        **extra,
    }


@console_view()
def tenant_detail(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    shown_once = request.session.pop(_SHOWN_ONCE_KEY, None)  # left by a plain POST (below), shown on this one GET
    extra = shown_once["extra"] if shown_once and shown_once.get("tenant") == tenant.pk else {}
    return render(request, "console/tenants/detail.html", _tenant_context(scope, tenant, **extra))


_SHOWN_ONCE_KEY = "console_shown_once"


def _group_label(by: str) -> str:
    """People read "department"; the grouping's value stays ``tenant`` (URLs, CSV)."""
    return "department" if by == "tenant" else by


def _section(request: HttpRequest, scope: ConsoleScope, tenant: Tenant, name: str, **extra: Any) -> HttpResponse:
    """htmx: the re-rendered section; a plain post: redirect to the page (a refresh must not post again), which
    shows the one-time secrets from the session once."""
    if is_htmx(request):
        return render(request, f"console/tenants/_{name}.html", _tenant_context(scope, tenant, **extra))
    if extra:
        key = extra.pop("new_key", None)
        if key is not None:
            extra["new_key"] = {"name": key.name}
        request.session[_SHOWN_ONCE_KEY] = {"tenant": tenant.pk, "extra": extra}
        return redirect("console:tenant_detail", tenant_id=tenant.pk)
    return back(request, reverse("console:tenant_detail", kwargs={"tenant_id": tenant.pk}))


@console_view(methods=("POST",), staff_only=True)
def tenant_status(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    status = request.POST.get("status", "")
    if status not in Tenant.Status.values:
        raise InvalidInput("Choose active or suspended.")
    if tenant.status != status:
        tenant_services.tenant_set_status(tenant=tenant, status=status, actor=scope.user)
    return _section(request, scope, tenant, "status")


@console_view(methods=("POST",), staff_only=True)
def tenant_quota(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    quota = quota_get(tenant=tenant)
    data = cleaned(QuotaForm(request.POST))  # validated on a blank instance: ``quota`` keeps its old values
    changed = {k: v for k, v in data.items() if v not in (None, "") and getattr(quota, k) != v}
    if changed:
        tenant_services.quota_update(tenant=tenant, actor=scope.user, **changed)
    return _section(request, scope, tenant, "quota", saved=True)


# -------------------------------------------------------------------------------------------------------- members
@console_view(methods=("POST",))
def member_add(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    data = cleaned(MemberAddForm(request.POST))
    services.member_add(
        tenant=tenant,
        identifier=data["identifier"],
        role=data["role"],
        actor=scope.user,
        actor_role=scope.acting_role,
    )
    return _section(request, scope, tenant, "members")


@console_view(methods=("POST",))
def member_create(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    data = cleaned(MemberCreateForm(request.POST))
    membership, password = services.member_create_user(
        tenant=tenant,
        username=data["username"],
        email=data["email"],
        role=data["role"],
        actor=scope.user,
        actor_role=scope.acting_role,
    )
    return _section(
        request, scope, tenant, "members", one_time_password=password, new_username=membership.user.username
    )


@console_view(methods=("POST",))
def member_role(request: HttpRequest, scope: ConsoleScope, tenant_id: int, user_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    data = cleaned(RoleForm(request.POST))
    services.member_set_role(
        tenant=tenant, user_id=user_id, role=data["role"], actor=scope.user, actor_role=scope.acting_role
    )
    return _section(request, scope, tenant, "members")


@console_view(methods=("POST",))
def member_remove(request: HttpRequest, scope: ConsoleScope, tenant_id: int, user_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    services.member_remove(tenant=tenant, user_id=user_id, actor=scope.user, actor_role=scope.acting_role)
    return _section(request, scope, tenant, "members")


# ------------------------------------------------------------------------------------------------------- API keys
@console_view(methods=("POST",))
def key_create(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    data = cleaned(ApiKeyCreateForm(request.POST))
    days = data.get("expires_in_days")
    key, secret = tenant_services.api_key_issue(
        tenant=tenant,
        name=data["name"],
        role=data["role"],
        scopes=data["scopes"] or None,
        expires_at=timezone.now() + timedelta(days=days) if days else None,
        issuer_role=scope.acting_role,
        issuer_scopes=None,
        created_by=scope.user,
    )
    return _section(request, scope, tenant, "keys", new_key=key, new_secret=secret)


@console_view(methods=("POST",))
def key_revoke(request: HttpRequest, scope: ConsoleScope, tenant_id: int, key_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    tenant_services.api_key_revoke(tenant=tenant, key_id=key_id, actor=scope.user)
    return _section(request, scope, tenant, "keys")


# ------------------------------------------------------------------------------------------- tenant's adapter default
@console_view(methods=("POST",))
def tenant_adapter_default(request: HttpRequest, scope: ConsoleScope, tenant_id: int) -> HttpResponse:
    tenant = scope.tenant_get(tenant_id)
    raw = (request.POST.get("adapter_id") or "").strip()
    try:
        adapter_id = int(raw) if raw else None
    except ValueError:
        raise InvalidInput("Choose an adapter from the list.") from None
    adapter_set_default(tenant=tenant, adapter_id=adapter_id, actor=scope.user)
    return _section(request, scope, tenant, "adapters")


# ------------------------------------------------------------------------------------------------- usage and cost
def _usage_params(request: HttpRequest, scope: ConsoleScope) -> selectors.UsageFilters:
    filters = selectors.usage_filters_parse(params=request.GET.dict())
    if filters.tenant_id is not None:
        scope.tenant_get(filters.tenant_id)  # a department admin may only name their own (else 404)
    return filters


@console_view()
def usage(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    filters = _usage_params(request, scope)
    by = request.GET.get("by") or ("tenant" if scope.is_staff else "user")
    qs = selectors.usage_queryset(tenant=scope.tenant, filters=filters)
    totals = selectors.usage_totals(qs=qs)
    rows = selectors.usage_breakdown(qs=qs, by=by)
    daily = selectors.usage_daily_series(qs=qs, filters=filters)
    every = max(1, len(daily) // 10)
    token_chart = bar_chart_svg(
        bars=[Bar(r.label[5:], [r.tokens_in, r.tokens_out]) for r in daily],
        series=["tokens in", "tokens out"],
        title="Tokens per day",
        label_every=every,
    )
    cost_chart = bar_chart_svg(
        bars=[Bar(r.label[5:], [r.cost]) for r in daily], series=["cost"], title="Cost per day", label_every=every
    )
    group_chart = bar_chart_svg(
        bars=[Bar(r.label, [r.cost]) for r in rows[:20]],
        series=[f"cost by {_group_label(by)}"],
        title=f"Cost by {_group_label(by)}",
    )
    tenants = scope.tenants()
    selected = [t for t in tenants if t.pk == filters.tenant_id] if filters.tenant_id else tenants
    context = {
        "scope": scope,
        "filters": filters,
        "since": timezone.localtime(filters.since).date(),
        "until": (timezone.localtime(filters.until) - timedelta(days=1)).date(),
        "by": by,
        "by_label": _group_label(by),
        "groups": [g for g in selectors.GROUPS if scope.is_staff or g != "tenant"],
        "totals": totals,
        "rows": rows,
        "token_chart": token_chart,
        "cost_chart": cost_chart,
        "group_chart": group_chart,
        "budgets": selectors.budget_list(tenants=selected),
        "tenants": tenants,
        "query": request.GET.urlencode(),
        "section": "usage",
    }
    template = "console/usage/_report.html" if is_htmx(request) else "console/usage/page.html"
    return render(request, template, context)


class _Echo:
    def write(self, value: str) -> str:
        return value


@console_view()
def usage_csv(request: HttpRequest, scope: ConsoleScope) -> StreamingHttpResponse:
    filters = _usage_params(request, scope)
    qs = selectors.usage_queryset(tenant=scope.tenant, filters=filters)
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in selectors.usage_csv_rows(qs=qs)), content_type="text/csv; charset=utf-8"
    )
    start = timezone.localtime(filters.since).date().isoformat()
    response["Content-Disposition"] = f'attachment; filename="usage-{start}-{filters.days}d.csv"'
    return response


# ---------------------------------------------------------------------------------------------------------- prices
def _prices_context(scope: ConsoleScope) -> dict[str, Any]:
    overview = selectors.price_overview()
    return {"scope": scope, "prices": overview.prices, "unpriced": overview.unpriced, "section": "prices"}


@console_view()
def prices(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    return render(request, "console/prices.html", _prices_context(scope))


@console_view(methods=("POST",), staff_only=True)
def price_set(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    data = cleaned(PriceForm(request.POST))
    services.model_price_set(
        model=data["model"], input_per_1k=data["input_per_1k"], output_per_1k=data["output_per_1k"], actor=scope.user
    )
    if is_htmx(request):
        return render(request, "console/_prices_table.html", _prices_context(scope))
    return back(request, reverse("console:prices"))


@console_view(methods=("POST",), staff_only=True)
def price_delete(request: HttpRequest, scope: ConsoleScope, price_id: int) -> HttpResponse:
    services.model_price_delete(price_id=price_id, actor=scope.user)
    if is_htmx(request):
        return render(request, "console/_prices_table.html", _prices_context(scope))
    return back(request, reverse("console:prices"))


# ------------------------------------------------------------------------------------------------------- audit log
@console_view()
def audit(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    params = request.GET
    filters = selectors.audit_filters_parse(params=params.dict())
    if params.get("tenant"):
        chosen = scope.tenant_get(params["tenant"])  # a department admin naming another department: 404
        if scope.is_staff:
            filters["tenant_id"] = chosen.pk
    events = audit_event_list(tenant=scope.tenant, filters=filters).select_related("tenant")
    page = Paginator(events, 50).get_page(params.get("page"))
    query = params.copy()
    query.pop("page", None)
    context = {
        "scope": scope,
        "page": page,
        "filters": {k: params.get(k, "") for k in ("action", "actor", "tenant", "since", "until")},
        "tenants": scope.tenants(),
        "query": query.urlencode(),
        "section": "audit",
    }
    template = "console/audit/_table.html" if is_htmx(request) else "console/audit/page.html"
    return render(request, template, context)


# ------------------------------------------------------------------------------------------------- feedback review
def _feedback_scope(request: HttpRequest, scope: ConsoleScope) -> tuple[Tenant | None, Any]:
    """The department whose feedback is read (a department admin: their own; staff: every one, or the chosen)."""
    filters, tenant_id = selectors.feedback_filters_parse(params=request.GET.dict())
    tenant = scope.tenant
    if tenant_id is not None:
        tenant = scope.tenant_get(tenant_id)  # a department admin naming another department: 404
    return tenant, filters


@console_view()
def feedback(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    """Thumbs-down answers with the question, the answer, the cited passages and the comment, all masked."""
    tenant, filters = _feedback_scope(request, scope)
    qs = feedback_review_queryset(tenant=tenant, filters=filters)
    page = Paginator(qs, 20).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "scope": scope,
        "page": page,
        "rows": feedback_review_rows(messages=list(page.object_list)),
        "filters": filters,
        "since": timezone.localtime(filters.since).date(),
        "until": (timezone.localtime(filters.until) - timedelta(days=1)).date(),
        "tenant": tenant,
        "tenants": scope.tenants(),
        "models": feedback_review_models(tenant=tenant),
        "knowledge_bases": selectors.feedback_knowledge_bases(tenant=tenant),
        "query": query.urlencode(),
        "section": "feedback",
    }
    template = "console/feedback/_table.html" if is_htmx(request) else "console/feedback/page.html"
    return render(request, template, context)


@console_view()
def feedback_csv(request: HttpRequest, scope: ConsoleScope) -> StreamingHttpResponse:
    tenant, filters = _feedback_scope(request, scope)
    qs = feedback_review_queryset(tenant=tenant, filters=filters)
    services.feedback_export_record(actor=scope.user, tenant=tenant, answers=qs.count())
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse(
        (writer.writerow(row) for row in feedback_csv_rows(qs=qs)), content_type="text/csv; charset=utf-8"
    )
    start = timezone.localtime(filters.since).date().isoformat()
    response["Content-Disposition"] = f'attachment; filename="feedback-{start}.csv"'
    return response


# ------------------------------------------------------------------------------------------------ embedding drift
@console_view()
def drift(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    """Per knowledge base: are recent questions still about what it holds (``knowledge.drift``)."""
    raw = (request.GET.get("tenant") or "").strip()
    tenants = [scope.tenant_get(raw)] if raw else scope.tenants()  # another department (admin): 404
    panels = selectors.drift_overview(tenants=tenants)
    charts = []
    for panel in panels:
        every = max(1, len(panel.history) // 8)
        labels = [timezone.localtime(r.created_at).strftime("%m-%d %H:%M") for r in panel.history]
        charts.append(
            (
                panel,
                bar_chart_svg(
                    bars=[Bar(label, [r.psi]) for label, r in zip(labels, panel.history, strict=True)],
                    series=["PSI"],
                    title=f"Population stability index of {panel.knowledge_base_name}'s queries",
                    height=160,
                    label_every=every,
                ),
                bar_chart_svg(
                    bars=[Bar(label, [r.weak_share]) for label, r in zip(labels, panel.history, strict=True)],
                    series=["weak-support share"],
                    title=f"Share of {panel.knowledge_base_name}'s searches with weak support",
                    height=160,
                    label_every=every,
                ),
            )
        )
    context = {
        "scope": scope,
        "charts": charts,
        "tenants": scope.tenants(),
        "chosen": raw,
        "psi_alert": settings.KNOWLEDGE_DRIFT_PSI_ALERT,
        "weak_alert": settings.KNOWLEDGE_DRIFT_WEAK_ALERT,
        "section": "drift",
    }
    return render(request, "console/drift.html", context)
