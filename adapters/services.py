"""Writes on the adapter catalog, department assignments and where adapters are loaded.

Where an adapter is loaded is the pool's ``BackendAdapter`` row: its existence is the intent (the adapter belongs on
that backend, so it is in the backend's launch spec), ``confirmed`` is the observation (the engine reported it
loaded). The router only sends adapter requests to confirmed rows, so:

- vLLM: load at run time (``/v1/load_lora_adapter``), then confirm from ``/v1/models``; unload un-confirms first,
  then asks the engine, so no request is routed to an adapter that is going away.
- llama.cpp: adapters are fixed at launch (``--lora``); placing one records the intent and confirms it as soon as
  ``/lora-adapters`` lists its file (after a restart with the new launch spec).
- TGI: adapters are fixed at launch (``--lora-adapters``) and there is no listing endpoint; an admin confirms after
  restarting the backend with the new launch spec, and only while the backend is healthy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet

from adapters import engines
from adapters.models import ADAPTER_NAME_VALIDATOR, Adapter, AdapterAssignment, AdapterFormat
from core.errors import Conflict, InvalidInput, NotFound, UpstreamError
from inference_pool import selectors as pool_selectors
from inference_pool import services as pool_services
from inference_pool.choices import EngineKind, HealthState
from tenants.models import Tenant
from tenants.services import audit_record

if TYPE_CHECKING:
    from inference_pool.models import Backend, BackendAdapter

_EDITABLE = {"base_model", "format", "source", "rank", "description"}


# ------------------------------------------------------------------------------------------------------ the catalog
def _validate(*, name: str, source: str, rank: int, fmt: str) -> None:
    try:
        ADAPTER_NAME_VALIDATOR(name)
    except ValidationError as exc:
        raise InvalidInput(f"Adapter name: {exc.messages[0]}") from None
    if fmt not in AdapterFormat.values:
        raise InvalidInput("The format is PEFT or GGUF.")
    if not source.strip():
        raise InvalidInput("Give the adapter's source: a path on the engine hosts or a URI.")
    if len(source) > 1000:
        raise InvalidInput("The source is at most 1,000 characters.")
    if any(ch in source for ch in "\n\r\0"):
        raise InvalidInput("The source must be one line.")
    if fmt == AdapterFormat.GGUF and "://" not in source and not source.lower().endswith(".gguf"):
        raise InvalidInput("A GGUF adapter's source is a .gguf file.")
    if not 1 <= rank <= 1024:
        raise InvalidInput("The rank is between 1 and 1024.")


@transaction.atomic
def adapter_create(
    *,
    actor: User,
    name: str,
    base_model: Any,
    format: str,
    source: str,
    rank: int,
    description: str = "",
    owner_tenant: Tenant | None = None,
) -> Adapter:
    """Add an adapter to the catalog. An owned adapter is assigned to its owner at once (and only to it)."""
    name = name.strip()
    source = source.strip()
    _validate(name=name, source=source, rank=rank, fmt=format)
    if Adapter.objects.filter(name=name).exists():
        raise Conflict(f"An adapter named '{name}' already exists.")
    adapter = Adapter.objects.create(
        name=name,
        base_model=base_model,
        format=format,
        source=source,
        rank=rank,
        description=description.strip(),
        owner_tenant=owner_tenant,
        created_by=actor,
    )
    audit_record(
        action="adapter.create",
        tenant=owner_tenant,
        actor=actor,
        target=adapter,
        details={"name": name, "format": format, "rank": rank, "shared": owner_tenant is None},
    )
    if owner_tenant is not None:
        AdapterAssignment.objects.create(tenant=owner_tenant, adapter=adapter)
    return adapter


@transaction.atomic
def adapter_update(*, adapter: Adapter, actor: User, **fields: Any) -> Adapter:
    unknown = set(fields) - _EDITABLE
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    merged = {
        "source": fields.get("source", adapter.source).strip(),
        "rank": fields.get("rank", adapter.rank),
        "fmt": fields.get("format", adapter.format),
    }
    _validate(name=adapter.name, **merged)
    changed = [k for k, v in fields.items() if getattr(adapter, k) != (v.strip() if isinstance(v, str) else v)]
    if "base_model" in changed and _placements(adapter).exists():
        raise Conflict("Unload the adapter from every backend before changing its base model.")
    for key in changed:
        value = fields[key]
        setattr(adapter, key, value.strip() if isinstance(value, str) else value)
    if changed:
        adapter.save()
        audit_record(
            action="adapter.update",
            tenant=adapter.owner_tenant,
            actor=actor,
            target=adapter,
            details={"fields": sorted(changed)},
        )
    return adapter


@transaction.atomic
def adapter_delete(*, adapter: Adapter, actor: User) -> None:
    if _placements(adapter).exists():
        raise Conflict("The adapter is still placed on backends: unload it everywhere first.")
    audit_record(
        action="adapter.delete",
        tenant=adapter.owner_tenant,
        actor=actor,
        target=adapter,
        details={"name": adapter.name},
    )
    adapter.delete()


# ----------------------------------------------------------------------------------------------------- assignments
@transaction.atomic
def adapter_assign(*, adapter: Adapter, tenant: Tenant, actor: User) -> AdapterAssignment:
    if adapter.owner_tenant_id is not None and adapter.owner_tenant_id != tenant.pk:
        raise Conflict("This adapter belongs to another department and cannot be assigned to others.")
    assignment, created = AdapterAssignment.objects.for_tenant(tenant).get_or_create(
        adapter=adapter, defaults={"tenant": tenant}
    )
    if created:
        audit_record(
            action="adapter.assign", tenant=tenant, actor=actor, target=adapter, details={"adapter": adapter.name}
        )
    return assignment


@transaction.atomic
def adapter_unassign(*, adapter: Adapter, tenant: Tenant, actor: User) -> None:
    deleted, _ = AdapterAssignment.objects.for_tenant(tenant).filter(adapter=adapter).delete()
    if not deleted:
        raise NotFound()
    audit_record(
        action="adapter.unassign", tenant=tenant, actor=actor, target=adapter, details={"adapter": adapter.name}
    )


@transaction.atomic
def adapter_set_default(*, tenant: Tenant, adapter_id: int | None, actor: User) -> AdapterAssignment | None:
    """Make one assigned adapter the department's default (``None``: the base model is the default)."""
    assignments = AdapterAssignment.objects.for_tenant(tenant).select_for_update()
    target = None
    if adapter_id is not None:
        target = assignments.filter(adapter_id=adapter_id).select_related("adapter").first()
        if target is None:
            raise NotFound("That adapter is not assigned to this department.")
    current = assignments.filter(is_default=True).first()
    if (current.pk if current else None) == (target.pk if target else None):
        return target
    assignments.filter(is_default=True).update(is_default=False)
    if target is not None:
        target.is_default = True
        target.save(update_fields=["is_default"])
    audit_record(
        action="adapter.default",
        tenant=tenant,
        actor=actor,
        target=target.adapter if target else None,
        details={"adapter": target.adapter.name if target else None},
    )
    return target


