"""The inference pool's registry: base models, engine backends and the LoRA adapters each backend serves.

These rows are platform-wide (not tenant-owned): departments are given access to adapters by the ``adapters`` app.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from inference_pool.choices import BreakerState, EngineKind, HealthState, Quantization

__all__ = ["Backend", "BackendAdapter", "BaseModel", "BreakerState", "EngineKind", "HealthState", "Quantization"]


class BaseModel(models.Model):
    """A base model the pool can serve (the name clients ask for, e.g. ``smollm2-135m-instruct``)."""

    name = models.CharField(max_length=200, unique=True)
    family = models.CharField(max_length=100, blank=True, default="")
    params_b = models.FloatField(help_text="parameters in billions", default=0)
    context_length = models.PositiveIntegerField(default=4096)
    # Architecture figures for the capacity planner (0 = unknown).
    layers = models.PositiveIntegerField(default=0)
    kv_heads = models.PositiveIntegerField(default=0)
    head_dim = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Backend(models.Model):
    """One engine endpoint (a vLLM / TGI / llama.cpp / OpenAI-compatible server) serving one base model."""

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=EngineKind.choices, default=EngineKind.LLAMACPP)
    base_url = models.URLField(max_length=500, help_text="root URL of the server, without /v1")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="backends")
    served_name = models.CharField(
        max_length=200, blank=True, default="", help_text="model id the engine expects (blank: the base model's name)"
    )
    quantization = models.CharField(max_length=32, choices=Quantization.choices, default=Quantization.NONE)
    context_length = models.PositiveIntegerField(default=4096)
    max_concurrent = models.PositiveIntegerField(default=8, help_text="requests the portal sends at once")
    weight = models.FloatField(default=1.0, help_text="relative share of traffic (higher takes more)")
    enabled = models.BooleanField(default=True)
    draining = models.BooleanField(default=False, help_text="finish running requests, take no new ones")
    managed = models.BooleanField(default=False, help_text="a local llama-server started by the portal")
    api_key = models.CharField(
        max_length=500, blank=True, default="", help_text="bearer token, if the engine needs one"
    )
    # Observed state, written by health probes and the router (never per token).
    health = models.CharField(max_length=16, choices=HealthState.choices, default=HealthState.UNKNOWN)
    health_detail = models.CharField(max_length=300, blank=True, default="")
    breaker = models.CharField(max_length=16, choices=BreakerState.choices, default=BreakerState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    load = models.JSONField(default=dict, blank=True, help_text="last load signals scraped from /metrics")
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def model_id(self) -> str:
        return self.served_name or self.base_model.name


class BackendAdapter(models.Model):
    """A LoRA adapter a backend serves. Only ``confirmed`` rows (seen loaded on the engine) are routed to."""

    backend = models.ForeignKey(Backend, on_delete=models.CASCADE, related_name="adapters")
    name = models.CharField(max_length=200, help_text="the adapter name clients ask for")
    engine_ref = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="how the engine names it: llama.cpp lora id, vLLM module name, TGI adapter id (blank: the name)",
    )
    source_path = models.CharField(max_length=1000, blank=True, default="")
    confirmed = models.BooleanField(default=False)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["backend__name", "name"]
        constraints = [models.UniqueConstraint(fields=["backend", "name"], name="uniq_backend_adapter_name")]

    def __str__(self) -> str:
        return f"{self.name}@{self.backend_id}"

    @property
    def ref(self) -> str:
        return self.engine_ref or self.name
