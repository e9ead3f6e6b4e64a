"""Pure parts of the pool: circuit breaker, load score and power of two choices, capacity planner, launch specs,
the llama.cpp lora field and the beat schedule."""

from __future__ import annotations

import time

import pytest
import yaml

from core.errors import InvalidInput, NotFound
from inference_pool.breaker import CircuitBreaker
from inference_pool.capacity import capacity_plan, kv_bytes_per_token, weights_gb
from inference_pool.clients import BackendTarget, llamacpp_lora_field
from inference_pool.inflight import LocalInflight
from inference_pool.launch import LaunchConfig, compose_service, engine_args, kubernetes_deployment, launch_specs
from inference_pool.router import PoolConfig, Router, Snapshot
from inference_pool.types import ChatRequest


# --- breaker -------------------------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_a_success_resets_the_count():
    b = CircuitBreaker(threshold=3, cooldown=10, clock=Clock())
    assert not b.record_failure() and not b.record_failure()
    assert not b.record_success()  # already closed: no transition
    assert not b.record_failure() and not b.record_failure()
    assert b.record_failure()  # third in a row
    assert b.state == "open" and not b.available()


def test_breaker_half_open_lets_one_trial_through_after_the_cooldown():
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown=10, clock=clock)
    b.record_failure()
    clock.now += 9.9
    assert not b.available()
    clock.now += 0.2
    assert b.available()
    b.claim()
    assert b.state == "half_open" and not b.available()  # only one trial at a time
    assert b.record_failure()  # the trial failed: open again, new cooldown
    assert b.state == "open" and not b.available()
    clock.now += 10.1
    b.claim()
    assert b.record_success()
    assert b.state == "closed" and b.failures == 0 and b.available()


def test_breaker_trial_without_a_verdict_lets_another_try():
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown=1, clock=clock)
    b.record_failure()
    clock.now += 2
    b.claim()
    b.release_trial()
    assert b.available()


# --- routing score and selection -------------------------------------------------------------------------------------
def _target(i: int, **kw) -> BackendTarget:
    return BackendTarget(
        id=i, name=f"b{i}", kind="vllm", base_url=f"http://127.0.0.1:{9000 + i}", model="m", model_id="m", **kw
    )


def _snapshot(*targets: BackendTarget, adapters=frozenset()) -> Snapshot:
    return Snapshot(targets=targets, models=frozenset({"m"}), adapters=adapters, taken_at=time.monotonic())


def test_score_prefers_idle_weighted_backends_with_room_in_their_kv_cache():
    r = Router(config=PoolConfig(), inflight=LocalInflight())
    now = time.time()
    idle = _target(1, max_concurrent=8)
    queued = _target(2, max_concurrent=8, load={"running": 6, "waiting": 4}, last_probe_ts=now)
    full_kv = _target(3, max_concurrent=8, load={"kv_usage": 0.95}, last_probe_ts=now)
    heavy = _target(4, max_concurrent=8, weight=4.0)
    mono = time.monotonic()
    s = {t.id: r.score(t, 0, None, mono) for t in (idle, queued, full_kv, heavy)}
    assert s[4] < s[1] < s[3] < s[2]
    # The portal's own count wins over a stale engine signal.
    stale = _target(5, max_concurrent=8, load={"waiting": 50}, last_probe_ts=now - 3600)
    assert r.score(stale, 0, None, mono) == s[1]


def test_adapter_affinity_lowers_the_score_of_a_backend_that_served_it_recently():
    r = Router(config=PoolConfig(), inflight=LocalInflight())
    t = _target(1)
    now = time.monotonic()
    plain = r.score(t, 2, "sql", now)
    r._affinity[(1, "sql")] = now
    assert r.score(t, 2, "sql", now) < plain


async def test_power_of_two_choices_spreads_a_burst_and_respects_max_concurrent():
    targets = [_target(i, max_concurrent=4) for i in range(1, 5)]
    r = Router(config=PoolConfig(queue_timeout=0.05), inflight=LocalInflight())
    snap = _snapshot(*targets)
    request = ChatRequest(messages=[], model="m")
    picks = [await r.acquire(snap, request, exclude=set(), deadline=time.monotonic() + 1) for _ in range(16)]
    counts = await r.inflight.counts([t.id for t in targets])
    assert counts == {1: 4, 2: 4, 3: 4, 4: 4}
    assert len({p[0].id for p in picks[:8]}) >= 3  # a burst is spread, not piled onto one
    from core.errors import Busy

    with pytest.raises(Busy):
        await r.acquire(snap, request, exclude=set(), deadline=time.monotonic() + 0.05)


