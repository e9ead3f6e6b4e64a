"""Two real llama-server replicas: adapter routing, failover before the first token, an error after it, and the
circuit breaker opened by failures and closed by a probe after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY

from inference_pool.health import backend_probe_all
from inference_pool.local_engines import ManagedEngine
from inference_pool.models import Backend, BackendAdapter
from inference_pool.router import PoolConfig, Router
from inference_pool.tests.helpers import MODEL, drain, register
from inference_pool.types import ChatRequest, TokenEvent
from tests.engine import make_engine

pytestmark = [pytest.mark.engine, pytest.mark.slow]

COLOR = [{"role": "user", "content": "Name a color."}]
# ~600 prompt tokens: the engine spends a few seconds on the prompt before its first token.
LONG = [
    {
        "role": "user",
        "content": " ".join(
            f"Item {i}: the quarterly report lists revenue, costs and staffing per region." for i in range(45)
        )
        + " Summarise.",
    }
]


def _request(**kw) -> ChatRequest:
    return ChatRequest(**{"messages": COLOR, "model": MODEL, "temperature": 0, "seed": 1, "max_tokens": 8, **kw})


@pytest.fixture(scope="module")
def replicas(lora_files, tmp_path_factory) -> Iterator[tuple[ManagedEngine, ManagedEngine]]:
    """Replica 1 loads adapters A and B; replica 2 loads only B."""
    logs = tmp_path_factory.mktemp("replica-logs")
    one = make_engine(
        slots=2, context=4096, loras=[str(lora_files["A"]), str(lora_files["B"])], log_dir=logs, name="r1"
    )
    two = make_engine(slots=2, context=4096, loras=[str(lora_files["B"])], log_dir=logs, name="r2")
    try:
        one.start(timeout=120)
        two.start(timeout=120)
        yield one, two
    finally:
        one.stop()
        two.stop()


@pytest.fixture
def pool(replicas, lora_files, transactional_db) -> tuple[Backend, Backend]:
    one, two = replicas
    for engine in (one, two):
        if engine.proc is None or engine.proc.poll() is not None:  # a failed test left it dead
            engine.start(timeout=120)
    adapters = {"adapter-a": lora_files["A"], "adapter-b": lora_files["B"]}
    # Adapter A is *placed* on both rows, but only replica 1 has it loaded: the probe confirms it there only.
    b1 = register(one, "replica-1", adapters=adapters)
    b2 = register(two, "replica-2", adapters=adapters)
    backend_probe_all()
    return b1, b2


async def test_the_probe_confirms_only_what_each_replica_loaded(pool):
    rows = await database_sync_to_async(
        lambda: {
            (a.backend.name, a.name): (a.confirmed, a.engine_ref)
            for a in BackendAdapter.objects.select_related("backend")
        }
    )()
    assert rows == {
        ("replica-1", "adapter-a"): (True, "0"),
        ("replica-1", "adapter-b"): (True, "1"),
        ("replica-2", "adapter-a"): (False, ""),
        ("replica-2", "adapter-b"): (True, "0"),
    }


async def test_adapter_requests_go_only_to_the_replica_that_serves_it_and_change_the_output(pool):
    b1, b2 = pool
    router = Router(config=PoolConfig(queue_timeout=120))
    try:
        a_results = await asyncio.gather(*(drain(router.stream(_request(adapter="adapter-a"))) for _ in range(4)))
        assert [r.done.telemetry.backend for r in a_results] == ["replica-1"] * 4
        assert all(r.done.telemetry.adapter == "adapter-a" for r in a_results)
        assert len({r.text for r in a_results}) == 1  # temperature 0, same seed: the same answer every time
        # Base model on each replica: every loaded adapter at scale 0, so both give the plain model's answer.
        base = {}
        for backend in (b1, b2):
            events = [e async for e in router.clients[backend.pk].stream_chat(_request())]
            base[backend.name] = "".join(e.text for e in events if isinstance(e, TokenEvent))
        assert base["replica-1"] == base["replica-2"]
        b_result = await drain(router.stream(_request(adapter="adapter-b")))
        assert b_result.done.telemetry.backend in {"replica-1", "replica-2"}
        a_text, b_text, base_text = a_results[0].text, b_result.text, base["replica-1"]
        assert a_text != base_text and b_text != base_text and a_text != b_text
    finally:
        await router.aclose()


async def test_a_replica_killed_before_the_first_token_fails_over_and_a_probe_closes_its_breaker(pool, replicas):
    _, b2 = pool
    _, two = replicas
    await database_sync_to_async(Backend.objects.filter(pk=b2.pk).update)(weight=100.0)  # replica 2 is preferred
    router = Router(config=PoolConfig(breaker_threshold=1, breaker_cooldown=300, queue_timeout=120))
    try:
        task = asyncio.create_task(drain(router.stream(_request(messages=LONG, max_tokens=4))))
        while (await router.inflight.counts([b2.pk]))[b2.pk] == 0:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the engine is busy with the prompt: no token yet
        await asyncio.to_thread(two.kill)
        result = await task
        t = result.done.telemetry
        assert (t.backend, t.outcome, t.attempts) == ("replica-1", "ok", 2)
        assert result.tokens and result.error is None
        # The breaker opened on that failure, and the row says so (passive marking).
        assert router.breakers[b2.pk].state == "open"
        await router.drain_background()
        row = await database_sync_to_async(Backend.objects.get)(pk=b2.pk)
        assert (row.breaker, row.consecutive_failures) == ("open", 1)
        assert REGISTRY.get_sample_value("portal_pool_breaker_open", {"backend": "replica-2"}) == 1
        # While open, the preferred replica gets nothing.
        assert (await drain(router.stream(_request(max_tokens=2)))).done.telemetry.backend == "replica-1"
        # Restart it; the active probe finds it up and closes the breaker; traffic returns.
        await asyncio.to_thread(two.start, timeout=120)
        await database_sync_to_async(backend_probe_all)()
        row = await database_sync_to_async(Backend.objects.get)(pk=b2.pk)
        assert (row.health, row.breaker) == ("up", "closed")
        await router.refresh()
        assert router.breakers[b2.pk].state == "closed"
        assert (await drain(router.stream(_request(max_tokens=2)))).done.telemetry.backend == "replica-2"
    finally:
        await router.aclose()


async def test_a_replica_dying_after_the_first_token_ends_with_an_error_event_and_keeps_the_text(pool, replicas):
    _, b2 = pool
    _, two = replicas
    await database_sync_to_async(Backend.objects.filter(pk=b2.pk).update)(weight=100.0)
    router = Router(config=PoolConfig(breaker_threshold=1, breaker_cooldown=300))
    try:
        events = router.stream(_request(max_tokens=200, messages=[{"role": "user", "content": "Write a long story."}]))
        first = await anext(events)
        assert isinstance(first, TokenEvent)
        await asyncio.to_thread(two.kill)
        rest = await drain(events)
        assert rest.error is not None and rest.done is None
        assert rest.error.code == "upstream_interrupted"
        assert "text so far is kept" in rest.error.message
        t = rest.error.telemetry
        assert (t.backend, t.outcome) == ("replica-2", "error")
        assert t.tokens_out == 1 + len(rest.tokens) >= 1  # counted by the pool: the engine never sent its usage
        assert router.breakers[b2.pk].state == "open"
    finally:
        await router.aclose()
        await asyncio.to_thread(two.start, timeout=120)