# ---------------------------------------------------------------------------------------------- where it is loaded
def _placements(adapter: Adapter) -> QuerySet[BackendAdapter]:
    return pool_selectors.backend_adapter_list(name=adapter.name)


def same_path(a: str, b: str) -> bool:
    if not a or not b:
        return False
    if a == b:
        return True
    if "://" in a or "://" in b:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


@dataclass
class DiscoveredAdapter:
    """One adapter an engine reports: matched to a catalog adapter by name (vLLM) or file (llama.cpp) if possible."""

    ref: str
    path: str
    adapter: Adapter | None
    registered: bool  # a BackendAdapter row exists for it on this backend


@dataclass
class SyncReport:
    backend: Backend
    ok: bool
    message: str = ""
    discovered: list[DiscoveredAdapter] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)  # newly confirmed names
    unconfirmed: list[str] = field(default_factory=list)  # newly un-confirmed names
    from_launch_config: bool = False  # TGI: what is listed comes from the launch configuration

    @property
    def changed(self) -> bool:
        return bool(self.confirmed or self.unconfirmed)


def adapter_discover(*, backend: Backend) -> list[engines.LoadedAdapter]:
    """Ask the engine what it has loaded (raises ``UpstreamError`` when it cannot say)."""
    if backend.kind == EngineKind.LLAMACPP:
        return engines.llamacpp_list(backend)
    if backend.kind == EngineKind.VLLM:
        return engines.vllm_list(backend)
    if backend.kind == EngineKind.TGI:
        return [
            engines.LoadedAdapter(ref=row.ref, path=row.source_path, name=row.name)
            for row in pool_selectors.backend_adapter_list(backend=backend).filter(confirmed=True)
        ]
    return []


def _match(loaded: engines.LoadedAdapter, candidates: list[Adapter], kind: str) -> Adapter | None:
    if loaded.name:
        for adapter in candidates:
            if adapter.name == loaded.name:
                return adapter
    exact = [a for a in candidates if same_path(a.source, loaded.path)]
    if exact:
        return exact[0]
    if kind == "llamacpp" and loaded.path:
        base = os.path.basename(loaded.path)
        by_name = [a for a in candidates if "://" not in a.source and os.path.basename(a.source) == base]
        if len(by_name) == 1:
            return by_name[0]
    return None


