"""Capacity planning: how much GPU memory a model's weights take, what one token of KV cache costs, and how many
full-context sequences fit beside the weights. Pure functions (the admin console renders them).

- weights = parameters x bytes per weight (fp16/bf16 2, fp8/int8 1, int4 0.5): a 70B model is ~140 GB at FP16,
  70 GB at INT8, 35 GB at INT4 (GB = 10⁹ bytes, as GPU data sheets count);
- KV cache per token = 2 (K and V) x layers x KV heads x head dim x bytes per KV element;
- concurrency = (usable memory - weights) / (KV per token x context), usable memory being the GPUs' total times the
  fraction an engine may take (vLLM's ``--gpu-memory-utilization``, 0.9 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import InvalidInput
from inference_pool.errors import PoolErrorCode

GB = 1_000_000_000

BYTES_PER_WEIGHT: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    params_b: float
    precision: str
    kv_precision: str
    weights_gb: float
    kv_bytes_per_token: int
    kv_gb_per_sequence: float
    usable_gb: float
    free_gb: float
    concurrent_sequences: int
    fits: bool

    @property
    def summary(self) -> str:
        if not self.fits:
            return (
                f"The weights ({self.weights_gb:.0f} GB at {self.precision}) do not fit in {self.usable_gb:.0f} GB; "
                "use more GPUs (tensor parallelism) or a smaller precision."
            )
        return (
            f"{self.weights_gb:.1f} GB of weights at {self.precision}, {self.kv_bytes_per_token / 1024:.0f} KiB of KV "
            f"cache per token: {self.concurrent_sequences} full-context sequences fit in {self.free_gb:.1f} GB."
        )


def bytes_per_weight(precision: str) -> float:
    try:
        return BYTES_PER_WEIGHT[precision.lower()]
    except KeyError:
        raise InvalidInput(
            f"Unknown precision “{precision}”; use one of {', '.join(BYTES_PER_WEIGHT)}.", code=PoolErrorCode.PRECISION
        ) from None


def weights_gb(*, params_b: float, precision: str) -> float:
    return params_b * 1e9 * bytes_per_weight(precision) / GB


def kv_bytes_per_token(*, layers: int, kv_heads: int, head_dim: int, kv_precision: str = "fp16") -> int:
    return int(2 * layers * kv_heads * head_dim * bytes_per_weight(kv_precision))


def capacity_plan(
    *,
    params_b: float,
    precision: str,
    layers: int,
    kv_heads: int,
    head_dim: int,
    context: int,
    gpu_memory_gb: float,
    gpus: int = 1,
    kv_precision: str = "fp16",
    memory_utilization: float = 0.9,
) -> CapacityPlan:
    """Weights, KV bytes per token and how many ``context``-long sequences fit on ``gpus`` x ``gpu_memory_gb``."""
    for name, value in (("layers", layers), ("kv_heads", kv_heads), ("head_dim", head_dim), ("context", context)):
        if value <= 0:
            raise InvalidInput(f"{name} must be a positive number.", code=PoolErrorCode.CAPACITY)
    if params_b <= 0 or gpu_memory_gb <= 0 or gpus <= 0:
        raise InvalidInput("Parameters, GPU memory and GPU count must be positive.", code=PoolErrorCode.CAPACITY)
    if not 0 < memory_utilization <= 1:
        raise InvalidInput("The memory utilization is a fraction between 0 and 1.", code=PoolErrorCode.CAPACITY)
    weights = weights_gb(params_b=params_b, precision=precision)
    kv_token = kv_bytes_per_token(layers=layers, kv_heads=kv_heads, head_dim=head_dim, kv_precision=kv_precision)
    kv_sequence = kv_token * context / GB
    usable = gpu_memory_gb * gpus * memory_utilization
    free = usable - weights
    sequences = max(0, math.floor(free / kv_sequence)) if free > 0 else 0
    return CapacityPlan(
        params_b=params_b,
        precision=precision.lower(),
        kv_precision=kv_precision.lower(),
        weights_gb=weights,
        kv_bytes_per_token=kv_token,
        kv_gb_per_sequence=kv_sequence,
        usable_gb=usable,
        free_gb=max(free, 0.0),
        concurrent_sequences=sequences,
        fits=free > 0,
    )
