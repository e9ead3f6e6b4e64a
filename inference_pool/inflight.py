"""The portal's own count of requests in flight per backend, with atomic admission against ``max_concurrent``.

``LocalInflight`` counts inside this process. ``RedisInflight`` shares the counts between every web and worker
process: one sorted set per backend holds the lease ids scored by start time, so a process that dies without
releasing only inflates the count until its leases age out (``stale_after``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Protocol

import redis.asyncio as aioredis


class Inflight(Protocol):
    async def counts(self, backend_ids: list[int]) -> dict[int, int]: ...

    async def try_acquire(self, backend_id: int, *, limit: int) -> str | None: ...

    async def release(self, backend_id: int, lease: str) -> None: ...

    async def wait_for_release(self, max_wait: float) -> None: ...

    async def aclose(self) -> None: ...


class LocalInflight:
    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._released = asyncio.Event()

    async def counts(self, backend_ids: list[int]) -> dict[int, int]:
        return {i: self._counts.get(i, 0) for i in backend_ids}

    async def try_acquire(self, backend_id: int, *, limit: int) -> str | None:
        n = self._counts.get(backend_id, 0)
        if n >= limit:
            return None
        self._counts[backend_id] = n + 1
        return "local"

    async def release(self, backend_id: int, lease: str) -> None:
        self._counts[backend_id] = max(0, self._counts.get(backend_id, 0) - 1)
        self._released.set()

    async def wait_for_release(self, max_wait: float) -> None:
        self._released.clear()
        try:
            await asyncio.wait_for(self._released.wait(), min(max_wait, 0.25))
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        return None


# KEYS[1] = the backend's lease set; ARGV = now, stale cutoff, limit, lease id, ttl seconds
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisInflight:
    """In-flight leases shared through Redis (``settings.REDIS_URL``)."""

    def __init__(self, url: str, *, prefix: str = "portal:pool:inflight:", stale_after: float = 900.0) -> None:
        self.redis: Any = aioredis.from_url(url)
        self.prefix = prefix
        self.stale_after = stale_after
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._released = asyncio.Event()

    def _key(self, backend_id: int) -> str:
        return f"{self.prefix}{backend_id}"

    async def counts(self, backend_ids: list[int]) -> dict[int, int]:
        cutoff = time.time() - self.stale_after
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in backend_ids:
                pipe.zcount(self._key(i), cutoff, "+inf")
            values = await pipe.execute()
        return {i: int(v) for i, v in zip(backend_ids, values, strict=True)}

    async def try_acquire(self, backend_id: int, *, limit: int) -> str | None:
        now = time.time()
        lease = uuid.uuid4().hex
        ok = await self._acquire(
            keys=[self._key(backend_id)],
            args=[now, now - self.stale_after, limit, lease, int(self.stale_after) + 60],
        )
        return lease if ok else None

    async def release(self, backend_id: int, lease: str) -> None:
        await self.redis.zrem(self._key(backend_id), lease)
        self._released.set()

    async def wait_for_release(self, max_wait: float) -> None:
        # Releases in other processes are not signalled here: poll at a short interval as well.
        self._released.clear()
        try:
            await asyncio.wait_for(self._released.wait(), min(max_wait, 0.05))
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        await self.redis.aclose()
