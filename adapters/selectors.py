"""Reads on the adapter catalog. ``adapter_list_for_tenant`` feeds the chat page's adapter picker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db.models import BooleanField, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from adapters.models import Adapter, AdapterAssignment, AdapterFormat
from core.errors import NotFound
from inference_pool.choices import EngineKind
from inference_pool.selectors import backend_adapter_list, backend_list
from tenants.models import Tenant

if TYPE_CHECKING:
    from inference_pool.models import Backend


def adapter_list_for_tenant(*, tenant: Tenant) -> QuerySet[Adapter]:
    """The adapters a department may use (assigned to it), each annotated with ``is_default``; default first."""
    assigned = AdapterAssignment.objects.for_tenant(tenant).filter(adapter_id=OuterRef("pk"))
    return (
        Adapter.objects.filter(Exists(assigned))
        .annotate(
            is_default=Coalesce(Subquery(assigned.values("is_default")[:1]), Value(False), output_field=BooleanField())
        )
        .select_related("base_model")
        .order_by("-is_default", "name")
    )


def adapter_default_for_tenant(*, tenant: Tenant) -> Adapter | None:
    assignment = AdapterAssignment.objects.for_tenant(tenant).filter(is_default=True).select_related("adapter").first()
    return assignment.adapter if assignment else None


def adapter_get_for_tenant(*, tenant: Tenant, name: str) -> Adapter:
    """The adapter ``name`` if the department may use it; otherwise 404 (unknown and not-yours answer alike)."""
    adapter = adapter_list_for_tenant(tenant=tenant).filter(name=name).first()
    if adapter is None:
        raise NotFound(f"No adapter named '{name}' is available to your department.")
    return adapter


def adapter_catalog(*, tenant: Tenant | None) -> QuerySet[Adapter]:
    """Platform staff (``tenant`` None) see every adapter; a department sees what it owns or is assigned."""
    qs = Adapter.objects.select_related("base_model", "owner_tenant")
    if tenant is None:
        return qs.order_by("name")
    assigned = AdapterAssignment.objects.for_tenant(tenant).filter(adapter_id=OuterRef("pk"))
    return qs.filter(Q(owner_tenant=tenant) | Q(Exists(assigned))).order_by("name")


def adapter_names() -> set[str]:
    """Every adapter name in the catalog (platform staff: prices are set per name)."""
    return set(Adapter.objects.values_list("name", flat=True))


def adapter_get_visible(*, tenant: Tenant | None, adapter_id: int) -> Adapter:
    adapter = adapter_catalog(tenant=tenant).filter(pk=adapter_id).first()
    if adapter is None:
        raise NotFound()
    return adapter


def adapter_assignment_list(*, adapter: Adapter) -> list[AdapterAssignment]:
    """Platform staff: every department the adapter is assigned to."""
    return list(AdapterAssignment.unscoped.filter(adapter=adapter).select_related("tenant").order_by("tenant__name"))


@dataclass
class Placement:
    """Where an adapter is (or is about to be) loaded."""

    backend_id: int
    backend: str
    kind: str
    health: str
    confirmed: bool
    engine_ref: str
    source_path: str
    runtime_loadable: bool  # vLLM: load/unload at run time; TGI and llama.cpp need a restart


@dataclass
class AdapterLocations:
    placements: list[Placement] = field(default_factory=list)

    @property
    def confirmed(self) -> list[Placement]:
        return [p for p in self.placements if p.confirmed]

    @property
    def pending(self) -> list[Placement]:
        return [p for p in self.placements if not p.confirmed]


def adapter_locations(*, adapter: Adapter) -> AdapterLocations:
    rows = backend_adapter_list(name=adapter.name)
    return AdapterLocations(
        placements=[
            Placement(
                backend_id=row.backend_id,
                backend=row.backend.name,
                kind=row.backend.kind,
                health=row.backend.health,
                confirmed=row.confirmed,
                engine_ref=row.engine_ref,
                source_path=row.source_path,
                runtime_loadable=row.backend.kind == EngineKind.VLLM,
            )
            for row in rows
        ]
    )


def adapter_backends_placeable(*, adapter: Adapter, locations: AdapterLocations | None = None) -> list[Backend]:
    """Backends that could load this adapter and do not have it yet: same base model, an engine for its format
    (llama.cpp for GGUF; vLLM and TGI for PEFT)."""
    placed = {p.backend_id for p in (locations or adapter_locations(adapter=adapter)).placements}
    kinds = [EngineKind.LLAMACPP] if adapter.format == AdapterFormat.GGUF else [EngineKind.VLLM, EngineKind.TGI]
    return [b for b in backend_list(base_model_id=adapter.base_model_id, kinds=kinds) if b.pk not in placed]
