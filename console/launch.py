"""The console's use of the pool's capacity planner and launch-spec generator (``inference_pool.capacity`` and
``inference_pool.launch``): the planner form, and a backend's specs ready to copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms

from core.errors import InvalidInput
from inference_pool.capacity import BYTES_PER_WEIGHT, CapacityPlan, capacity_plan
from inference_pool.launch import launch_config_for_backend, launch_specs

PRECISIONS = [(p, p.upper()) for p in BYTES_PER_WEIGHT]


class PlannerForm(forms.Form):
    params_b = forms.FloatField(min_value=0.001, max_value=100_000, label="Parameters (billions)", initial=8)
    precision = forms.ChoiceField(choices=PRECISIONS, initial="fp16", label="Weight precision")
    layers = forms.IntegerField(min_value=1, max_value=10_000, initial=32)
    kv_heads = forms.IntegerField(min_value=1, max_value=10_000, initial=8, label="KV heads")
    head_dim = forms.IntegerField(min_value=1, max_value=100_000, initial=128, label="Head dimension")
    context = forms.IntegerField(min_value=1, max_value=100_000_000, initial=8192, label="Context (tokens)")
    gpu_memory_gb = forms.FloatField(min_value=0.1, max_value=100_000, initial=80, label="GPU memory (GB each)")
    gpus = forms.IntegerField(min_value=1, max_value=4096, initial=1, label="GPUs", required=False)
    kv_precision = forms.ChoiceField(choices=PRECISIONS, initial="fp16", label="KV cache precision", required=False)
    memory_utilization = forms.FloatField(
        min_value=0.05,
        max_value=1.0,
        initial=0.9,
        label="Usable fraction",
        help_text="vLLM --gpu-memory-utilization",
        required=False,
    )


def plan(data: dict[str, Any]) -> CapacityPlan:
    """Optional fields left blank take the planner's defaults (1 GPU, FP16 KV cache, 0.9 usable)."""
    return capacity_plan(**{k: v for k, v in data.items() if v not in (None, "")})


@dataclass(frozen=True)
class SpecText:
    title: str
    text: str


_TITLES = {"command": "Command line", "compose": "docker compose", "kubernetes": "Kubernetes Deployment"}


def launch_specs_for(backend: Any) -> list[SpecText] | None:
    """The backend's launch specs (command, compose, Kubernetes) with every adapter placed on it; None for kinds
    that have none (generic OpenAI-compatible servers)."""
    try:
        specs = launch_specs(launch_config_for_backend(backend))
    except InvalidInput:
        return None
    return [SpecText(_TITLES.get(key, key), text) for key, text in specs.items()]
