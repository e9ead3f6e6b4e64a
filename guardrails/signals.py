"""Cache invalidation (no business logic here): any change of a guard policy row, by the service, the admin site or a
cascade, drops the resolved policies of ``guardrails.selectors`` in every process."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from guardrails.models import GuardrailPolicy


def _invalidate(**_: Any) -> None:
    from guardrails.selectors import POLICY_CACHE

    POLICY_CACHE.invalidate()


def connect() -> None:
    post_save.connect(_invalidate, sender=GuardrailPolicy, dispatch_uid="guardrails.cache.policy_save")
    post_delete.connect(_invalidate, sender=GuardrailPolicy, dispatch_uid="guardrails.cache.policy_delete")