async def test_only_backends_that_confirmed_the_adapter_are_candidates():
    with_adapter = _target(1, adapters={"sql": "sql-lora"})
    without = _target(2)
    down = _target(3, adapters={"sql": "sql-lora"}, health="down")
    loading = _target(4, adapters={"sql": "sql-lora"}, health="loading")
    r = Router(config=PoolConfig(), inflight=LocalInflight())
    snap = _snapshot(with_adapter, without, down, loading, adapters=frozenset({("m", "sql")}))
    request = ChatRequest(messages=[], model="m", adapter="sql")
    assert [t.id for t in r.candidates(snap, request)] == [1]
    for _ in range(5):
        target, lease = await r.acquire(snap, request, exclude=set(), deadline=time.monotonic() + 1)
        assert target.id == 1
        await r.inflight.release(target.id, lease)
    with pytest.raises(NotFound):
        r.candidates(snap, ChatRequest(messages=[], model="m", adapter="unknown"))
    with pytest.raises(NotFound):
        r.candidates(snap, ChatRequest(messages=[], model="other"))


def test_llamacpp_lora_field_names_every_loaded_adapter():
    assert llamacpp_lora_field((0, 1), None) == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]
    assert llamacpp_lora_field((0, 1), "1") == [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 1.0}]
    assert llamacpp_lora_field((), "2") == [{"id": 2, "scale": 1.0}]
    assert llamacpp_lora_field((), None) == []


# --- capacity planner ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("precision", "gb"), [("fp16", 140), ("bf16", 140), ("fp8", 70), ("int8", 70), ("int4", 35)])
def test_a_70b_model_needs_140_70_35_gb(precision, gb):
    assert weights_gb(params_b=70, precision=precision) == pytest.approx(gb)


def test_kv_cache_and_concurrency_of_llama_70b_on_two_80gb_gpus():
    # Llama-3 70B: 80 layers, 8 KV heads (GQA), head dim 128.
    assert kv_bytes_per_token(layers=80, kv_heads=8, head_dim=128) == 327_680  # 320 KiB per token at fp16
    plan = capacity_plan(
        params_b=70, precision="int4", layers=80, kv_heads=8, head_dim=128, context=8192, gpu_memory_gb=80, gpus=2
    )
    assert plan.weights_gb == pytest.approx(35)
    assert plan.usable_gb == pytest.approx(144)
    assert plan.kv_gb_per_sequence == pytest.approx(327_680 * 8192 / 1e9)
    assert plan.concurrent_sequences == 40  # (144 - 35) / 2.684 GB
    assert plan.fits and "40 full-context sequences" in plan.summary


def test_capacity_plan_says_when_the_weights_do_not_fit():
    plan = capacity_plan(
        params_b=70, precision="fp16", layers=80, kv_heads=8, head_dim=128, context=4096, gpu_memory_gb=80
    )
    assert not plan.fits and plan.concurrent_sequences == 0
    assert "do not fit" in plan.summary
    with pytest.raises(InvalidInput, match="Unknown precision"):
        capacity_plan(params_b=7, precision="int3", layers=32, kv_heads=8, head_dim=128, context=1, gpu_memory_gb=24)


# --- launch specs --------------------------------------------------------------------------------------------------
def test_tgi_launch_spec():
    cfg = LaunchConfig(
        name="tgi-llama",
        kind="tgi",
        model_source="meta-llama/Llama-3.1-70B-Instruct",
        served_name="llama-70b",
        quantization="awq",
        adapters={"sql": "/adapters/sql", "support": "/adapters/support"},
        tensor_parallel=4,
    )
    args = engine_args(cfg)
    assert args[args.index("--quantize") + 1] == "awq"
    assert args[args.index("--num-shard") + 1] == "4"
    assert args[args.index("--lora-adapters") + 1] == "sql=/adapters/sql,support=/adapters/support"
    service = compose_service(cfg)["tgi-llama"]
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 4
    with pytest.raises(InvalidInput, match="pipeline"):
        engine_args(LaunchConfig(name="t", kind="tgi", model_source="m", served_name="m", pipeline_parallel=2))
    with pytest.raises(InvalidInput):
        engine_args(LaunchConfig(name="t", kind="tgi", model_source="m", served_name="m", quantization="q4"))


