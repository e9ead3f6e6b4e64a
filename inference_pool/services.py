"""Pool services: the one door the rest of the portal uses to run a chat completion on the engines."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput
from inference_pool.local_engines import local_engine_specs
from inference_pool.models import Backend, BackendAdapter, BaseModel, EngineKind, Quantization
from inference_pool.types import ChatRequest, PoolEvent


def pool_stream(*, request: ChatRequest) -> AsyncIterator[PoolEvent]:
    """Stream one chat completion through the router (call it inside a running event loop; iterate with
    ``async for`` and ``aclose()`` it when stopping early).

    Yields ``TokenEvent``s, then one ``UsageEvent`` and one ``DoneEvent``; a failure after the first token ends
    with an ``ErrorEvent`` instead of ``DoneEvent`` (the caller keeps the text it has). Before the first token it
    raises ``core.errors.Busy`` (every backend saturated after a bounded wait), ``core.errors.UpstreamError``
    (no backend could serve it) or ``core.errors.NotFound`` (unknown model or adapter).
    """
    from inference_pool.router import get_router

    # The router's own async generator, not a wrapper around it: closing it (``aclose``) releases the backend slot
    # at once, and the relay costs one generator frame per token instead of two.
    return get_router().stream(request)


def backend_sync_local() -> list[Backend]:
    """Register the managed local llama-server engines (``ENGINE_REPLICAS``) as Backend rows.

    Idempotent: updates the rows of engines that exist, disables managed rows whose engine is no longer configured.
    Their LoRA files (if any) are registered as unconfirmed adapters; the next health probe confirms them.
    """
    specs = local_engine_specs()
    with transaction.atomic():
        base, _ = BaseModel.objects.get_or_create(
            name=settings.LLAMA_MODEL_NAME,
            defaults={
                "family": "SmolLM2",
                "params_b": 0.135,
                "context_length": 8192,
                "layers": 30,
                "kv_heads": 3,
                "head_dim": 64,
            },
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
    from tenants.services import audit_record

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
