"""Cache invalidation (no business logic here): any change of a key, a department, a membership, a user or a price, by a
service, the admin site or a cascade, drops the in-process caches of ``tenants.selectors`` in every process."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from tenants.models import ApiKey, Membership, ModelPrice, Tenant


def _invalidate(**_: Any) -> None:
    from tenants.selectors import API_KEY_CACHE, MEMBERSHIP_CACHE, TENANT_CACHE

    API_KEY_CACHE.invalidate()
    MEMBERSHIP_CACHE.invalidate()
    TENANT_CACHE.invalidate()


def _key_changed(sender: Any, instance: ApiKey, update_fields: Any = None, **_: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_used_at"}:
        return  # the last-use stamp changes nothing a request depends on
    _invalidate()


def _prices_changed(**_: Any) -> None:
    from tenants.quota import PRICE_CACHE

    PRICE_CACHE.invalidate()


def connect() -> None:
    post_save.connect(_prices_changed, sender=ModelPrice, dispatch_uid="tenants.cache.price_save")
    post_delete.connect(_prices_changed, sender=ModelPrice, dispatch_uid="tenants.cache.price_delete")
    post_save.connect(_key_changed, sender=ApiKey, dispatch_uid="tenants.cache.key_save")
    post_delete.connect(_invalidate, sender=ApiKey, dispatch_uid="tenants.cache.key_delete")
    for model in (Tenant, Membership, get_user_model()):
        post_save.connect(_invalidate, sender=model, dispatch_uid=f"tenants.cache.{model.__name__}.save")
        post_delete.connect(_invalidate, sender=model, dispatch_uid=f"tenants.cache.{model.__name__}.delete")
