from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from core.errors import InvalidInput
from core.pages import page_errors
from tenants.middleware import SESSION_KEY
from tenants.selectors import tenant_get_for_user


@require_POST
@login_required
@page_errors
def tenant_switch(request: HttpRequest) -> HttpResponse:
    try:
        tenant_id = int(request.POST.get("tenant_id", ""))
    except ValueError:
        raise InvalidInput("Choose a department.") from None
    tenant = tenant_get_for_user(user=request.user, tenant_id=tenant_id)
    request.session[SESSION_KEY] = tenant.pk
    next_url = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = "/"
    return redirect(next_url)
