"""The Redis cache shares its connections across Django's per-request cache objects."""

from __future__ import annotations

import asyncio

import redis

from core.cache import RedisCache

URL = "redis://127.0.0.1:6379/7"


def client_ids() -> set[int]:
    """The connections open on the test database, this inspecting one left out."""
    inspector = redis.Redis.from_url(URL)
    try:
        own = inspector.client_id()
        return {int(c["id"]) for c in inspector.client_list() if c.get("db") == "7" and int(c["id"]) != own}
    finally:
        inspector.close()


def test_cache_objects_of_different_requests_share_one_connection() -> None:
    def request(i: int) -> object:
        cache = RedisCache(URL, {})  # what Django builds anew in every request context under ASGI
        cache.set(f"pool-test-{i}", i)
        return cache.get(f"pool-test-{i}")

    request(0)
    before = client_ids()
    assert [request(i) for i in range(1, 21)] == list(range(1, 21))
    assert client_ids() == before  # no new connection: the same pooled one served all 20 requests


def test_contexts_of_concurrent_requests_see_the_same_values() -> None:
    async def request(i: int) -> object:
        cache = RedisCache(URL, {})
        await cache.aset(f"pool-test-async-{i}", i)
        return await cache.aget(f"pool-test-async-{i}")

    async def main() -> list[object]:
        return list(await asyncio.gather(*(request(i) for i in range(8))))

    assert asyncio.run(main()) == list(range(8))
