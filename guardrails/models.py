from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenants.models import TenantOwned


class EntityAction(models.TextChoices):
    ALLOW = "allow", "Allow"
    MASK = "mask", "Mask"
    BLOCK = "block", "Block"


class Strictness(models.TextChoices):
    LOW = "low", "Low (block only clear attacks)"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High (warn on anything suspicious)"


class GuardrailPolicy(TenantOwned):
    """A department's guardrail policy. One row per tenant; a tenant without a row gets the defaults.

    ``entity_actions`` maps an entity type (``PERSON``, ``CREDIT_CARD``, a custom type …) to allow | mask | block;
    types not listed use the built-in defaults (guardrails.policy.DEFAULT_ENTITY_ACTIONS).
    ``custom_recognizers`` is a list of ``{"entity_type": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}", "score": 0.9}``;
    ``deny_lists`` maps an entity type to exact terms (``{"PROJECT": ["Bluebird"]}``). Both are matched in addition
    to the built-in recognizers and follow ``entity_actions`` (mask when not listed).
    ``link_hosts`` lists the hosts (and their subdomains) that answers may link to with data in the URL; links and
    images with a query string or a long path to any other host are removed from answers (guardrails.links).
    """

    entity_actions = models.JSONField(default=dict, blank=True)
    injection_strictness = models.CharField(max_length=16, choices=Strictness.choices, default=Strictness.MEDIUM)
    custom_recognizers = models.JSONField(default=list, blank=True)
    deny_lists = models.JSONField(default=dict, blank=True)
    link_hosts = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant"], name="uniq_guardrail_policy_tenant")]

    def __str__(self) -> str:
        return f"guardrail-policy:{self.tenant_id}"


class PiiVault(TenantOwned):
    """The reversible-masking mapping of one scope (``conversation:<id>``), encrypted at rest.

    ``ciphertext`` is a Fernet token of the JSON mapping (placeholder ↔ value); the key is derived from
    settings.PII_VAULT_KEY. The plaintext never leaves guardrails.vault.
    """

    scope_key = models.CharField(max_length=200)
    ciphertext = models.BinaryField()
    entries = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantOwned.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "scope_key"], name="uniq_pii_vault_scope")]

    def __str__(self) -> str:
        return f"pii-vault:{self.tenant_id}:{self.scope_key}"