def adapter_sync_backend(*, backend: Backend, actor: User | None = None, audit: bool = True) -> SyncReport:
    """Reconcile ``confirmed`` on this backend's adapter rows with what the engine reports. Rows are never
    created here (placing an adapter is an explicit act); adapters the engine has but the pool does not know are
    reported as discovered, unregistered. ``audit`` False: part of a larger change that records its own event."""
    report = SyncReport(backend=backend, ok=True, from_launch_config=backend.kind == EngineKind.TGI)
    if backend.kind == EngineKind.OPENAI:
        report.message = "OpenAI-compatible backends do not serve LoRA adapters through the pool."
        return report
    try:
        loaded = adapter_discover(backend=backend)
    except UpstreamError as exc:
        report.ok = False
        report.message = exc.message
        return report
    candidates = list(Adapter.objects.filter(base_model_id=backend.base_model_id))
    rows = {row.name: row for row in pool_selectors.backend_adapter_list(backend=backend)}
    seen: dict[str, engines.LoadedAdapter] = {}
    for item in loaded:
        adapter = _match(item, candidates, backend.kind)
        row_name = adapter.name if adapter else None
        if row_name is None and item.name in rows:
            row_name = item.name
        if row_name is None:  # a row placed under a name the catalog does not know, matched by its file
            row_name = next((n for n, r in rows.items() if same_path(r.source_path, item.path)), None)
        if row_name is not None:
            seen[row_name] = item
        report.discovered.append(
            DiscoveredAdapter(ref=item.ref, path=item.path, adapter=adapter, registered=row_name in rows)
        )
    if backend.kind == EngineKind.TGI:
        return report  # confirmation of TGI rows is explicit (adapter_confirm_launch)
    with transaction.atomic():
        for name, row in rows.items():
            found = seen.get(name)
            if found is not None:
                if not row.confirmed:
                    report.confirmed.append(name)
                pool_services.backend_adapter_observe(
                    placement=row, confirmed=True, engine_ref=found.ref, source_path=found.path or None
                )
            elif row.confirmed:
                pool_services.backend_adapter_observe(placement=row, confirmed=False)
                report.unconfirmed.append(name)
        if report.changed and audit:
            audit_record(
                action="adapter.sync",
                actor=actor,
                actor_label="" if actor else "adapter-sync",
                target=backend,
                details={"backend": backend.name, "confirmed": report.confirmed, "unconfirmed": report.unconfirmed},
            )
    return report


def adapter_sync_all(*, actor: User | None = None) -> list[SyncReport]:
    return [adapter_sync_backend(backend=b, actor=actor) for b in pool_selectors.backend_list(enabled_only=True)]


@dataclass
class PlacementOutcome:
    backend: Backend
    adapter: Adapter
    confirmed: bool
    restart_needed: bool
    message: str


def _check_fit(adapter: Adapter, backend: Backend) -> None:
    if adapter.base_model_id != backend.base_model_id:
        raise InvalidInput(
            f"{adapter.name} is trained for {adapter.base_model.name}, but {backend.name} serves "
            f"{backend.base_model.name}."
        )
    if backend.kind == EngineKind.OPENAI:
        raise InvalidInput("OpenAI-compatible backends cannot load LoRA adapters.")
    if backend.kind == EngineKind.LLAMACPP and adapter.format != AdapterFormat.GGUF:
        raise InvalidInput("llama.cpp loads GGUF adapters; convert this PEFT adapter with convert_lora_to_gguf.py.")
    if backend.kind in (EngineKind.VLLM, EngineKind.TGI) and adapter.format != AdapterFormat.PEFT:
        raise InvalidInput(f"{backend.get_kind_display()} loads PEFT adapters, not GGUF files.")


def _row_create(*, backend: Backend, adapter: Adapter) -> tuple[BackendAdapter, bool]:
    """The pool row for this placement, unconfirmed. vLLM and TGI name adapters by the name they were given
    (``lora_name``, ``--lora-adapters name=path``); llama.cpp numbers them in launch order, so the id is learnt from
    ``/lora-adapters`` by the file path."""
    engine_ref = "" if backend.kind == EngineKind.LLAMACPP else adapter.name
    return pool_services.backend_adapter_place(
        backend=backend, name=adapter.name, source_path=adapter.source, engine_ref=engine_ref
    )