def test_vllm_launch_spec_with_lora_and_tensor_and_pipeline_parallelism():
    cfg = LaunchConfig(
        name="vllm-llama",
        kind="vllm",
        model_source="meta-llama/Llama-3.1-70B-Instruct",
        served_name="llama-70b",
        quantization="fp8",
        adapters={"sql": "/adapters/sql"},
        max_loras=2,
        tensor_parallel=8,
        pipeline_parallel=2,
        context=8192,
    )
    args = engine_args(cfg)
    for flag, value in [
        ("--quantization", "fp8"),
        ("--tensor-parallel-size", "8"),
        ("--pipeline-parallel-size", "2"),
        ("--max-loras", "2"),
        ("--lora-modules", "sql=/adapters/sql"),
        ("--served-model-name", "llama-70b"),
        ("--max-model-len", "8192"),
    ]:
        assert args[args.index(flag) + 1] == value
    assert "--enable-lora" in args
    manifest = kubernetes_deployment(cfg)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert manifest["kind"] == "Deployment" and container["args"] == args
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8  # one node's GPUs; stages span nodes
    assert "2 nodes" in manifest["metadata"]["annotations"]["portal/pipeline-stages"]


def test_llamacpp_launch_spec_and_yaml():
    cfg = LaunchConfig(
        name="cpu-site",
        kind="llamacpp",
        model_source="/models/smollm2.gguf",
        served_name="smollm2",
        quantization="q4",
        adapters={"b": "/adapters/b.gguf", "a": "/adapters/a.gguf"},
        max_concurrent=4,
        context=2048,
    )
    args = engine_args(cfg)
    assert args[args.index("--parallel") + 1] == "4"
    assert args[args.index("-c") + 1] == "8192"  # per-slot context x slots
    assert args[args.index("--lora") + 1] == "/adapters/a.gguf,/adapters/b.gguf"  # ids 0 and 1 by name
    assert "--lora-init-without-apply" in args and "--metrics" in args
    specs = launch_specs(cfg)
    assert yaml.safe_load(specs["compose"])["services"]["cpu-site"]["command"] == args
    assert yaml.safe_load(specs["kubernetes"])["spec"]["template"]["spec"]["containers"][0]["args"] == args


def test_launch_spec_from_a_registered_backend(db):
    from inference_pool.launch import launch_config_for_backend
    from inference_pool.services import backend_register

    backend = backend_register(
        name="vllm-a",
        kind="vllm",
        base_url="http://gpu-1:8000",
        model="llama-3.1-8b",
        quantization="awq",
        adapters={"sql": "sql-lora"},
    )
    cfg = launch_config_for_backend(backend, model_source="hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4")
    args = engine_args(cfg)
    assert args[args.index("--quantization") + 1] == "awq"
    assert args[args.index("--lora-modules") + 1] == "sql=/adapters/sql"


def test_launch_spec_from_a_fresh_backend_with_an_enum_kind(db):
    """A Backend built in code holds an EngineKind member, which YAML cannot represent unless converted."""
    from inference_pool.launch import launch_config_for_backend
    from inference_pool.models import Backend, BaseModel, EngineKind

    base = BaseModel.objects.create(name="llama-3.1-8b")
    backend = Backend.objects.create(name="tgi-a", kind=EngineKind.TGI, base_url="http://gpu-2:80", base_model=base)
    specs = launch_specs(launch_config_for_backend(backend))
    assert yaml.safe_load(specs["compose"])
    assert "text-generation-inference" in specs["compose"]


def test_the_probe_runs_on_celery_beat_every_few_seconds(settings):
    from inference_pool.tasks import PROBE_SCHEDULE_NAME, probe_backends
    from portal.celery import app

    entry = app.conf.beat_schedule[PROBE_SCHEDULE_NAME]
    assert entry["task"] == probe_backends.name
    assert 1 <= float(entry["schedule"]) <= 10
    assert entry["options"]["expires"] == float(entry["schedule"])
