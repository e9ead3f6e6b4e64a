"""The LoRA adapter catalog and which departments may use which adapter.

``Adapter`` is a platform catalog row: shared (no owner) or owned by one department. Owned adapters are private to
their owner; shared ones reach a department through an ``AdapterAssignment``. Where an adapter is actually loaded
lives in the pool (``inference_pool.BackendAdapter``); the router only sends requests to confirmed rows.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from tenants.models import Tenant, TenantOwned

ADAPTER_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "Use letters, digits, dots, dashes and underscores (at most 100 characters), starting with a letter or digit.",
)


class AdapterFormat(models.TextChoices):
    PEFT = "peft", "PEFT (safetensors, for vLLM and TGI)"
    GGUF = "gguf", "GGUF (for llama.cpp)"


class Adapter(models.Model):
    name = models.CharField(
        max_length=100, unique=True, validators=[ADAPTER_NAME_VALIDATOR], help_text="the name clients ask for"
    )
    base_model = models.ForeignKey("inference_pool.BaseModel", on_delete=models.PROTECT, related_name="lora_adapters")
    format = models.CharField(max_length=8, choices=AdapterFormat.choices, default=AdapterFormat.PEFT)
    source = models.CharField(max_length=1000, help_text="local path or URI (e.g. hf://org/repo, s3://bucket/key)")
    rank = models.PositiveIntegerField(default=8, validators=[MinValueValidator(1), MaxValueValidator(1024)])
    description = models.TextField(blank=True, default="")
    owner_tenant = models.ForeignKey(
        Tenant,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="owned_adapters",
        help_text="blank: shared, assignable to any department",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_shared(self) -> bool:
        return self.owner_tenant_id is None


class AdapterAssignment(TenantOwned):
    """A department may use this adapter; at most one assignment per department is its default."""

    adapter = models.ForeignKey(Adapter, on_delete=models.CASCADE, related_name="assignments")
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        ordering = ["adapter__name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "adapter"], name="uniq_adapter_assignment"),
            models.UniqueConstraint(
                fields=["tenant"], condition=models.Q(is_default=True), name="uniq_adapter_default_per_tenant"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.adapter_id}@{self.tenant_id}{' (default)' if self.is_default else ''}"
