"""Pool selectors (reads): the registry as the rest of the portal sees it. Other apps read backends, base models
and adapter placements through these functions, never through the pool's models."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db.models import Min, QuerySet

from core.errors import NotFound
from inference_pool.choices import BreakerState, HealthState
from inference_pool.inflight import RedisInflight
from inference_pool.models import Backend, BackendAdapter, BaseModel
from inference_pool.types import ServedModel


def backend_list(
    *, enabled_only: bool = False, base_model_id: int | None = None, kinds: Iterable[str] | None = None
) -> QuerySet[Backend]:
    """Backends with their base model and adapters, by name; optionally only enabled ones, one base model's, or
    those of some engine kinds."""
    qs = Backend.objects.select_related("base_model").prefetch_related("adapters").order_by("name")
    if enabled_only:
        qs = qs.filter(enabled=True)
    if base_model_id is not None:
        qs = qs.filter(base_model_id=base_model_id)
    if kinds is not None:
        qs = qs.filter(kind__in=list(kinds))
    return qs


def backend_get(*, backend_id: int) -> Backend:
    """One backend (with its base model); an unknown id is ``NotFound``."""
    backend = Backend.objects.select_related("base_model").filter(pk=backend_id).first()
    if backend is None:
        raise NotFound("That backend does not exist.")
    return backend


def base_model_list() -> QuerySet[BaseModel]:
    """The base models the pool knows, by name (form choices, pricing names)."""
    return BaseModel.objects.order_by("name")


def base_model_exists(*, name: str) -> bool:
    return BaseModel.objects.filter(name=name).exists()


def base_model_created_at() -> dict[str, datetime]:
    """When each base model was registered, by name (the ``created`` of ``/v1/models``)."""
    return dict(BaseModel.objects.values_list("name", "created_at"))


def model_context_length(*, model: str) -> int | None:
    """The smallest context window among the enabled backends serving base model ``model`` (None: none serves it)."""
    found = Backend.objects.filter(base_model__name=model, enabled=True).aggregate(n=Min("context_length"))["n"]
    return int(found) if found else None


def backend_adapter_list(
    *, backend: Backend | None = None, name: str | None = None, names: Iterable[str] | None = None
) -> QuerySet[BackendAdapter]:
    """Adapter placements (the pool's ``BackendAdapter`` rows), filtered by backend, one adapter name or several."""
    qs = BackendAdapter.objects.select_related("backend").order_by("backend__name", "name")
    if backend is not None:
        qs = qs.filter(backend=backend)
    if name is not None:
        qs = qs.filter(name=name)
    if names is not None:
        qs = qs.filter(name__in=list(names))
    return qs


def backend_adapter_get(*, backend: Backend, name: str) -> BackendAdapter | None:
    """The placement of adapter ``name`` on ``backend``, if there is one."""
    return BackendAdapter.objects.filter(backend=backend, name=name).first()


def backend_adapter_counts(*, names: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Per adapter name: (backends where it is confirmed loaded, backends where it is placed but not yet confirmed)."""
    counts: dict[str, tuple[int, int]] = {}
    for name, confirmed in BackendAdapter.objects.filter(name__in=list(names)).values_list("name", "confirmed"):
        done, pending = counts.get(name, (0, 0))
        counts[name] = (done + 1, pending) if confirmed else (done, pending + 1)
    return counts


def _routable() -> QuerySet[Backend]:
    return (
        Backend.objects.filter(enabled=True, draining=False)
        .exclude(health__in=[HealthState.DOWN, HealthState.LOADING])
        .exclude(breaker=BreakerState.OPEN)
    )


def served_model_list() -> list[ServedModel]:
    """Base models and confirmed adapters that can be routed now (an enabled backend that is not down serves them)."""
    served: dict[tuple[str, str | None], ServedModel] = {}
    for b in _routable().select_related("base_model").order_by("base_model__name", "name"):
        entry = served.setdefault(
            (b.base_model.name, None), ServedModel(model=b.base_model.name, adapter=None, context_length=0)
        )
        entry.backends.append(b.name)
        entry.context_length = max(entry.context_length, b.context_length)
    adapters = (
        BackendAdapter.objects.filter(confirmed=True, backend__in=_routable())
        .select_related("backend__base_model")
        .order_by("name", "backend__name")
    )
    for a in adapters:
        model = a.backend.base_model.name
        entry = served.setdefault(
            (model, a.name), ServedModel(model=model, adapter=a.name, context_length=a.backend.context_length)
        )
        entry.backends.append(a.backend.name)
    return sorted(served.values(), key=lambda s: (s.model, s.adapter or ""))


def backend_inflight_counts(*, backend_ids: list[int]) -> dict[int, int] | None:
    """The portal's own in-flight count per backend, shared through Redis (``REDIS_URL``). Without Redis each
    process counts its own requests, which a page cannot see: None."""
    url = settings.REDIS_URL
    if not url or not backend_ids:
        return None

    async def read() -> dict[int, int]:
        inflight = RedisInflight(url)
        try:
            return await inflight.counts(backend_ids)
        finally:
            await inflight.aclose()

    try:
        return async_to_sync(read)()
    except Exception:
        return None
