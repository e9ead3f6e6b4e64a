"""Django's own cache backends, counted for Prometheus with django-prometheus's cache counters
(``django_cache_get_total``, ``django_cache_get_hits_total``, ``django_cache_get_misses_total``,
``django_cache_get_fail_total`` by backend).

django-prometheus ships wrappers too, but its Redis one needs the django-redis package and its local-memory one
answers the default for cached falsy values (0, "", False); these keep Django's semantics exactly.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.locmem import LocMemCache as DjangoLocMemCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django_prometheus.cache.metrics import (
    django_cache_get_fail_total,
    django_cache_get_total,
    django_cache_hits_total,
    django_cache_misses_total,
)

_MISSING = object()


def _counted_get(backend: str, get: Any, key: Any, default: Any, version: Any) -> Any:
    django_cache_get_total.labels(backend=backend).inc()
    try:
        value = get(key, _MISSING, version)
    except Exception:
        django_cache_get_fail_total.labels(backend=backend).inc()
        raise
    if value is _MISSING:
        django_cache_misses_total.labels(backend=backend).inc()
        return default
    django_cache_hits_total.labels(backend=backend).inc()
    return value


class LocMemCache(DjangoLocMemCache):
    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return _counted_get("locmem", super().get, key, default, version)


class RedisCache(DjangoRedisCache):
    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return _counted_get("redis", super().get, key, default, version)
