"""Writes on conversations and messages (the pipeline's own persistence lives in ``chat.pipeline``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from adapters.model_turn import QuotaHold
from adapters.selectors import adapter_get_for_tenant
from chat.models import Conversation, Message
from chat.quality import answer_feedback_record
from core.errors import Conflict, InvalidInput, NotFound
from guardrails.services import pii_vault_delete
from knowledge.embeddings import embedding_models, get_embedder
from knowledge.selectors import knowledge_base_list_readable
from tenants.auth import Caller
from tenants.models import Tenant, UsageRecord
from tenants.quota import quota_release_stale
from tenants.services import audit_record
from tenants.settlements import settlement_replay

TITLE_MAX = 200
COMMENT_MAX = 2000
# A generation lease older than this is considered abandoned (its process died) and may be taken over.
GENERATION_LEASE = timedelta(minutes=10)
# a journal entry this old was not kept by its process (a settlement normally commits within a second)
SETTLEMENT_REPLAY_AFTER_S = 60.0


def knowledge_base_ids_validate(*, tenant: Tenant, role: str, knowledge_base_ids: Iterable[int | str]) -> list[int]:
    """The ids as ints if every one is a knowledge base this role may read; else the same 404 for all."""
    try:
        wanted = sorted({int(i) for i in knowledge_base_ids})
    except (TypeError, ValueError):
        raise InvalidInput("Knowledge bases are chosen by their numeric id.") from None
    if not wanted:
        return []
    readable = set(
        knowledge_base_list_readable(tenant=tenant, role=role).filter(pk__in=wanted).values_list("pk", flat=True)
    )
    if readable != set(wanted):
        raise NotFound("A chosen knowledge base does not exist or you may not read it.")
    return wanted


def adapter_validate(*, tenant: Tenant, adapter: str | None) -> str:
    """The adapter's name if the department may use it ('' for the base model); else 404."""
    adapter = (adapter or "").strip()
    if not adapter:
        return ""
    return adapter_get_for_tenant(tenant=tenant, name=adapter).name


@transaction.atomic
def conversation_create(
    *,
    tenant: Tenant,
    user: User,
    role: str,
    title: str = "",
    knowledge_base_ids: Iterable[int | str] = (),
    adapter: str | None = None,
) -> Conversation:
    kb_ids = knowledge_base_ids_validate(tenant=tenant, role=role, knowledge_base_ids=knowledge_base_ids)
    adapter_name = adapter_validate(tenant=tenant, adapter=adapter)
    conversation = Conversation.objects.create(
        tenant=tenant, user=user, title=(" ".join(title.split())[:TITLE_MAX] or "New chat"), adapter=adapter_name
    )
    if kb_ids:
        conversation.knowledge_bases.set(kb_ids)
    audit_record(
        action="chat.conversation.create",
        tenant=tenant,
        actor=user,
        target=conversation,
        details={"knowledge_bases": kb_ids, "adapter": adapter_name},
    )
    return conversation


@transaction.atomic
def conversation_set_options(
    *,
    conversation: Conversation,
    role: str,
    knowledge_base_ids: Iterable[int | str] | None = None,
    adapter: str | None = None,
) -> Conversation:
    """Change the attached knowledge bases and/or the adapter (None leaves that part as it is)."""
    tenant = conversation.tenant
    if knowledge_base_ids is not None:
        kb_ids = knowledge_base_ids_validate(tenant=tenant, role=role, knowledge_base_ids=knowledge_base_ids)
        conversation.knowledge_bases.set(kb_ids)
    if adapter is not None:
        conversation.adapter = adapter_validate(tenant=tenant, adapter=adapter)
        conversation.save(update_fields=["adapter"])
    return conversation


@transaction.atomic
def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = " ".join((title or "").split())
    if not title:
        raise InvalidInput("A conversation needs a title.")
    if len(title) > TITLE_MAX:
        raise InvalidInput(f"A title has at most {TITLE_MAX} characters.")
    conversation.title = title
    conversation.save(update_fields=["title"])
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation, actor: User) -> None:
    if conversation.generating_since is not None and timezone.now() - conversation.generating_since < GENERATION_LEASE:
        raise Conflict("An answer is still being written in this conversation; stop it first.")
    audit_record(
        action="chat.conversation.delete",
        tenant=conversation.tenant,
        actor=actor,
        target=conversation,
        details={
            "messages": Message.objects.for_tenant(conversation.tenant_id).filter(conversation=conversation).count()
        },
    )
    pii_vault_delete(tenant=conversation.tenant, scope_key=conversation.scope_key)
    Conversation.objects.for_tenant(conversation.tenant_id).filter(pk=conversation.pk).delete()


