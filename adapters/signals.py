"""Cache invalidation (no business logic here): a change of an adapter, an adapter assignment, a base model or a
backend drops the resolved turn targets (``adapters.model_turn.TURN_TARGET_CACHE``) in every process."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db.models.signals import post_delete, post_save


def _invalidate(**_: Any) -> None:
    from adapters.model_turn import TURN_TARGET_CACHE

    TURN_TARGET_CACHE.invalidate()


def connect() -> None:
    # the pool's models by name: the pool owns them (and writes the backend's probe state with ``update()``, which
    # sends no signal and changes nothing a target depends on)
    for label in (
        "adapters.Adapter",
        "adapters.AdapterAssignment",
        "inference_pool.BaseModel",
        "inference_pool.Backend",
    ):
        model = apps.get_model(label)
        post_save.connect(_invalidate, sender=model, dispatch_uid=f"adapters.cache.{label}.save")
        post_delete.connect(_invalidate, sender=model, dispatch_uid=f"adapters.cache.{label}.delete")
