"""Router resilience against engines that time out, fail or refuse (recorded vLLM responses served locally)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from core.errors import InvalidInput, UpstreamError
from inference_pool.models import Backend, BaseModel
from inference_pool.router import PoolConfig, Router
from inference_pool.tests.fixture_server import Route, fixture_server
from inference_pool.tests.helpers import drain
from inference_pool.types import ChatRequest

CHAT = ("POST", "/v1/chat/completions")
REQUEST = ChatRequest(messages=[{"role": "user", "content": "Hello"}], model="llama-3.1-8b", max_tokens=16)


def _register(servers: dict[str, str], weights: dict[str, float] | None = None) -> dict[str, int]:
    base, _ = BaseModel.objects.get_or_create(name="llama-3.1-8b")
    return {
        name: Backend.objects.create(
            name=name, kind="vllm", base_url=url, base_model=base, weight=(weights or {}).get(name, 1.0)
        ).pk
        for name, url in servers.items()
    }


@pytest.fixture
def ok_route() -> Route:
    return Route.file("vllm/chat_stream_adapter.sse")


async def test_a_backend_silent_past_the_first_token_timeout_is_abandoned_for_another(transactional_db, ok_route):
    slow_route = Route.file("vllm/chat_stream_adapter.sse")
    slow_route.delay = 3.0
    with fixture_server({CHAT: slow_route}) as slow, fixture_server({CHAT: ok_route}) as fast:
        ids = await database_sync_to_async(_register)({"slow": slow.url, "fast": fast.url}, {"slow": 100.0})
        router = Router(config=PoolConfig(first_token_timeout=0.5, breaker_threshold=1))
        try:
            result = await drain(router.stream(REQUEST))
        finally:
            await router.aclose()
    t = result.done.telemetry
    assert (t.backend, t.attempts, t.outcome) == ("fast", 2, "ok")
    assert result.text == "SELECT name FROM employees;"
    assert router.breakers[ids["slow"]].state == "open"
    assert 0.5 <= t.ttft_s < 3.0


async def test_an_unknown_adapter_on_one_backend_is_retried_elsewhere_without_tripping_its_breaker(
    transactional_db, ok_route
):
    missing = Route.file("vllm/error_unknown_model.json", status=404)
    with fixture_server({CHAT: missing}) as a, fixture_server({CHAT: ok_route}) as b:
        ids = await database_sync_to_async(_register)({"a": a.url, "b": b.url}, {"a": 100.0})
        router = Router(config=PoolConfig(breaker_threshold=1))
        try:
            result = await drain(router.stream(REQUEST))
        finally:
            await router.aclose()
    assert (result.done.telemetry.backend, result.done.telemetry.attempts) == ("b", 2)
    assert router.breakers[ids["a"]].state == "closed"


async def test_a_request_the_engine_refuses_is_not_retried(transactional_db, ok_route):
    refused = Route.file("vllm/error_context_length.json", status=400)
    with fixture_server({CHAT: refused}) as a, fixture_server({CHAT: ok_route}) as b:
        await database_sync_to_async(_register)({"a": a.url, "b": b.url}, {"a": 100.0})
        router = Router()
        try:
            with pytest.raises(InvalidInput, match="maximum context length is 8192"):
                await drain(router.stream(REQUEST))
        finally:
            await router.aclose()
        assert b.requests == []


async def test_at_most_two_retries_then_upstream_error(transactional_db):
    broken = Route(status=500, body=b'{"error":{"message":"CUDA error: an illegal memory access","code":500}}')
    servers = [fixture_server({CHAT: broken}) for _ in range(4)]
    entered = [s.__enter__() for s in servers]
    try:
        await database_sync_to_async(_register)({f"b{i}": s.url for i, s in enumerate(entered)})
        router = Router(config=PoolConfig(breaker_threshold=5))
        try:
            with pytest.raises(UpstreamError, match="after 3 attempt") as info:
                await drain(router.stream(REQUEST))
        finally:
            await router.aclose()
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    assert info.value.details == {"attempts": 3}
    assert sum(len(s.requests) for s in entered) == 3
    assert "illegal memory access" in info.value.message
