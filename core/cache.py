"""Django's own cache backends, counted for Prometheus with django-prometheus's cache counters
(``django_cache_get_total``, ``django_cache_get_hits_total``, ``django_cache_get_misses_total``,
``django_cache_get_fail_total`` by backend), and the Redis one with its connection pools shared by the process.

django-prometheus ships wrappers too, but its Redis one needs the django-redis package and its local-memory one
answers the default for cached falsy values (0, "", False); these keep Django's semantics exactly.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from django.core.cache.backends.locmem import LocMemCache as DjangoLocMemCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
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


_POOLS: dict[tuple[str, str], Any] = {}
_POOLS_LOCK = threading.Lock()


class SharedPoolRedisCacheClient(RedisCacheClient):
    """Django's client, with one connection pool per server and options for the whole process.

    Under ASGI Django keeps a cache object per request context, and each opened a pool of its own: every request
    connected to Redis anew (and closed it when the pool was collected), 5 % of the web process's CPU under
    ``make bench-gateway``. redis-py's pools are thread-safe and reset themselves after a fork."""

    if TYPE_CHECKING:  # Django's own attributes, not in its type stubs
        _servers: list[str]
        _pool_options: dict[str, Any]
        _pool_class: Any

        def _get_connection_pool_index(self, write: bool) -> int: ...

    def _get_connection_pool(self, write: bool) -> Any:
        index = self._get_connection_pool_index(write)
        key = (self._servers[index], repr(sorted(self._pool_options.items())))
        pool = _POOLS.get(key)
        if pool is None:
            with _POOLS_LOCK:
                pool = _POOLS.get(key)
                if pool is None:
                    pool = _POOLS[key] = self._pool_class.from_url(self._servers[index], **self._pool_options)
        return pool


class RedisCache(DjangoRedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SharedPoolRedisCacheClient

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return _counted_get("redis", super().get, key, default, version)
