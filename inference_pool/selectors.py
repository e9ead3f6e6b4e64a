"""Pool selectors (reads)."""

from __future__ import annotations

from django.db.models import QuerySet

from inference_pool.models import Backend, BackendAdapter, BaseModel, BreakerState, HealthState
from inference_pool.types import ServedModel


def base_model_list() -> QuerySet[BaseModel]:
    return BaseModel.objects.order_by("name")


def backend_list(*, enabled_only: bool = False) -> QuerySet[Backend]:
    qs = Backend.objects.select_related("base_model").prefetch_related("adapters")
    return qs.filter(enabled=True) if enabled_only else qs


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


async def aserved_model_list() -> list[ServedModel]:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(served_model_list)()
