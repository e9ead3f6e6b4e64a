"""Console pages for the inference pool (platform staff only): backends with health, load, latency and breaker
state; add, edit, drain, disable; the capacity planner; launch specs to copy."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from adapters.services import adapter_confirm_launch
from console import selectors, services
from console.access import ConsoleScope
from console.decorators import back, console_view, is_htmx
from console.forms import cleaned
from console.forms_pool import BackendForm, BaseModelForm
from console.launch import PlannerForm, launch_specs_for, plan
from core.errors import NotFound


def _backend(backend_id: int) -> Any:
    from inference_pool.models import Backend

    backend = Backend.objects.select_related("base_model").filter(pk=backend_id).first()
    if backend is None:
        raise NotFound()
    return backend


def _pool_context(scope: ConsoleScope, **extra: Any) -> dict[str, Any]:
    return {
        "scope": scope,
        "rows": selectors.pool_overview(),
        "window_minutes": int(selectors.LATENCY_WINDOW.total_seconds() // 60),
        "section": "pool",
        **extra,
    }


@console_view(staff_only=True)
def pool(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    if is_htmx(request) and request.GET.get("fragment") == "backends":
        return render(request, "console/pool/_backends.html", _pool_context(scope))  # the page's auto-refresh
    return render(
        request,
        "console/pool/page.html",
        _pool_context(scope, form=BackendForm(), model_form=BaseModelForm(), planner=PlannerForm()),
    )


@console_view(methods=("POST",), staff_only=True)
def base_model_create(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    from inference_pool.services import base_model_create as create

    form = BaseModelForm(request.POST)
    cleaned(form)
    create(actor=scope.user, **form.values())
    url = reverse("console:pool")
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@console_view(methods=("POST",), staff_only=True)
def backend_create(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    form = BackendForm(request.POST)
    cleaned(form)
    backend = services.backend_create(actor=scope.user, **form.changes())
    url = reverse("console:backend_detail", kwargs={"backend_id": backend.pk})
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def _detail_context(scope: ConsoleScope, backend: Any, **extra: Any) -> dict[str, Any]:
    form = BackendForm(
        initial={
            **{k: getattr(backend, k) for k in ("name", "kind", "base_url", "served_name", "quantization")},
            "base_model": backend.base_model_id,
            "context_length": backend.context_length,
            "max_concurrent": backend.max_concurrent,
            "weight": backend.weight,
        }
    )
    row = next((r for r in selectors.pool_overview() if r.backend.pk == backend.pk), None)
    return {
        "scope": scope,
        "backend": backend,
        "row": row,
        "form": form,
        "launch_specs": launch_specs_for(backend),
        "section": "pool",
        **extra,
    }


@console_view(staff_only=True)
def backend_detail(request: HttpRequest, scope: ConsoleScope, backend_id: int) -> HttpResponse:
    return render(request, "console/pool/backend.html", _detail_context(scope, _backend(backend_id)))


@console_view(methods=("POST",), staff_only=True)
def backend_edit(request: HttpRequest, scope: ConsoleScope, backend_id: int) -> HttpResponse:
    backend = _backend(backend_id)
    data = request.POST.copy()
    data["name"] = backend.name  # the name is what telemetry and usage records refer to: it stays
    form = BackendForm(data)
    cleaned(form)
    changes = form.changes()
    changes.pop("name")
    services.backend_update(backend=backend, actor=scope.user, **changes)
    backend.refresh_from_db()
    if is_htmx(request):
        return render(request, "console/pool/_backend_body.html", _detail_context(scope, backend, saved=True))
    return back(request, reverse("console:backend_detail", kwargs={"backend_id": backend.pk}))


@console_view(methods=("POST",), staff_only=True)
def backend_state(request: HttpRequest, scope: ConsoleScope, backend_id: int) -> HttpResponse:
    backend = _backend(backend_id)
    services.backend_set_state(backend=backend, state=request.POST.get("state", ""), actor=scope.user)
    if is_htmx(request):
        if request.POST.get("from") == "detail":
            return render(request, "console/pool/_backend_body.html", _detail_context(scope, backend))
        return render(request, "console/pool/_backends.html", _pool_context(scope))
    return back(request, reverse("console:pool"))


@console_view(methods=("POST",), staff_only=True)
def backend_confirm_launch(request: HttpRequest, scope: ConsoleScope, backend_id: int) -> HttpResponse:
    backend = _backend(backend_id)
    names = adapter_confirm_launch(backend=backend, actor=scope.user)
    if is_htmx(request):
        return render(request, "console/pool/_backend_body.html", _detail_context(scope, backend, confirmed=names))
    return back(request, reverse("console:backend_detail", kwargs={"backend_id": backend.pk}))


@console_view(staff_only=True)
def planner(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    """The capacity planner: GET with the form's values answers the result (a partial for htmx)."""
    form = PlannerForm(request.GET or None)
    result = plan(cleaned(form)) if request.GET else None
    template = "console/pool/_planner_result.html" if is_htmx(request) else "console/pool/planner.html"
    return render(request, template, {"scope": scope, "planner": form, "result": result, "section": "pool"})
