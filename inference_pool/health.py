"""Active health probes of the pool's backends and the engine part of /healthz.

A probe asks each enabled backend for its health (``/health``; ``/v1/models`` for generic OpenAI-compatible
servers), its load signals (``/metrics``) and which adapters it has loaded (llama.cpp ``/lora-adapters``, vLLM and
OpenAI-compatible ``/v1/models``), then writes the verdict on the Backend row. A probe that finds a backend up closes
its circuit breaker. Celery beat runs ``backend_probe_all`` every ``POOL_PROBE_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.db import transaction
from django.utils import timezone

from core import metrics
from inference_pool.local_engines import local_engine_specs
from inference_pool.models import Backend, BackendAdapter, BreakerState, EngineKind, HealthState
from inference_pool.signals import load_signals

logger = logging.getLogger(__name__)


@dataclass
class ProbeResult:
    backend_id: int
    health: str
    detail: str = ""
    load: dict[str, Any] = field(default_factory=dict)
    loaded_adapters: dict[str, str] | None = None  # engine ref -> source (path or parent); None: engine can't say


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


async def backend_probe(*, client: httpx.AsyncClient, backend: Backend) -> ProbeResult:
    root = _root(backend.base_url)
    headers = {"authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
    kind = backend.kind
    try:
        path = "/v1/models" if kind == EngineKind.OPENAI else "/health"
        resp = await client.get(f"{root}{path}", headers=headers)
    except httpx.HTTPError as exc:
        return ProbeResult(backend.pk, HealthState.DOWN, f"unreachable ({type(exc).__name__})")
    if resp.status_code == 503:
        return ProbeResult(backend.pk, HealthState.LOADING, "the engine is loading its model")
    if resp.status_code != 200:
        return ProbeResult(backend.pk, HealthState.DOWN, f"{path} answered HTTP {resp.status_code}")
    result = ProbeResult(backend.pk, HealthState.UP, "ok")
    if kind in (EngineKind.VLLM, EngineKind.TGI, EngineKind.LLAMACPP):
        try:
            m = await client.get(f"{root}/metrics", headers=headers)
            if m.status_code == 200:
                result.load = load_signals(kind=kind, text=m.text)
        except (httpx.HTTPError, ValueError) as exc:
            result.detail = f"ok (no load signals: {type(exc).__name__})"
    try:
        if kind == EngineKind.LLAMACPP:
            r = await client.get(f"{root}/lora-adapters", headers=headers)
            if r.status_code == 200:
                result.loaded_adapters = {str(a["id"]): str(a.get("path", "")) for a in r.json()}
                # Every request names each loaded id (see clients.llamacpp_lora_field), so the router needs them all.
                result.load["lora_ids"] = sorted(int(i) for i in result.loaded_adapters)
        elif kind in (EngineKind.VLLM, EngineKind.OPENAI):
            r = await client.get(f"{root}/v1/models", headers=headers)
            if r.status_code == 200:
                result.loaded_adapters = {
                    str(m["id"]): str(m.get("root") or "") for m in r.json().get("data", []) if m.get("parent")
                }
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        result.detail = f"ok (adapter list unreadable: {type(exc).__name__})"
    return result


async def _probe_many(backends: list[Backend], *, per_request_s: float) -> list[ProbeResult]:
    async with httpx.AsyncClient(timeout=per_request_s, trust_env=False) as client:
        return list(await asyncio.gather(*(backend_probe(client=client, backend=b) for b in backends)))


def _record(backend: Backend, result: ProbeResult) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {
        "health": result.health,
        "health_detail": result.detail[:300],
        "last_probe_at": now,
    }
    if result.health == HealthState.UP:
        fields["load"] = result.load
        if backend.breaker != BreakerState.CLOSED:
            # The engine answers again: the probe closes the breaker the router opened.
            fields.update(breaker=BreakerState.CLOSED, consecutive_failures=0)
            logger.info("probe closed the circuit breaker", extra={"backend": backend.name})
    Backend.objects.filter(pk=backend.pk).update(**fields)
    metrics.POOL_BACKEND_UP.labels(backend.name).set(1 if result.health == HealthState.UP else 0)
    if "breaker" in fields:
        metrics.POOL_BREAKER_OPEN.labels(backend.name).set(0)
    if result.loaded_adapters is not None:
        _confirm_adapters(backend, result.loaded_adapters, now=now)


def _confirm_adapters(backend: Backend, loaded: dict[str, str], *, now: Any) -> None:
    """Mark each registered adapter confirmed when the engine lists it, unconfirmed when it does not."""
    for adapter in BackendAdapter.objects.filter(backend=backend):
        ref = adapter.engine_ref
        if adapter.source_path and (backend.kind == EngineKind.LLAMACPP or not ref):
            # llama.cpp numbers adapters by load order, which a restart with another spec changes: always find the
            # id of the file we registered, so a renumbered adapter is re-learnt instead of left unrouted
            ref = next((i for i, p in loaded.items() if p and _same_file(p, adapter.source_path)), "")
        ok = bool(ref) and ref in loaded
        if ok != adapter.confirmed or (ok and ref != adapter.engine_ref):
            adapter.confirmed = ok
            adapter.engine_ref = ref or adapter.engine_ref
            adapter.confirmed_at = now if ok else None
            adapter.save(update_fields=["confirmed", "engine_ref", "confirmed_at"])


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b) or os.path.basename(a) == os.path.basename(b)


def backend_probe_all(*, timeout: float = 3.0, backend_ids: list[int] | None = None) -> list[ProbeResult]:
    """Probe every enabled backend (or the given ones) and record the results. Sync: Celery and tests call it."""
    qs = Backend.objects.filter(enabled=True)
    if backend_ids is not None:
        qs = qs.filter(pk__in=backend_ids)
    backends = list(qs)
    if not backends:
        return []
    results = asyncio.run(_probe_many(backends, per_request_s=timeout))
    by_id = {b.pk: b for b in backends}
    for result in results:
        with transaction.atomic():
            _record(by_id[result.backend_id], result)
    return results


def engine_health(*, timeout: float = 2.0) -> dict[str, object]:
    """For /healthz: probe the enabled backends (the configured local engines when none are registered);
    ``ok`` is true when at least one answers."""
    targets: list[tuple[str, str, str]] = [
        (b.name, _root(b.base_url), "/v1/models" if b.kind == EngineKind.OPENAI else "/health")
        for b in Backend.objects.filter(enabled=True).only("name", "base_url", "kind")
    ]
    if not targets:
        targets = [(spec.name, spec.base_url, "/health") for spec in local_engine_specs()]
    results: dict[str, str] = {}
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        for name, root, path in targets:
            try:
                resp = client.get(f"{root}{path}")
                results[name] = "ok" if resp.status_code == 200 else f"http {resp.status_code}"
            except httpx.HTTPError as exc:
                results[name] = f"down ({type(exc).__name__})"
    return {"ok": any(v == "ok" for v in results.values()), "backends": results}
