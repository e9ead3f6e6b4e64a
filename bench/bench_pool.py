"""The inference pool's own overhead (``make bench-pool``).

1. Against a ZERO-DELAY FAKE OpenAI-compatible streaming server (``bench.fake_engine.FakeZeroDelayEngine``, a
   separate process, defined only for benchmarks to isolate the portal; the test suite never fakes an engine):
   time to first token (TTFT) and time per output token (TPOT) through ``pool_stream`` (router, breaker, in-flight
   lease, the ``huggingface_hub``-built request, SSE parsing, telemetry and Prometheus metrics) versus a minimal direct
   client on the same HTTP stack, at concurrency 1, 16 and 64 (at least 300 requests each way, interleaved: each
   worker alternates a direct and a pooled call, so both see the same load); and the relay's
   throughput in tokens per CPU-second of the portal's process (the fake server's CPU is not counted).
2. Against a real llama-server (SmolLM2-135M): TTFT/TPOT through the pool versus the same engine called directly.

Ends with one line: ``added_ttft_p50_ms=<x> added_ttft_p99_ms=<x> relay_tokens_per_s_per_core=<x>`` (against the
zero-delay engine; added TTFT is the pool's percentile minus the direct client's, the worst of the three
concurrency levels).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_engine import FakeZeroDelayEngine

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


# --- measurements ----------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    tokens: int = 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


async def direct_one(client, url: str, model: str, max_tokens: int, sample: Sample, extra: dict) -> None:
    """The baseline: a minimal client on the same HTTP stack (httpx2), parsing each SSE event."""
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello to the team."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    started = time.perf_counter()
    first = last = 0.0
    n = 0
    loads = json.loads
    async with client.stream("POST", f"{url}/v1/chat/completions", json=payload) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            obj = loads(line[5:])
            choices = obj.get("choices")
            if choices and (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                if not n:
                    first = last
                n += 1
    if n:
        sample.ttft.append(first - started)
        if n > 1:
            sample.tpot.append((last - first) / (n - 1))
    sample.tokens += n


async def pool_one(request, sample: Sample) -> None:
    from inference_pool.services import pool_stream
    from inference_pool.types import DoneEvent, TokenEvent

    started = time.perf_counter()
    first = last = 0.0
    n = 0
    async for event in pool_stream(request=request):
        if type(event) is TokenEvent:
            last = time.perf_counter()
            if not n:
                first = last
            n += 1
        elif type(event) is DoneEvent:
            assert event.telemetry.outcome == "ok"
    if n:
        sample.ttft.append(first - started)
        if n > 1:
            sample.tpot.append((last - first) / (n - 1))
    sample.tokens += n


async def run_level(make_call, concurrency: int, total: int) -> tuple[Sample, float, float]:
    """Run ``total`` calls with ``concurrency`` in flight; returns the sample, wall seconds and CPU seconds."""
    sample = Sample()
    queue = iter(range(total))

    async def worker() -> None:
        for _ in queue:
            await make_call(sample)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sample, time.perf_counter() - wall0, time.process_time() - cpu0


async def run_interleaved(direct, pooled, concurrency: int, per_path: int) -> tuple[Sample, Sample]:
    """A/B in the same event loop: ``concurrency`` workers, each alternating a direct call and a pool call, so both
    paths see the same load (of this loop and of the shared machine) at the same moments."""
    d, p = Sample(), Sample()
    jobs = iter(range(2 * per_path))

    async def worker(i: int) -> None:
        turn = i % 2
        for _ in jobs:
            await (direct(d) if turn == 0 else pooled(p))
            turn ^= 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return d, p


def fmt_ms(x: float) -> str:
    return f"{x * 1000:.3f}"


async def bench_fake(url: str, args: argparse.Namespace) -> dict:
    import httpx2

    from inference_pool.types import ChatRequest

    model = "bench-model"
    request = ChatRequest(
        messages=[{"role": "user", "content": "Say hello to the team."}],
        model=model,
        max_tokens=args.tokens,
        temperature=0,
    )
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256)
    out: dict = {"levels": {}}
    async with httpx2.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:

        async def direct(sample: Sample) -> None:
            await direct_one(client, url, model, args.tokens, sample, {})

        async def pooled(sample: Sample) -> None:
            await pool_one(request, sample)

        # warm up both paths (connections, snapshot, JIT-less caches)
        await run_level(direct, 8, 64)
        await run_level(pooled, 8, 64)
        for c in (1, 16, 64):
            total = max(args.requests, 5 * c)
            d, p = await run_interleaved(direct, pooled, c, total)
            out["levels"][c] = {"direct": d, "pool": p, "n": total}
        # relay throughput: long answers, tokens per CPU-second of this process
        long_request = ChatRequest(messages=request.messages, model=model, max_tokens=args.relay_tokens, temperature=0)

        async def pooled_long(sample: Sample) -> None:
            await pool_one(long_request, sample)

        async def direct_long(sample: Sample) -> None:
            await direct_one(client, url, model, args.relay_tokens, sample, {})

        d, _, dcpu = await run_level(direct_long, 16, args.relay_requests)
        p, pwall, pcpu = await run_level(pooled_long, 16, args.relay_requests)
        out["relay"] = {
            "pool_tokens_per_cpu_s": p.tokens / pcpu,
            "direct_tokens_per_cpu_s": d.tokens / dcpu,
            "pool_tokens_per_wall_s": p.tokens / pwall,
            "tokens": p.tokens,
        }
    return out


async def bench_engine(url: str, args: argparse.Namespace, model: str) -> dict:
    import httpx2

    from inference_pool.types import ChatRequest

    request = ChatRequest(
        messages=[{"role": "user", "content": "Say hello to the team."}],
        model=model,
        max_tokens=args.engine_tokens,
        temperature=0,
    )
    out = {}
    async with httpx2.AsyncClient(timeout=300, trust_env=False) as client:

        async def direct(sample: Sample) -> None:
            await direct_one(client, url, model, args.engine_tokens, sample, {"lora": []})

        async def pooled(sample: Sample) -> None:
            await pool_one(request, sample)

        await run_level(direct, 1, 2)
        await run_level(pooled, 1, 2)
        for c in (1, 4):
            d, p = await run_interleaved(direct, pooled, c, args.engine_requests)
            out[c] = {"direct": d, "pool": p}
    return out


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "inference_pool", verbosity=0)


def register(name: str, url: str, model: str, kind: str, max_concurrent: int) -> None:
    from inference_pool.models import Backend, BaseModel

    Backend.objects.filter(base_model__name=model).delete()
    base, _ = BaseModel.objects.get_or_create(name=model)
    Backend.objects.create(
        name=name, kind=kind, base_url=url, base_model=base, max_concurrent=max_concurrent, health="up"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per concurrency level (>= 300)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per answer for the TTFT/TPOT levels")
    parser.add_argument("--relay-tokens", type=int, default=1024, help="tokens per answer for the relay run")
    parser.add_argument("--relay-requests", type=int, default=64)
    parser.add_argument("--engine-requests", type=int, default=12, help="requests per level on the real engine")
    parser.add_argument("--engine-tokens", type=int, default=16)
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()

    # The fake engine runs in its own process, forked before Django (and its database) start.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    fake_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fake = multiprocessing.get_context("fork").Process(target=FakeZeroDelayEngine().serve, args=(sock,), daemon=True)
    fake.start()
    sock.close()

    setup_django()
    from django.conf import settings

    register("bench-fake-zero-delay", fake_url, "bench-model", "openai", 256)
    runner = uvloop.run if uvloop else asyncio.run
    print(
        f"pool in-flight counting: {'redis' if settings.REDIS_URL else 'in-process'}; "
        f"event loop: {'uvloop' if uvloop else 'asyncio'}; cores: {os.cpu_count()}",
        flush=True,
    )
    try:
        fake_res = runner(bench_fake(fake_url, args))
    finally:
        fake.terminate()
        fake.join(5)

    print("\nzero-delay fake engine (isolates the portal): TTFT and TPOT in ms")
    print(
        f"{'conc':>4} {'n':>5} | {'direct p50':>10} {'p99':>8} | {'pool p50':>9} {'p99':>8} | "
        f"{'added p50':>9} {'p99':>8} | {'TPOT dir p50':>12} {'pool p50':>9} {'pool p99':>9}"
    )
    added50 = added99 = 0.0
    for c, lv in fake_res["levels"].items():
        d, p = lv["direct"], lv["pool"]
        a50 = pct(p.ttft, 50) - pct(d.ttft, 50)
        a99 = pct(p.ttft, 99) - pct(d.ttft, 99)
        added50, added99 = max(added50, a50), max(added99, a99)
        print(
            f"{c:>4} {lv['n']:>5} | {fmt_ms(pct(d.ttft, 50)):>10} {fmt_ms(pct(d.ttft, 99)):>8} | "
            f"{fmt_ms(pct(p.ttft, 50)):>9} {fmt_ms(pct(p.ttft, 99)):>8} | {fmt_ms(a50):>9} {fmt_ms(a99):>8} | "
            f"{fmt_ms(pct(d.tpot, 50)):>12} {fmt_ms(pct(p.tpot, 50)):>9} {fmt_ms(pct(p.tpot, 99)):>9}"
        )
        print(
            f"{'':>4} ratios pool/direct: TTFT p50 {pct(p.ttft, 50) / pct(d.ttft, 50):.2f} "
            f"p95 {pct(p.ttft, 95) / pct(d.ttft, 95):.2f} p99 {pct(p.ttft, 99) / pct(d.ttft, 99):.2f}; "
            f"TPOT p50 {pct(p.tpot, 50) / pct(d.tpot, 50):.2f} p99 {pct(p.tpot, 99) / pct(d.tpot, 99):.2f}"
        )
    relay = fake_res["relay"]
    print(
        f"\nrelay ({args.relay_tokens} tokens x {args.relay_requests} answers, 16 at once): "
        f"pool {relay['pool_tokens_per_cpu_s']:,.0f} tokens per CPU-second "
        f"(direct client {relay['direct_tokens_per_cpu_s']:,.0f}; ratio "
        f"{relay['pool_tokens_per_cpu_s'] / relay['direct_tokens_per_cpu_s']:.2f}), "
        f"{relay['pool_tokens_per_wall_s']:,.0f} tokens/s wall"
    )

    if not args.skip_engine:
        bench_real_engine(args, runner)

    print(
        f"added_ttft_p50_ms={added50 * 1000:.3f} added_ttft_p99_ms={added99 * 1000:.3f} "
        f"relay_tokens_per_s_per_core={relay['pool_tokens_per_cpu_s']:.0f}"
    )


def bench_real_engine(args: argparse.Namespace, runner) -> None:
    from django.conf import settings

    from inference_pool.local_engines import EngineSpec, ManagedEngine

    if not Path(settings.LLAMA_SERVER_BIN).is_file():
        print("\nreal engine: skipped (llama-server is not built; run `make engine`)")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = EngineSpec(
        name="bench-llama",
        port=port,
        model_path=settings.LLAMA_MODEL_PATH,
        binary=settings.LLAMA_SERVER_BIN,
        slots=4,
        context=4 * 1024,
    )
    engine = ManagedEngine(spec)
    engine.start(timeout=120)
    try:
        register("bench-llama", spec.base_url, settings.LLAMA_MODEL_NAME, "llamacpp", 4)
        res = runner(bench_engine(spec.base_url, args, settings.LLAMA_MODEL_NAME))
    finally:
        engine.stop()
    print(
        f"\nreal llama-server (SmolLM2-135M Q4_1, {args.engine_tokens} tokens, {args.engine_requests} requests "
        "per level): ms, pool/direct ratios"
    )
    for c, lv in res.items():
        d, p = lv["direct"], lv["pool"]
        print(
            f"  concurrency {c}: TTFT p50 direct {fmt_ms(pct(d.ttft, 50))} pool {fmt_ms(pct(p.ttft, 50))} "
            f"(x{pct(p.ttft, 50) / pct(d.ttft, 50):.3f}), p99 direct {fmt_ms(pct(d.ttft, 99))} pool "
            f"{fmt_ms(pct(p.ttft, 99))} (x{pct(p.ttft, 99) / pct(d.ttft, 99):.3f}); TPOT p50 direct "
            f"{fmt_ms(pct(d.tpot, 50))} pool {fmt_ms(pct(p.tpot, 50))} (x{pct(p.tpot, 50) / pct(d.tpot, 50):.3f})"
        )


if __name__ == "__main__":
    main()
