"""The guardrail policy page under /guardrails/: members read the policy, admins change it and preview it on a
sample text (nothing is stored by the preview). Thin: parse, call services/selectors, render."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from core.errors import InvalidInput
from core.pages import page_errors
from guardrails.forms import PolicyForm, PreviewForm
from guardrails.selectors import guardrail_policy_get
from guardrails.services import guardrail_policy_update, guardrail_preview
from tenants.models import Membership, Role, role_at_least
from tenants.selectors import membership_require


def _membership(request: HttpRequest, min_role: str) -> Membership:
    return membership_require(user=request.user, tenant=getattr(request, "tenant", None), min_role=min_role)


@login_required
@page_errors
@require_http_methods(["GET", "POST"])
def policy(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.VIEWER if request.method == "GET" else Role.ADMIN)
    tenant = membership.tenant
    current = guardrail_policy_get(tenant=tenant)
    form = PolicyForm(request.POST or None, policy=current)
    if request.method == "POST" and form.is_valid():
        try:
            guardrail_policy_update(
                tenant=tenant,
                actor=request.user,
                entity_actions=form.entity_actions(),
                injection_strictness=form.cleaned_data["injection_strictness"],
                custom_recognizers=form.cleaned_data["custom_recognizers"],
                deny_lists=form.cleaned_data["deny_lists"],
            )
        except InvalidInput as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, "The guardrail policy was saved.")
            return redirect("guardrails:policy")
    can_edit = role_at_least(membership.role, Role.ADMIN)
    return render(
        request,
        "guardrails/policy.html",
        {"form": form, "policy": current, "can_edit": can_edit, "preview_form": PreviewForm()},
        status=400 if request.method == "POST" else 200,
    )


@require_POST
@login_required
@page_errors
def preview(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    form = PreviewForm(request.POST)
    if not form.is_valid():
        raise InvalidInput("Enter a sample text of at most 5,000 characters.")
    result = guardrail_preview(tenant=membership.tenant, text=form.cleaned_data["text"])
    return render(request, "guardrails/_preview.html", {"result": result})
