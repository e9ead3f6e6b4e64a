from __future__ import annotations

from core.localcache import LocalCache
from guardrails.models import GuardrailPolicy
from guardrails.policy import DEFAULT_ENTITY_ACTIONS, CustomPattern, ResolvedPolicy
from tenants.models import Tenant

# Resolved policies by department. Strict: a stricter policy applies to the very next request in every process
# (``guardrails.signals`` invalidates on every change of a policy row).
POLICY_CACHE: LocalCache[ResolvedPolicy] = LocalCache("guardrails.policies", ttl=60.0, strict=True)


def guardrail_policy_get(*, tenant: Tenant) -> ResolvedPolicy:
    """The tenant's policy merged over the defaults (a tenant without a policy row gets the defaults). Cached
    in-process (a ``ResolvedPolicy`` is immutable); any change of the policy invalidates it at once."""
    tenant_id = tenant.pk
    if tenant_id is None:
        return _resolve(tenant)
    return POLICY_CACHE.get_or_load(tenant_id, lambda: _resolve(tenant))


def _resolve(tenant: Tenant) -> ResolvedPolicy:
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
        link_hosts=tuple(str(h) for h in (row.link_hosts or [])),
    )


def guardrail_policy_row(*, tenant: Tenant) -> GuardrailPolicy | None:
    return GuardrailPolicy.objects.for_tenant(tenant).first()
