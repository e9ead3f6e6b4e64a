"""Pool services (writes): the one door the rest of the portal uses to run a chat completion on the engines, to
register and edit backends, and to place LoRA adapters on them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from inference_pool.choices import EngineKind, Quantization
from inference_pool.local_engines import local_engine_specs
from inference_pool.models import Backend, BackendAdapter, BaseModel
from inference_pool.router import get_router
from inference_pool.types import ChatRequest, PoolEvent
from tenants.services import audit_record


def pool_stream(*, request: ChatRequest) -> AsyncIterator[PoolEvent]:
    """Stream one chat completion through the router (call it inside a running event loop; iterate with
    ``async for`` and ``aclose()`` it when stopping early).

    Yields ``TokenEvent``s, then one ``UsageEvent`` and one ``DoneEvent``; a failure after the first token ends
    with an ``ErrorEvent`` instead of ``DoneEvent`` (the caller keeps the text it has). Before the first token it
    raises ``core.errors.Busy`` (every backend saturated after a bounded wait), ``core.errors.UpstreamError``
    (no backend could serve it) or ``core.errors.NotFound`` (unknown model or adapter).
    """
    # The router's own async generator, not a wrapper around it: closing it (``aclose``) releases the backend slot
    # at once, and the relay costs one generator frame per token instead of two.
    return get_router().stream(request)


def _base_model_defaults() -> dict[str, Any]:
    """The embedded model's row (``settings.LLAMA_MODEL_INFO``, from ``PORTAL_MODEL``); a GGUF given by path records
    its family only."""
    info = dict(getattr(settings, "LLAMA_MODEL_INFO", {}) or {})
    fields = ("family", "params_b", "context_length", "layers", "kv_heads", "head_dim")
    return {key: info[key] for key in fields if key in info}


def backend_sync_local() -> list[Backend]:
    """Register the managed local llama-server engines (``ENGINE_REPLICAS``) as Backend rows.

    Idempotent: updates the rows of engines that exist, disables managed rows whose engine is no longer configured.
    Their LoRA files (if any) are registered as unconfirmed adapters; the next health probe confirms them.
    """
    specs = local_engine_specs()
    with transaction.atomic():
        base, _ = BaseModel.objects.get_or_create(
            name=settings.LLAMA_MODEL_NAME,
            defaults=_base_model_defaults(),
        )
        rows: list[Backend] = []
        for spec in specs:
            row, _ = Backend.objects.update_or_create(
                name=spec.name,
                defaults={
                    "kind": EngineKind.LLAMACPP,
                    "base_url": spec.base_url,
                    "base_model": base,
                    "served_name": settings.LLAMA_MODEL_NAME,
                    "quantization": Quantization.GGUF_Q4,
                    "context_length": spec.context // max(spec.slots, 1),
                    "max_concurrent": spec.slots,
                    "managed": True,
                    "enabled": True,
                },
            )
            for index, path in enumerate(spec.loras):
                BackendAdapter.objects.update_or_create(
                    backend=row,
                    name=Path(path).stem,
                    defaults={"engine_ref": str(index), "source_path": path},
                )
            rows.append(row)
        Backend.objects.filter(managed=True).exclude(name__in=[s.name for s in specs]).update(enabled=False)
    return rows


def backend_register(
    *,
    name: str,
    kind: str,
    base_url: str,
    model: str,
    served_name: str = "",
    max_concurrent: int = 8,
    context_length: int = 4096,
    weight: float = 1.0,
    quantization: str = Quantization.NONE,
    adapters: dict[str, str] | None = None,
    confirm_adapters: bool = False,
) -> Backend:
    """Create or update a backend (and its base model and adapters: name -> engine ref)."""
    if kind not in EngineKind.values:
        raise InvalidInput(f"Unknown engine kind “{kind}”; use one of {', '.join(EngineKind.values)}.")
    with transaction.atomic():
        base, _ = BaseModel.objects.get_or_create(name=model)
        row, _ = Backend.objects.update_or_create(
            name=name,
            defaults={
                "kind": kind,
                "base_url": base_url,
                "base_model": base,
                "served_name": served_name,
                "max_concurrent": max_concurrent,
                "context_length": context_length,
                "weight": weight,
                "quantization": quantization,
            },
        )
        for adapter_name, ref in (adapters or {}).items():
            BackendAdapter.objects.update_or_create(
                backend=row,
                name=adapter_name,
                defaults={
                    "engine_ref": ref,
                    "confirmed": confirm_adapters,
                    "confirmed_at": timezone.now() if confirm_adapters else None,
                },
            )
    return row


# ------------------------------------------------------------------------------------- backends edited by staff
# The console's edits go through these, each an AuditEvent. The router picks changes up with its next registry
# snapshot (every POOL_REFRESH_INTERVAL seconds).
BACKEND_FIELDS = (
    "name",
    "kind",
    "base_url",
    "base_model",
    "served_name",
    "quantization",
    "context_length",
    "max_concurrent",
    "weight",
    "api_key",
)

BACKEND_STATES: dict[str, dict[str, bool]] = {
    "enable": {"enabled": True, "draining": False},
    "drain": {"draining": True},
    "undrain": {"draining": False},
    "disable": {"enabled": False},
}


@transaction.atomic
def backend_create(*, actor: User, **fields: Any) -> Backend:
    unknown = set(fields) - set(BACKEND_FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown backend fields: {', '.join(sorted(unknown))}.")
    if Backend.objects.filter(name=fields.get("name", "")).exists():
        raise Conflict(f"A backend named '{fields.get('name')}' already exists.")
    backend = Backend.objects.create(**fields)
    audit_record(
        action="backend.create",
        actor=actor,
        target=backend,
        details={"backend": backend.name, "kind": backend.kind, "model": backend.base_model.name},
    )
    return backend


@transaction.atomic
def backend_update(*, backend: Backend, actor: User, **fields: Any) -> Backend:
    unknown = set(fields) - set(BACKEND_FIELDS) - {"name"}
    if unknown:
        raise InvalidInput(f"Unknown backend fields: {', '.join(sorted(unknown))}.")
    if "base_model" in fields and fields["base_model"] != backend.base_model and backend.adapters.exists():
        raise Conflict("Remove the backend's adapters before changing its base model.")
    changed = [k for k, v in fields.items() if getattr(backend, k) != v]
    for key in changed:
        setattr(backend, key, fields[key])
    if changed:
        backend.save()
        audit_record(
            action="backend.update",
            actor=actor,
            target=backend,
            # never the API key itself: only that it changed
            details={"backend": backend.name, "fields": sorted(changed)},
        )
    return backend


@transaction.atomic
def backend_set_state(*, backend: Backend, state: str, actor: User) -> Backend:
    """``drain``: finish running requests, take no new ones; ``disable``: out of the pool; ``enable``: back in."""
    if state not in BACKEND_STATES:
        raise InvalidInput(f"Unknown state '{state}'. Use one of: {', '.join(BACKEND_STATES)}.")
    updates = BACKEND_STATES[state]
    if all(getattr(backend, k) == v for k, v in updates.items()):
        return backend
    for key, value in updates.items():
        setattr(backend, key, value)
    backend.save(update_fields=[*updates, "updated_at"])
    audit_record(action=f"backend.{state}", actor=actor, target=backend, details={"backend": backend.name})
    return backend


# ---------------------------------------------------------------------------- where LoRA adapters are placed
# Only the pool writes ``BackendAdapter`` rows. A row's existence is the intent (the adapter belongs on that backend,
# so it is in the backend's launch spec); ``confirmed`` is the observation (the engine reported it loaded). The
# ``adapters`` app decides what to place and calls these.


def backend_adapter_place(
    *, backend: Backend, name: str, source_path: str, engine_ref: str
) -> tuple[BackendAdapter, bool]:
    """The unconfirmed placement of adapter ``name`` on ``backend`` (created, or the existing one: ``created``
    False). Safe against a concurrent placement of the same adapter."""
    try:
        with transaction.atomic():
            return BackendAdapter.objects.get_or_create(
                backend=backend,
                name=name,
                defaults={"source_path": source_path, "engine_ref": engine_ref, "confirmed": False},
            )
    except IntegrityError:
        return BackendAdapter.objects.get(backend=backend, name=name), False


def backend_adapter_observe(
    *, placement: BackendAdapter, confirmed: bool, engine_ref: str | None = None, source_path: str | None = None
) -> None:
    """Record what the engine reports for a placement: loaded or not, and under which id and file."""
    updates: dict[str, Any] = {}
    if confirmed != placement.confirmed:
        updates["confirmed"] = confirmed
        if confirmed:
            updates["confirmed_at"] = timezone.now()
    if engine_ref is not None and engine_ref != placement.engine_ref:
        updates["engine_ref"] = engine_ref
    if source_path is not None and source_path != placement.source_path:
        updates["source_path"] = source_path
    if updates:
        BackendAdapter.objects.filter(pk=placement.pk).update(**updates)
        for key, value in updates.items():
            setattr(placement, key, value)


def backend_adapter_remove(*, placement: BackendAdapter) -> None:
    BackendAdapter.objects.filter(pk=placement.pk).delete()


def backend_adapter_confirm_pending(*, backend: Backend) -> list[str]:
    """Confirm every unconfirmed placement on ``backend`` (TGI, after a restart with its launch spec); the names."""
    names = list(BackendAdapter.objects.filter(backend=backend, confirmed=False).values_list("name", flat=True))
    if names:
        BackendAdapter.objects.filter(backend=backend, name__in=names).update(
            confirmed=True, confirmed_at=timezone.now()
        )
    return names


_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")


def base_model_create(
    *,
    name: str,
    actor: Any = None,
    family: str = "",
    params_b: float = 0.0,
    context_length: int = 4096,
    layers: int = 0,
    kv_heads: int = 0,
    head_dim: int = 0,
) -> BaseModel:
    """Register a base model the pool can serve (the name clients send as ``model``). Backends then point at it.

    ``Conflict`` when the name is taken; ``InvalidInput`` with a sentence a person reads for a bad value."""
    name = (name or "").strip()
    if not _MODEL_NAME_RE.match(name):
        raise InvalidInput(
            "A model name is 1 to 200 letters, digits and . _ : / @ + - (the name clients send as 'model'), "
            "starting with a letter or digit."
        )
    if not 128 <= int(context_length) <= 10_000_000:
        raise InvalidInput("The context length must be between 128 and 10,000,000 tokens.")
    if params_b < 0 or min(layers, kv_heads, head_dim) < 0:
        raise InvalidInput("Parameters, layers, KV heads and head size cannot be negative.")
    with transaction.atomic():
        if BaseModel.objects.filter(name=name).exists():
            raise Conflict(f"A base model named '{name}' already exists.")
        model = BaseModel.objects.create(
            name=name,
            family=family.strip()[:100],
            params_b=float(params_b),
            context_length=int(context_length),
            layers=int(layers),
            kv_heads=int(kv_heads),
            head_dim=int(head_dim),
        )
        audit_record(action="base_model.create", actor=actor, target=model, details={"model": name})
    return model


async def pool_close() -> None:
    """Close the running event loop's router (its HTTP connections), e.g. before that loop is stopped."""
    from inference_pool.router import _routers

    router = _routers.get(asyncio.get_running_loop())
    if router is not None:
        await router.aclose()
