"""Reads on conversations and messages. A conversation is private to the user who started it: another user's or
another department's conversation answers the same 404 as a missing one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from adapters.selectors import adapter_list_for_tenant
from chat.models import Conversation, Message
from core.aggregates import Percentile
from core.errors import NotFound
from core.fields import EncryptedTextField
from guardrails.services import pii_redact
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


# ------------------------------------------------------------------------ feedback review (department admins)
@dataclass(frozen=True)
class FeedbackFilters:
    since: datetime
    until: datetime
    model: str = ""
    knowledge_base_id: int | None = None
    commented: bool = False  # only answers with a comment


@dataclass
class FeedbackPassage:
    n: int
    document_name: str
    page: int | None
    text: str  # masked


@dataclass
class FeedbackRow:
    """One thumbs-down answer as a reviewer sees it: every text masked (the question and the answer as the model
    saw and wrote them, the passages and the comment with their personal data replaced by its type)."""

    message_id: int
    conversation_id: int
    tenant: Tenant
    created_at: datetime
    model: str
    adapter: str
    question: str
    answer: str
    passages: list[FeedbackPassage]
    comment: str
    groundedness: float | None


def feedback_review_queryset(*, tenant: Tenant | None, filters: FeedbackFilters) -> QuerySet[Message]:
    """Thumbs-down answers, newest first, each with the question it answered (``question_masked``). ``tenant`` is
    the reviewer's department; None (platform staff) reads every department's."""
    qs: QuerySet[Message] = Message.objects.for_tenant(tenant) if tenant is not None else Message.unscoped.all()
    qs = qs.filter(
        role=Message.Role.ASSISTANT,
        feedback=Message.Feedback.DOWN,
        created_at__gte=filters.since,
        created_at__lt=filters.until,
    )
    if filters.model:
        qs = qs.filter(Q(model=filters.model) | Q(adapter=filters.model))
    if filters.knowledge_base_id is not None:
        qs = qs.filter(citations__contains=[{"knowledge_base_id": filters.knowledge_base_id}])
    if filters.commented:
        qs = qs.exclude(feedback_comment="")
    question = (
        Message.unscoped.filter(
            tenant_id=OuterRef("tenant_id"),
            conversation_id=OuterRef("conversation_id"),
            role=Message.Role.USER,
            id__lt=OuterRef("id"),
        )
        .order_by("-id")
        .values("masked_text")[:1]
    )
    return (
        qs.select_related("tenant")
        .annotate(question_masked=Subquery(question, output_field=EncryptedTextField()))
        .order_by("-created_at", "-id")
    )


def feedback_review_models(*, tenant: Tenant | None) -> list[str]:
    """The models (and adapters) named on thumbs-down answers, for the filter."""
    qs = Message.objects.for_tenant(tenant) if tenant is not None else Message.unscoped.all()
    rows = qs.filter(role=Message.Role.ASSISTANT, feedback=Message.Feedback.DOWN).values_list("model", "adapter")
    return sorted({name for pair in rows.distinct() for name in pair if name})


def feedback_review_rows(*, messages: Iterable[Message]) -> list[FeedbackRow]:
    """The rows of ``messages`` (from :func:`feedback_review_queryset`), passages and comments masked with each
    department's policy (one analyzer pass per answer)."""
    rows = []
    for m in messages:
        citations = [c for c in (m.citations or []) if isinstance(c, dict)]
        texts = [m.feedback_comment or "", *[str(c.get("snippet") or "") for c in citations]]
        masked = pii_redact(tenant=m.tenant, texts=texts)
        rows.append(
            FeedbackRow(
                message_id=m.pk,
                conversation_id=m.conversation_id,
                tenant=m.tenant,
                created_at=m.created_at,
                model=m.model,
                adapter=m.adapter,
                question=getattr(m, "question_masked", None) or "",
                answer=m.masked_text,
                passages=[
                    FeedbackPassage(
                        n=int(c.get("n") or i + 1),
                        document_name=str(c.get("document_name") or ""),
                        page=c.get("page"),
                        text=text,
                    )
                    for i, (c, text) in enumerate(zip(citations, masked[1:], strict=True))
                ],
                comment=masked[0],
                groundedness=((m.guardrails or {}).get("output") or {}).get("groundedness"),
            )
        )
    return rows


FEEDBACK_CSV_HEADER = [
    "answered_at",
    "department",
    "message_id",
    "conversation_id",
    "model",
    "adapter",
    "question",
    "answer",
    "passages",
    "comment",
    "groundedness",
]


def feedback_csv_rows(*, qs: QuerySet[Message], batch: int = 50) -> Iterator[list[str]]:
    """The header, then one row per thumbs-down answer (masked text), read and masked ``batch`` at a time."""
    yield FEEDBACK_CSV_HEADER
    chunk: list[Message] = []
    for message in qs.iterator(chunk_size=batch):
        chunk.append(message)
        if len(chunk) == batch:
            yield from _csv_lines(feedback_review_rows(messages=chunk))
            chunk = []
    if chunk:
        yield from _csv_lines(feedback_review_rows(messages=chunk))


def _csv_lines(rows: list[FeedbackRow]) -> Iterator[list[str]]:
    for r in rows:
        passages = "\n\n".join(
            f"[{p.n}] {p.document_name}" + (f", page {p.page}" if p.page else "") + f": {p.text}" for p in r.passages
        )
        yield [
            r.created_at.isoformat(),
            r.tenant.slug,
            str(r.message_id),
            str(r.conversation_id),
            r.model,
            r.adapter,
            r.question,
            r.answer,
            passages,
            r.comment,
            "" if r.groundedness is None else f"{r.groundedness:.3f}",
        ]
