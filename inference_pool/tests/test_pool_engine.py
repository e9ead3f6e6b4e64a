"""The pool end to end against a real llama-server (the session's shared 8-slot engine)."""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command
from prometheus_client import REGISTRY

from core.errors import Busy, NotFound, UpstreamError
from inference_pool.health import backend_probe_all, engine_health
from inference_pool.inflight import RedisInflight
from inference_pool.models import Backend
from inference_pool.router import PoolConfig, Router
from inference_pool.selectors import served_model_list
from inference_pool.services import pool_stream
from inference_pool.tests.helpers import MODEL, drain, register
from inference_pool.types import ChatRequest, DoneEvent, TokenEvent

pytestmark = [pytest.mark.engine]

HELLO = [{"role": "user", "content": "Say hello to the team."}]


def _request(**kw) -> ChatRequest:
    return ChatRequest(**{"messages": HELLO, "model": MODEL, "temperature": 0, "seed": 1, "max_tokens": 8, **kw})


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _engine_counters(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {m[0]: float(m[1]) for m in re.findall(r"^(llamacpp:[a-z_]+) ([0-9.e+]+)$", text, re.M)}


@pytest.fixture
def shared(llama_server, transactional_db) -> Backend:
    backend = register(llama_server, "shared-engine")
    backend_probe_all()
    backend.refresh_from_db()
    return backend


async def test_stream_end_to_end_with_usage_matching_the_engine(shared, llama_server):
    before = await database_sync_to_async(_engine_counters)(llama_server.spec.base_url)
    ok_before = _metric("portal_llm_requests_total", {"backend": "shared-engine", "model": MODEL, "outcome": "ok"})
    ttft_before = _metric("portal_ttft_seconds_count", {"backend": "shared-engine", "model": MODEL, "adapter": "-"})

    result = await drain(pool_stream(request=_request()))

    after = await database_sync_to_async(_engine_counters)(llama_server.spec.base_url)
    assert result.text.strip()
    assert result.error is None and result.done is not None
    t = result.done.telemetry
    assert (t.backend, t.model, t.adapter, t.outcome, t.attempts) == ("shared-engine", MODEL, None, "ok", 1)
    assert t.usage_from_engine is True
    # The engine's own usage: one streamed chunk per generated token, and its counters moved by as much.
    assert t.tokens_out == result.usage.completion_tokens == len(result.tokens)
    assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == t.tokens_out
    async with httpx.AsyncClient(timeout=60) as client:
        direct = (
            await client.post(
                f"{llama_server.spec.base_url}/v1/chat/completions",
                json={"messages": HELLO, "max_tokens": 1, "temperature": 0},
            )
        ).json()["usage"]
    assert t.tokens_in == result.usage.prompt_tokens == direct["prompt_tokens"]
    assert t.ttft_s is not None and 0 < t.ttft_s < t.duration_s
    assert t.tpot_s is not None and t.tpot_s > 0
    # Exported to Prometheus
    assert (
        _metric("portal_llm_requests_total", {"backend": "shared-engine", "model": MODEL, "outcome": "ok"})
        == ok_before + 1
    )
    assert (
        _metric("portal_ttft_seconds_count", {"backend": "shared-engine", "model": MODEL, "adapter": "-"})
        == ttft_before + 1
    )


async def test_eight_concurrent_streams_all_complete(shared):
    router = Router()
    try:
        results = await asyncio.gather(*(drain(router.stream(_request(max_tokens=6, seed=i))) for i in range(8)))
        assert all(r.done is not None and r.done.telemetry.outcome == "ok" for r in results)
        assert all(r.done.telemetry.tokens_out == len(r.tokens) > 0 for r in results)
        assert (await router.inflight.counts([shared.pk]))[shared.pk] == 0
    finally:
        await router.aclose()


async def test_busy_after_a_bounded_wait_when_every_backend_is_full(shared):
    await database_sync_to_async(Backend.objects.filter(pk=shared.pk).update)(max_concurrent=1)
    router = Router(config=PoolConfig(queue_timeout=0.3, retry_after=3))
    try:
        first = router.stream(_request(max_tokens=24))
        assert isinstance(await anext(first), TokenEvent)  # holds the only slot
        started = asyncio.get_running_loop().time()
        with pytest.raises(Busy) as info:
            await drain(router.stream(_request()))
        waited = asyncio.get_running_loop().time() - started
        assert info.value.retry_after == 3
        assert 0.25 <= waited < 3
        rest = await drain(first)
        assert rest.done is not None and rest.done.telemetry.outcome == "ok"
        # The slot is free again: the next request is served.
        assert (await drain(router.stream(_request()))).done is not None
    finally:
        await router.aclose()


async def test_a_caller_that_goes_away_frees_the_slot(shared):
    router = Router()
    try:
        events = router.stream(_request(max_tokens=40))
        assert isinstance(await anext(events), TokenEvent)
        assert (await router.inflight.counts([shared.pk]))[shared.pk] == 1
        await events.aclose()
        assert (await router.inflight.counts([shared.pk]))[shared.pk] == 0
    finally:
        await router.aclose()


async def test_unknown_model_or_adapter_is_not_found_and_no_backend_is_upstream_error(shared):
    with pytest.raises(NotFound):
        await drain(pool_stream(request=ChatRequest(messages=HELLO, model="gpt-17")))
    with pytest.raises(NotFound):
        await drain(pool_stream(request=_request(adapter="no-such-adapter")))
    await database_sync_to_async(Backend.objects.filter(pk=shared.pk).update)(enabled=False)
    router = Router()
    try:
        with pytest.raises(UpstreamError):
            await drain(router.stream(_request()))
    finally:
        await router.aclose()


async def test_in_flight_counts_are_shared_through_redis(shared):
    prefix = f"test:pool:{uuid.uuid4().hex}:"
    url = "redis://127.0.0.1:6379/5"
    await database_sync_to_async(Backend.objects.filter(pk=shared.pk).update)(max_concurrent=1)
    one = Router(config=PoolConfig(queue_timeout=0.2), inflight=RedisInflight(url, prefix=prefix))
    two = Router(config=PoolConfig(queue_timeout=0.2), inflight=RedisInflight(url, prefix=prefix))
    try:
        held = one.stream(_request(max_tokens=24))
        assert isinstance(await anext(held), TokenEvent)
        assert (await two.inflight.counts([shared.pk]))[shared.pk] == 1  # seen from the other "process"
        with pytest.raises(Busy):
            await drain(two.stream(_request()))
        await drain(held)
        assert (await two.inflight.counts([shared.pk]))[shared.pk] == 0
        assert (await drain(two.stream(_request()))).done is not None
    finally:
        await one.inflight.redis.delete(f"{prefix}{shared.pk}")
        await one.aclose()
        await two.aclose()


async def test_redis_leases_of_a_dead_process_age_out():
    prefix = f"test:pool:{uuid.uuid4().hex}:"
    inflight = RedisInflight("redis://127.0.0.1:6379/5", prefix=prefix, stale_after=0.5)
    try:
        assert await inflight.try_acquire(7, limit=1) is not None
        assert await inflight.try_acquire(7, limit=1) is None
        await asyncio.sleep(0.6)  # the holder never released (crashed)
        lease = await inflight.try_acquire(7, limit=1)
        assert lease is not None
        await inflight.release(7, lease)
        assert (await inflight.counts([7]))[7] == 0
    finally:
        await inflight.redis.delete(f"{prefix}7")
        await inflight.aclose()


def test_pool_prompt_command_prints_the_answer_and_its_timings(shared, capsys):
    call_command("pool_prompt", "Say hello.", "--max-tokens", "6", "--temperature", "0")
    out = capsys.readouterr().out
    assert re.search(r"TTFT [0-9.]+ ms · TPOT [0-9.]+ ms · tokens in \d+ / out 6 · backend shared-engine", out)
    assert out.split("\n")[0].strip()  # the streamed answer


def test_pool_prompt_command_explains_an_unknown_model(shared):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not known to the pool"):
        call_command("pool_prompt", "hi", "--model", "nope")


def test_pool_sync_local_registers_the_managed_engines(llama_server, db, settings):
    settings.ENGINE_BASE_PORT = llama_server.spec.port
    settings.ENGINE_REPLICAS = 1
    call_command("pool_sync_local")
    call_command("pool_sync_local")  # idempotent
    (row,) = Backend.objects.all()
    assert (row.name, row.kind, row.base_url, row.managed) == (
        "local-llamacpp-0",
        "llamacpp",
        llama_server.spec.base_url,
        True,
    )
    assert row.health == "up" and row.base_model.name == MODEL
    # the base model's row describes the configured model (PORTAL_MODEL=smollm2 in the suite)
    assert (row.base_model.family, row.base_model.layers, row.base_model.kv_heads) == ("SmolLM2", 30, 3)
    settings.ENGINE_REPLICAS = 0
    call_command("pool_sync_local")
    row.refresh_from_db()
    assert row.enabled is False


def test_pool_sync_local_records_the_chosen_models_shape(db, settings):
    """With the default model (PORTAL_MODEL=qwen) the engine row's base model is Qwen's, with its KV shape (the
    capacity planner reads it)."""
    settings.ENGINE_REPLICAS = 1
    settings.LLAMA_MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
    settings.LLAMA_MODEL_INFO = settings.EMBEDDED_MODELS["qwen"]
    call_command("pool_sync_local")
    (row,) = Backend.objects.all()
    base = row.base_model
    assert (base.name, base.family, base.layers, base.kv_heads, base.head_dim) == (
        "qwen2.5-coder-1.5b-instruct",
        "Qwen2.5-Coder",
        28,
        2,
        128,
    )
    assert row.served_name == "qwen2.5-coder-1.5b-instruct"


def test_engine_health_reports_registered_backends_and_served_models(shared, settings):
    from tests.engine import free_port

    settings.ENGINE_BASE_PORT = free_port()  # the configured local engine is down, but a registered one is up
    report = engine_health()
    assert report == {"ok": True, "backends": {"shared-engine": "ok"}}
    served = served_model_list()
    assert [(s.model, s.adapter, s.backends) for s in served] == [(MODEL, None, ["shared-engine"])]
    Backend.objects.filter(pk=shared.pk).update(base_url=f"http://127.0.0.1:{free_port()}")
    assert engine_health()["ok"] is False


async def test_done_event_is_last_and_telemetry_is_returned(shared):
    events = [e async for e in pool_stream(request=_request(max_tokens=3))]
    assert isinstance(events[-1], DoneEvent)
    assert [e.type for e in events[-2:]] == ["usage", "done"]
