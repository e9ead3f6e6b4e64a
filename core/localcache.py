"""In-process caches of hot lookups (the caller's API key, a department's guard policy, model facts) that a change
invalidates at once, in every process.

Each cache has a *generation*: a counter in Django's cache (Redis in production, shared by every web process) that
each change bumps after its transaction commits (``LocalCache.invalidate``). An entry remembers the generation it
was read under and is used only while that generation is still current, so a change (a revoked key, a suspended
department, an edited policy) applies to the very next request in every process. The process that made the change
also clears its own entries at once. Reading the generation is one cache round trip (no database query).

``strict=False`` caches may read the generation at most every ``GENERATION_MEMO_S`` seconds per process (a change
then applies within that time elsewhere; at once in the process that made it); security decisions use strict caches.

Within one request (``generations_per_request``: every HTTP request, every chat turn) the generations are read
once, all caches in one round trip, at the request's first lookup: a change committed before the request began
applies to it; one committed while it runs applies from the next request on.

Entries also expire after ``ttl`` seconds, so a missed bump (a cache outage) heals by itself. With the local-memory
cache backend (no ``REDIS_URL``) the generation is per process: fine for the one web process of the embedded default;
run several web processes only with a shared cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from django.core.cache import cache
from django.db import transaction

V = TypeVar("V")

GENERATION_MEMO_S = 0.5
_MAX_ENTRIES = 10_000


class LocalCache(Generic[V]):
    def __init__(self, name: str, *, ttl: float = 60.0, strict: bool = True) -> None:
        self.name = name
        self.ttl = ttl
        self.strict = strict
        self._key = f"localcache:gen:{name}"
        self._entries: dict[Hashable, tuple[Any, float, V]] = {}
        self._lock = threading.Lock()
        self._memo: tuple[float, Any] = (0.0, None)
        _REGISTRY[name] = self

    # the shared generation ------------------------------------------------------------------------------------
    def generation(self) -> Any:
        now = time.monotonic()
        if not self.strict and now - self._memo[0] < GENERATION_MEMO_S:
            return self._memo[1]
        snapshot = _request_generations.get()
        if snapshot is not None:
            if not snapshot:
                snapshot.update(_read_generations())
            gen = snapshot.get(self._key)
            if gen is not None:
                return gen
        try:
            gen = cache.get(self._key)
            if gen is None:
                gen = time.time_ns()  # a fresh value that no entry can hold
                cache.add(self._key, gen, timeout=None)
                gen = cache.get(self._key, gen)
        except Exception:  # the shared cache is down: serve nothing from memory (fail closed)
            return object()
        self._memo = (now, gen)
        if snapshot is not None:
            snapshot[self._key] = gen
        return gen

    # entries --------------------------------------------------------------------------------------------------
    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value for ``key``, or ``load()``'s (read under the current generation and kept)."""
        gen = self.generation()
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] == gen and hit[1] > now:
            return hit[2]
        value = load()  # may raise: errors are not cached
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (gen, now + self.ttl, value)
        return value

    def clear_local(self) -> None:
        with self._lock:
            self._entries.clear()
        self._memo = (0.0, None)

    def _bump(self) -> None:
        self.clear_local()
        try:
            cache.set(self._key, time.time_ns(), timeout=None)
        except Exception:  # noqa: S110 - entries expire after ttl; the local ones are already gone
            pass

    def invalidate(self) -> None:
        """Drop every entry, here and in every process, once the current transaction commits (now if none)."""
        self.clear_local()  # at once here (a read inside the transaction would see the change anyway)
        transaction.on_commit(self._bump)


_REGISTRY: dict[str, LocalCache[Any]] = {}

# The generations read for the running request (see ``generations_per_request``); None outside one. The dict is
# shared by the request's threads (contexts are copied into them, the dict is not), filled at its first lookup.
_request_generations: ContextVar[dict[str, Any] | None] = ContextVar("localcache_generations", default=None)
_SNAPSHOT_FILLED = "localcache:snapshot"  # a marker entry: the request's one read has happened


def _read_generations() -> dict[str, Any]:
    """Every cache's generation in one round trip (missing ones are read, and created, one by one later)."""
    try:
        found = cache.get_many([c._key for c in _REGISTRY.values()])
    except Exception:  # the shared cache is down: each cache fails closed on its own read
        found = {}
    found[_SNAPSHOT_FILLED] = True
    return found


@contextmanager
def generations_per_request() -> Iterator[None]:
    """Within this block (one request, one chat turn), every cache reads its generation from one snapshot taken at
    the first lookup: one cache round trip instead of one per cache. Inside an enclosing block, that one's snapshot
    is used."""
    if _request_generations.get() is not None:
        yield
        return
    token = _request_generations.set({})
    try:
        yield
    finally:
        _request_generations.reset(token)


def local_caches_clear() -> None:
    """Forget every entry of every local cache in this process (tests, after a flush of the database)."""
    for c in _REGISTRY.values():
        c.clear_local()
