"""Console pages for the LoRA adapter catalog: create/edit, assignment to departments, where each adapter is loaded,
load/unload (run time on vLLM; launch spec and a restart for llama.cpp and TGI)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from adapters import selectors, services
from adapters.forms import AdapterEditForm, AdapterForm
from console.access import ConsoleScope
from console.decorators import back, console_view, is_htmx
from console.forms import cleaned
from console.launch import launch_specs_for
from core.errors import InvalidInput, PermissionDenied
from inference_pool import selectors as pool_selectors

if TYPE_CHECKING:
    from adapters.models import Adapter
    from inference_pool.models import Backend


def _adapter_for_write(scope: ConsoleScope, adapter_id: int) -> Adapter:
    """Staff change any adapter; a department admin only the ones their department owns (shared ones: 403)."""
    adapter = selectors.adapter_get_visible(tenant=scope.tenant, adapter_id=adapter_id)
    if not scope.is_staff and (scope.tenant is None or adapter.owner_tenant_id != scope.tenant.pk):
        raise PermissionDenied("Only platform staff can change shared adapters.")
    return adapter


def _backend(request: HttpRequest) -> Backend:
    try:
        backend_id = int(request.POST.get("backend_id", ""))
    except ValueError:
        raise InvalidInput("Choose a backend.") from None
    return pool_selectors.backend_get(backend_id=backend_id)


def _tenant_choices(scope: ConsoleScope) -> list[tuple[int, str]]:
    return [(t.pk, t.name) for t in scope.tenants()]


@console_view()
def adapter_list(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    adapters = list(selectors.adapter_catalog(tenant=scope.tenant))
    placements = pool_selectors.backend_adapter_counts(names=[a.name for a in adapters])
    rows = [(a, placements.get(a.name, (0, 0))) for a in adapters]
    return render(
        request,
        "adapters/list.html",
        {
            "scope": scope,
            "rows": rows,
            "form": AdapterForm(tenants=_tenant_choices(scope)),
            "section": "adapters",
        },
    )


@console_view(methods=("POST",))
def adapter_create(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    data = cleaned(AdapterForm(request.POST, tenants=_tenant_choices(scope)))
    if scope.is_staff:
        owner = scope.tenant_get(data["owner_tenant"]) if data["owner_tenant"] else None
    else:
        owner = scope.tenant  # a department admin registers adapters for their own department only
    adapter = services.adapter_create(
        actor=scope.user,
        name=data["name"],
        base_model=data["base_model"],
        format=data["format"],
        source=data["source"],
        rank=data["rank"],
        description=data["description"],
        owner_tenant=owner,
    )
    url = reverse("console:adapter_detail", kwargs={"adapter_id": adapter.pk})
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def _detail_context(scope: ConsoleScope, adapter: Adapter, **extra: Any) -> dict[str, Any]:
    locations = selectors.adapter_locations(adapter=adapter)
    context: dict[str, Any] = {
        "scope": scope,
        "adapter": adapter,
        "locations": locations,
        "may_edit": scope.is_staff or (scope.tenant is not None and adapter.owner_tenant_id == scope.tenant.pk),
        "edit_form": AdapterEditForm.for_adapter(adapter),
        "section": "adapters",
        **extra,
    }
    if scope.is_staff:
        context["assignments"] = selectors.adapter_assignment_list(adapter=adapter)
        assigned = {a.tenant_id for a in context["assignments"]}
        context["assignable"] = [
            t for t in scope.tenants() if t.pk not in assigned and (adapter.owner_tenant_id in (None, t.pk))
        ]
        context["backends"] = selectors.adapter_backends_placeable(adapter=adapter, locations=locations)
    return context


@console_view()
def adapter_detail(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = selectors.adapter_get_visible(tenant=scope.tenant, adapter_id=adapter_id)
    return render(request, "adapters/detail.html", _detail_context(scope, adapter))


def _after(request: HttpRequest, scope: ConsoleScope, adapter: Adapter, **extra: Any) -> HttpResponse:
    context = _detail_context(scope, adapter, **extra)
    if is_htmx(request):
        return render(request, "adapters/_detail_body.html", context)
    if extra:
        return render(request, "adapters/detail.html", context)
    return back(request, reverse("console:adapter_detail", kwargs={"adapter_id": adapter.pk}))


@console_view(methods=("POST",))
def adapter_edit(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = _adapter_for_write(scope, adapter_id)
    data = cleaned(AdapterEditForm(request.POST))
    services.adapter_update(adapter=adapter, actor=scope.user, **data)
    return _after(request, scope, adapter, saved=True)


@console_view(methods=("POST",))
def adapter_delete(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = _adapter_for_write(scope, adapter_id)
    services.adapter_delete(adapter=adapter, actor=scope.user)
    url = reverse("console:adapter_list")
    if is_htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@console_view(methods=("POST",), staff_only=True)
def adapter_assign(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = selectors.adapter_get_visible(tenant=None, adapter_id=adapter_id)
    tenant = scope.tenant_get(request.POST.get("tenant_id"))
    services.adapter_assign(adapter=adapter, tenant=tenant, actor=scope.user)
    return _after(request, scope, adapter)


@console_view(methods=("POST",), staff_only=True)
def adapter_unassign(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = selectors.adapter_get_visible(tenant=None, adapter_id=adapter_id)
    tenant = scope.tenant_get(request.POST.get("tenant_id"))
    services.adapter_unassign(adapter=adapter, tenant=tenant, actor=scope.user)
    return _after(request, scope, adapter)


@console_view(methods=("POST",), staff_only=True)
def adapter_load(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = selectors.adapter_get_visible(tenant=None, adapter_id=adapter_id)
    backend = _backend(request)
    outcome = services.adapter_load(adapter=adapter, backend=backend, actor=scope.user)
    specs = launch_specs_for(backend) if outcome.restart_needed else None
    return _after(request, scope, adapter, outcome=outcome, launch_specs=specs)


@console_view(methods=("POST",), staff_only=True)
def adapter_unload(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    adapter = selectors.adapter_get_visible(tenant=None, adapter_id=adapter_id)
    backend = _backend(request)
    outcome = services.adapter_unload(adapter=adapter, backend=backend, actor=scope.user)
    specs = launch_specs_for(backend) if outcome.restart_needed else None
    return _after(request, scope, adapter, outcome=outcome, launch_specs=specs)


@console_view(staff_only=True)
def adapter_locations(request: HttpRequest, scope: ConsoleScope, adapter_id: int) -> HttpResponse:
    """What the engines serving this adapter's base model report right now (read-only, lazy-loaded)."""
    adapter = selectors.adapter_get_visible(tenant=None, adapter_id=adapter_id)
    rows = []
    for backend in pool_selectors.backend_list(base_model_id=adapter.base_model_id):
        try:
            loaded = services.adapter_discover(backend=backend)
            error = ""
        except Exception as exc:
            loaded, error = [], getattr(exc, "message", str(exc))
        match = [item for item in loaded if item.name == adapter.name or services.same_path(adapter.source, item.path)]
        row = pool_selectors.backend_adapter_get(backend=backend, name=adapter.name)
        rows.append({"backend": backend, "loaded": match, "error": error, "row": row})
    return render(request, "adapters/_locations.html", {"adapter": adapter, "rows": rows})


@console_view(methods=("POST",), staff_only=True)
def adapter_sync(request: HttpRequest, scope: ConsoleScope) -> HttpResponse:
    reports = services.adapter_sync_all(actor=scope.user)
    if is_htmx(request):
        return render(request, "adapters/_sync_report.html", {"reports": reports})
    return render(request, "adapters/sync.html", {"scope": scope, "reports": reports, "section": "adapters"})