def adapter_load(*, adapter: Adapter, backend: Backend, actor: User) -> PlacementOutcome:
    """Put an adapter on a backend: at run time on vLLM; for llama.cpp and TGI record it in the launch spec (a
    restart is needed unless the engine already has it loaded)."""
    _check_fit(adapter, backend)
    row, created = _row_create(backend=backend, adapter=adapter)
    if backend.kind == EngineKind.VLLM:
        try:
            engine_message = engines.vllm_load(backend, name=adapter.name, path=adapter.source)
        except UpstreamError:
            if created:
                pool_services.backend_adapter_remove(placement=row)
            raise
        report = adapter_sync_backend(backend=backend, actor=actor, audit=False)
        row.refresh_from_db()
        message = engine_message if row.confirmed else f"{engine_message} — but /v1/models does not list it yet."
        if not report.ok:
            message = f"{engine_message} — could not confirm: {report.message}"
        outcome = PlacementOutcome(backend, adapter, row.confirmed, False, message)
    elif backend.kind == EngineKind.LLAMACPP:
        adapter_sync_backend(backend=backend, actor=actor, audit=False)
        row.refresh_from_db()
        if row.confirmed:
            message = f"{backend.name} already has {adapter.name} loaded: requests may use it now."
        else:
            message = f"Added to {backend.name}'s launch spec. Restart the engine with the new spec to load it."
        outcome = PlacementOutcome(backend, adapter, row.confirmed, not row.confirmed, message)
    else:  # TGI
        message = (
            f"Added to {backend.name}'s launch spec (--lora-adapters). Restart TGI with the new spec, then confirm."
        )
        outcome = PlacementOutcome(backend, adapter, row.confirmed, not row.confirmed, message)
    audit_record(
        action="adapter.load" if backend.kind == EngineKind.VLLM else "adapter.place",
        tenant=adapter.owner_tenant,
        actor=actor,
        target=adapter,
        details={"backend": backend.name, "confirmed": outcome.confirmed, "restart_needed": outcome.restart_needed},
    )
    return outcome


def adapter_unload(*, adapter: Adapter, backend: Backend, actor: User) -> PlacementOutcome:
    """Take an adapter off a backend. The row is un-confirmed before the engine is asked, so the router stops
    choosing this backend for it first. vLLM unloads at run time; llama.cpp and TGI keep it until restarted with
    the new launch spec (the router no longer sends it there in the meantime)."""
    row = pool_selectors.backend_adapter_get(backend=backend, name=adapter.name)
    if row is None:
        raise NotFound(f"{adapter.name} is not placed on {backend.name}.")
    pool_services.backend_adapter_observe(placement=row, confirmed=False)
    if backend.kind == EngineKind.VLLM:
        try:
            engine_message = engines.vllm_unload(backend, name=row.ref)
        except UpstreamError:
            # It may still be loaded: the next sync re-confirms it if so; until then nothing is routed there.
            audit_record(
                action="adapter.unload_failed",
                tenant=adapter.owner_tenant,
                actor=actor,
                target=adapter,
                details={"backend": backend.name},
            )
            raise
        pool_services.backend_adapter_remove(placement=row)
        outcome = PlacementOutcome(backend, adapter, False, False, engine_message)
    else:
        pool_services.backend_adapter_remove(placement=row)
        outcome = PlacementOutcome(
            backend,
            adapter,
            False,
            True,
            f"Removed from {backend.name}'s launch spec; no new requests go there. Restart the engine with the new "
            "spec to free its memory.",
        )
    audit_record(
        action="adapter.unload" if backend.kind == EngineKind.VLLM else "adapter.unplace",
        tenant=adapter.owner_tenant,
        actor=actor,
        target=adapter,
        details={"backend": backend.name, "restart_needed": outcome.restart_needed},
    )
    return outcome


def adapter_confirm_launch(*, backend: Backend, actor: User) -> list[str]:
    """TGI has no adapter listing: after restarting it with its launch spec, an admin confirms the rows. Refused
    while the backend is not healthy (a restart that failed must not send traffic)."""
    if backend.kind != EngineKind.TGI:
        raise InvalidInput("Only TGI backends are confirmed by hand; the others report their adapters.")
    if backend.health != HealthState.UP:
        raise Conflict(f"{backend.name} is not healthy ({backend.health}); wait for it to come up after the restart.")
    names = pool_services.backend_adapter_confirm_pending(backend=backend)
    if names:
        audit_record(
            action="adapter.confirm_launch",
            actor=actor,
            target=backend,
            details={"backend": backend.name, "names": names},
        )
    return names
