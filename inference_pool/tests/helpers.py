"""Helpers for the pool's engine tests: register real llama-server processes as backends and drain streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from inference_pool.local_engines import ManagedEngine
from inference_pool.models import Backend, BackendAdapter, BaseModel
from inference_pool.types import DoneEvent, ErrorEvent, PoolEvent, TokenEvent, UsageEvent

MODEL = "smollm2-135m-instruct"


def register(
    engine: ManagedEngine,
    name: str,
    *,
    weight: float = 1.0,
    max_concurrent: int | None = None,
    adapters: dict[str, Path] | None = None,
) -> Backend:
    base, _ = BaseModel.objects.get_or_create(name=MODEL, defaults={"params_b": 0.135, "context_length": 8192})
    backend = Backend.objects.create(
        name=name,
        kind="llamacpp",
        base_url=engine.spec.base_url,
        base_model=base,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=max_concurrent or engine.spec.slots,
        context_length=engine.spec.context // engine.spec.slots,
        weight=weight,
    )
    for adapter, path in (adapters or {}).items():
        BackendAdapter.objects.create(backend=backend, name=adapter, source_path=str(path))
    return backend


@dataclass
class Result:
    tokens: list[str] = field(default_factory=list)
    usage: UsageEvent | None = None
    done: DoneEvent | None = None
    error: ErrorEvent | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def telemetry(self):
        return (self.done or self.error).telemetry  # type: ignore[union-attr]


async def drain(events) -> Result:
    result = Result()
    event: PoolEvent
    async for event in events:
        if isinstance(event, TokenEvent):
            result.tokens.append(event.text)
        elif isinstance(event, UsageEvent):
            result.usage = event
        elif isinstance(event, DoneEvent):
            result.done = event
        elif isinstance(event, ErrorEvent):
            result.error = event
    return result
