from __future__ import annotations

from guardrails.models import GuardrailPolicy
from guardrails.policy import DEFAULT_ENTITY_ACTIONS, CustomPattern, ResolvedPolicy
from tenants.models import Tenant


def guardrail_policy_get(*, tenant: Tenant) -> ResolvedPolicy:
    """The tenant's policy merged over the defaults (a tenant without a policy row gets the defaults)."""
    row = GuardrailPolicy.objects.for_tenant(tenant).first()
    if row is None:
        return ResolvedPolicy(tenant_id=tenant.pk, version="default")
    actions = dict(DEFAULT_ENTITY_ACTIONS)
    actions.update({str(k): str(v) for k, v in (row.entity_actions or {}).items()})
    patterns = tuple(
        CustomPattern(entity_type=str(p["entity_type"]), pattern=str(p["pattern"]), score=float(p.get("score", 0.9)))
        for p in (row.custom_recognizers or [])
    )
    deny = tuple(sorted((str(k), tuple(str(t) for t in v)) for k, v in (row.deny_lists or {}).items()))
    return ResolvedPolicy(
        tenant_id=tenant.pk,
        version=f"{row.pk}:{row.updated_at.timestamp():.6f}",
        entity_actions=actions,
        injection_strictness=row.injection_strictness,
        custom_patterns=patterns,
        deny_lists=deny,
    )
