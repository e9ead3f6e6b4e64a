"""Tenant-scoped querysets that fail closed.

``Model.objects`` on a tenant-owned model only yields rows of one tenant:
- ``Model.objects.for_tenant(tenant)`` scopes explicitly;
- inside ``with tenant_context(tenant):`` the default manager scopes to that tenant;
- access through a parent object (``kb.documents.all()``) is scoped by that parent;
- anything else raises ``TenantContextMissing`` when the query is evaluated — never all rows.
``Model.unscoped`` is the explicit escape hatch for platform staff code, migrations and admin.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.db import models

if TYPE_CHECKING:
    from tenants.models import Tenant

_current_tenant: contextvars.ContextVar[Tenant | None] = contextvars.ContextVar("current_tenant", default=None)

_M = TypeVar("_M", bound=models.Model)


class TenantContextMissing(RuntimeError):
    """A tenant-owned table was queried without a tenant: refused instead of returning every tenant's rows."""


@contextmanager
def tenant_context(tenant: Tenant) -> Iterator[Tenant]:
    token = _current_tenant.set(tenant)
    try:
        yield tenant
    finally:
        _current_tenant.reset(token)


def get_current_tenant() -> Tenant | None:
    return _current_tenant.get()


class TenantScopedQuerySet(models.QuerySet[_M], Generic[_M]):
    _tenant_scoped: bool = False

    def _clone(self) -> TenantScopedQuerySet[_M]:  # type: ignore[override]
        clone = super()._clone()  # type: ignore[misc]
        clone._tenant_scoped = self._tenant_scoped
        return clone

    def for_tenant(self, tenant: Tenant | int) -> TenantScopedQuerySet[_M]:
        if tenant is None:
            raise TenantContextMissing(f"{self.model.__name__}: for_tenant() needs a tenant")
        tenant_id = tenant if isinstance(tenant, int) else tenant.pk
        qs = self.filter(tenant_id=tenant_id)
        qs._tenant_scoped = True
        return qs

    def _add_hints(self, **hints: Any) -> None:
        # Related managers (``parent.children.all()``) add the parent instance as a hint: the parent row
        # was itself reached through a scoped path, so the children are scoped by it.
        super()._add_hints(**hints)  # type: ignore[misc]
        if hints.get("instance") is not None:
            self._tenant_scoped = True

    def _check_scoped(self) -> None:
        if not self._tenant_scoped:
            raise TenantContextMissing(
                f"{self.model.__name__} was queried without a tenant; use .for_tenant(tenant) or tenant_context()"
            )

    def _fetch_all(self) -> None:
        if self._result_cache is None:
            self._check_scoped()
        super()._fetch_all()  # type: ignore[misc]

    def iterator(self, chunk_size: int | None = None) -> Iterator[_M]:
        self._check_scoped()
        return super().iterator(chunk_size=chunk_size)

    def count(self) -> int:
        self._check_scoped()
        return super().count()

    def exists(self) -> bool:
        self._check_scoped()
        return super().exists()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self._check_scoped()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        self._check_scoped()
        return super().update(**kwargs)

    def delete(self) -> tuple[int, dict[str, int]]:
        self._check_scoped()
        return super().delete()

    def _raw_delete(self, using: Any) -> int:  # type: ignore[override]
        self._check_scoped()
        return super()._raw_delete(using)  # type: ignore[misc]


class TenantScopedManager(models.Manager[_M], Generic[_M]):
    def get_queryset(self) -> TenantScopedQuerySet[_M]:
        qs: TenantScopedQuerySet[_M] = TenantScopedQuerySet(self.model, using=self._db)
        tenant = _current_tenant.get()
        if tenant is not None:
            return qs.for_tenant(tenant)
        return qs

    def for_tenant(self, tenant: Tenant | int) -> TenantScopedQuerySet[_M]:
        return TenantScopedQuerySet(self.model, using=self._db).for_tenant(tenant)
