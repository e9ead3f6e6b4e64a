"""Pool services: the one door the rest of the portal uses to run a chat completion on the engines."""

from __future__ import annotations

from collections.abc import AsyncIterator

from inference_pool.types import ChatRequest, PoolEvent


async def pool_stream(*, request: ChatRequest) -> AsyncIterator[PoolEvent]:
    """Stream one chat completion through the router.

    Yields ``TokenEvent``s, then one ``UsageEvent`` and one ``DoneEvent``; a failure after the first token ends
    with an ``ErrorEvent`` instead of ``DoneEvent`` (the caller keeps the text it has). Before the first token it
    raises ``portal.errors.Busy`` (every backend saturated after a bounded wait), ``portal.errors.UpstreamError``
    (no backend could serve it) or ``portal.errors.NotFound`` (unknown model or adapter).
    """
    from inference_pool.router import get_router

    async for event in get_router().stream(request):
        yield event