@transaction.atomic
def message_feedback_set(*, message: Message, feedback: str, comment: str = "", actor: User) -> Message:
    if message.role != Message.Role.ASSISTANT:
        raise InvalidInput("Only answers can be rated.")
    if feedback not in (Message.Feedback.UP, Message.Feedback.DOWN, Message.Feedback.NONE):
        raise InvalidInput("Feedback is 'up', 'down' or empty.")
    comment = (comment or "").strip()
    if len(comment) > COMMENT_MAX:
        raise InvalidInput(f"A comment has at most {COMMENT_MAX} characters.")
    previous = message.feedback
    message.feedback = feedback
    message.feedback_comment = comment
    message.save(update_fields=["feedback", "feedback_comment"])
    if feedback and feedback != previous:
        tenant_slug = message.conversation.tenant.slug
        transaction.on_commit(
            lambda: answer_feedback_record(
                tenant=tenant_slug, model=message.model, adapter=message.adapter, rating=feedback
            )
        )
    audit_record(
        action="chat.feedback",
        tenant=message.conversation.tenant,
        actor=actor,
        target=message,
        details={"feedback": feedback or "none", "commented": bool(comment)},
    )
    return message


def conversation_claim_generation(*, tenant_id: int, conversation_id: int) -> None:
    """Take the conversation's generation lease (one answer at a time), or ``Conflict``."""
    now = timezone.now()
    claimed = (
        Conversation.objects.for_tenant(tenant_id)
        .filter(pk=conversation_id)
        .filter(Q(generating_since__isnull=True) | Q(generating_since__lt=now - GENERATION_LEASE))
        .update(generating_since=now)
    )
    if not claimed:
        raise Conflict(
            "An answer is already being written in this conversation. Wait for it to finish or press Stop.",
            code="busy_conversation",
        )


def conversation_release_generation(*, tenant_id: int, conversation_id: int) -> None:
    Conversation.objects.for_tenant(tenant_id).filter(pk=conversation_id).update(generating_since=None)


# --- embeddings (the /v1/embeddings door) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Embeddings:
    vectors: Any  # float32 array, one row per input
    tokens: int


def _count_tokens(embedder: Any, texts: list[str]) -> tuple[list[int], int | None]:
    """Tokens per input with the embedder's own tokenizer when it has one (else a cautious estimate), and the
    model's input limit when known."""
    model = getattr(embedder, "model", None)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        return counts, getattr(model, "max_seq_length", None)
    return [math.ceil(len(t.encode()) / 3) + 2 for t in texts], None


def embedding_create(
    *, caller: Caller, model: str, texts: list[str], dimensions: int | None, request_id: str
) -> Embeddings:
    """Embed ``texts`` for an API caller: the department's quota is reserved for the inputs' tokens and settled,
    and an audit event is recorded. Unknown model 404 (``param`` model); an input over the model's limit or a
    dimension it cannot give 400 (``param`` set)."""
    if model not in embedding_models():
        raise NotFound(
            f"No embedding model named '{model}' is available; see GET /v1/models.",
            code="model_not_found",
            details={"param": "model"},
        )
    embedder = get_embedder(model)
    if dimensions is not None and dimensions != embedder.dimension:
        raise InvalidInput(
            f"This model returns {embedder.dimension} dimensions; it cannot shorten them.",
            details={"param": "dimensions"},
        )
    counts, limit = _count_tokens(embedder, texts)
    for i, n in enumerate(counts):
        if limit and n > limit:
            message = f"Input {i} is {n} tokens; this model reads at most {limit}."
            raise InvalidInput(message, details={"param": "input"})
    tokens = sum(counts)
    hold = QuotaHold(tenant=caller.tenant, request_id=request_id)
    hold.reserve(max(tokens, 1))
    try:
        vectors = np.asarray(embedder.embed_array(texts), dtype=np.float32)
    except BaseException:
        hold.release()
        raise
    hold.settle(
        tokens_in=tokens,
        tokens_out=0,
        source=UsageRecord.Source.EMBEDDING,
        user=caller.user,
        api_key=caller.key,
        model=model,
        adapter="",
        backend="",
        outcome="ok",
    )
    audit_record(
        action="embeddings.create",
        tenant=caller.tenant,
        actor=caller.user,
        actor_label=caller.label,
        details={"request_id": request_id, "model": model, "inputs": len(texts), "tokens": tokens},
    )
    return Embeddings(vectors=vectors, tokens=tokens)


def chat_sweep_abandoned() -> int:
    """Release reservations older than an hour (no chat request lives that long), mark answers that were left
    ``streaming`` by a dead process as stopped and free their conversations' generation lease. Returns the number
    of reservations released. First, usage promised by a process that died before settling it is settled."""
    settlement_replay(older_than_s=SETTLEMENT_REPLAY_AFTER_S)
    released = quota_release_stale(older_than=timedelta(hours=1))
    cutoff = timezone.now() - GENERATION_LEASE
    Message.unscoped.filter(status=Message.Status.STREAMING, updated_at__lt=cutoff).update(
        status=Message.Status.STOPPED, error_code="abandoned"
    )
    Conversation.unscoped.filter(generating_since__lt=cutoff).update(generating_since=None)
    return released
