"""Reads on conversations and messages. A conversation is private to the user who started it: another user's or
another department's conversation answers the same 404 as a missing one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, QuerySet
from django.utils import timezone

from adapters.selectors import adapter_list_for_tenant
from chat.models import Conversation, Message
from core.aggregates import Percentile
from core.errors import NotFound
from inference_pool.selectors import base_model_created_at, served_model_list
from knowledge.embeddings import embedding_models
from knowledge.selectors import knowledge_base_list_readable
from tenants.models import Tenant


def conversation_list(*, tenant: Tenant, user: User | AnonymousUser, query: str = "") -> QuerySet[Conversation]:
    if not user.is_authenticated:
        return Conversation.objects.for_tenant(tenant).none()
    qs = Conversation.objects.for_tenant(tenant).filter(user=user)
    query = " ".join(query.split())[:200]
    if query:
        qs = qs.filter(title__icontains=query)
    return qs.order_by("-updated_at", "-id")


def conversation_get(*, tenant: Tenant, user: User | AnonymousUser, conversation_id: int | str) -> Conversation:
    try:
        pk = int(conversation_id)
    except (TypeError, ValueError):
        raise NotFound("Conversation not found.") from None
    conversation = conversation_list(tenant=tenant, user=user).filter(pk=pk).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def message_list(*, conversation: Conversation) -> QuerySet[Message]:
    return (
        Message.objects.for_tenant(conversation.tenant_id)
        .filter(conversation=conversation)
        .order_by("created_at", "id")
    )


def message_get(*, tenant: Tenant, user: User | AnonymousUser, message_id: int | str) -> Message:
    try:
        pk = int(message_id)
    except (TypeError, ValueError):
        raise NotFound("Message not found.") from None
    message = (
        Message.objects.for_tenant(tenant)
        .filter(pk=pk, conversation__user=user if user.is_authenticated else None)
        .select_related("conversation")
        .first()
    )
    if message is None:
        raise NotFound("Message not found.")
    return message


@dataclass(frozen=True)
class ChatOption:
    id: Any
    name: str
    description: str = ""
    is_default: bool = False


def chat_knowledge_base_options(*, tenant: Tenant, role: str) -> list[ChatOption]:
    """Knowledge bases this role may read (the picker shows only these)."""
    return [
        ChatOption(id=kb.pk, name=kb.name, description=kb.description)
        for kb in knowledge_base_list_readable(tenant=tenant, role=role)
    ]


def chat_adapter_options(*, tenant: Tenant) -> list[ChatOption]:
    """Adapters assigned to the department (the picker shows only these), default first."""
    return [
        ChatOption(id=a.name, name=a.name, description=a.description, is_default=bool(getattr(a, "is_default", False)))
        for a in adapter_list_for_tenant(tenant=tenant)
    ]


def model_list_for_tenant(*, tenant: Tenant) -> list[dict[str, Any]]:
    """What ``/v1/models`` lists for a department, OpenAI-shaped: base models that can be routed now, the adapters
    this department may use that are loaded somewhere, and the embedding models; sorted by type, then id."""
    served = served_model_list()
    allowed = {a.name: a for a in adapter_list_for_tenant(tenant=tenant).select_related("owner_tenant")}
    created = base_model_created_at()
    out: dict[str, dict[str, Any]] = {}
    for s in served:
        entry = {"object": "model", "type": "chat", "context_length": s.context_length}
        if s.adapter is None:
            when = created.get(s.model)
            out[s.model] = {"id": s.model, "created": int(when.timestamp()) if when else 0, "owned_by": "portal"}
            out[s.model].update(entry)
        elif s.adapter in allowed and s.adapter not in out:
            adapter = allowed[s.adapter]
            owner = adapter.owner_tenant.slug if adapter.owner_tenant else "portal"
            out[s.adapter] = {"id": s.adapter, "created": int(adapter.created_at.timestamp()), "owned_by": owner}
            out[s.adapter].update(entry, parent=s.model)
    for model_id, spec in embedding_models().items():
        out.setdefault(
            model_id,
            {
                "id": model_id,
                "object": "model",
                "created": 0,
                "owned_by": "portal",
                "type": "embedding",
                "dimensions": int(spec.get("dimension", 0)),
            },
        )
    return sorted(out.values(), key=lambda m: (m["type"], m["id"]))


# ------------------------------------------------------------------------ answer latency per backend (staff)
@dataclass
class LatencyStats:
    requests: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    tpot_p50_ms: float | None
    tpot_p95_ms: float | None


LATENCY_WINDOW = timedelta(minutes=15)


def backend_latency_stats(
    *, window: timedelta = LATENCY_WINDOW, now: datetime | None = None
) -> dict[str, LatencyStats]:
    """TTFT and TPOT p50/p95 per backend over the window, from the answers the chat recorded (``chat.Message``
    rows of the assistant with timings), across every department: platform staff only."""
    since = (now or timezone.now()) - window
    rows = (
        Message.unscoped.filter(role=Message.Role.ASSISTANT, created_at__gte=since)
        .exclude(backend="")
        .exclude(ttft_ms__isnull=True)
        .values("backend")
        .annotate(
            n=Count("id"),
            ttft50=Percentile("ttft_ms", percentile=0.5),
            ttft95=Percentile("ttft_ms", percentile=0.95),
            tpot50=Percentile("tpot_ms", percentile=0.5),
            tpot95=Percentile("tpot_ms", percentile=0.95),
        )
        .order_by("backend")
    )
    return {r["backend"]: LatencyStats(r["n"], r["ttft50"], r["ttft95"], r["tpot50"], r["tpot95"]) for r in rows}
