"""The pool's vocabularies (engine kinds, health, breaker state, quantization): part of its public face, so other
apps compare against them without importing the pool's models."""

from __future__ import annotations

from django.db import models


class EngineKind(models.TextChoices):
    VLLM = "vllm", "vLLM"
    TGI = "tgi", "Text Generation Inference"
    LLAMACPP = "llamacpp", "llama.cpp server"
    OPENAI = "openai", "OpenAI-compatible"


class HealthState(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    UP = "up", "Up"
    LOADING = "loading", "Loading"
    DOWN = "down", "Down"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open"


class Quantization(models.TextChoices):
    NONE = "none", "None (fp16/bf16)"
    FP8 = "fp8", "FP8"
    AWQ = "awq", "AWQ (int4)"
    GPTQ = "gptq", "GPTQ (int4)"
    EETQ = "eetq", "EETQ (int8)"
    INT8 = "int8", "INT8"
    NF4 = "bitsandbytes-nf4", "bitsandbytes NF4"
    GGUF_Q4 = "q4", "GGUF Q4"
    GGUF_Q8 = "q8", "GGUF Q8"
