"""Writes on conversations and messages (the pipeline's own persistence lives in ``chat.pipeline``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat.models import Conversation, Message
from core.errors import Conflict, InvalidInput, NotFound
from tenants.models import Tenant
from tenants.services import audit_record

TITLE_MAX = 200
COMMENT_MAX = 2000
# A generation lease older than this is considered abandoned (its process died) and may be taken over.
GENERATION_LEASE = timedelta(minutes=10)


def knowledge_base_ids_validate(*, tenant: Tenant, role: str, knowledge_base_ids: Iterable[int | str]) -> list[int]:
    """The ids as ints if every one is a knowledge base this role may read; else the same 404 for all."""
    from knowledge.selectors import knowledge_base_list_readable

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
    from adapters.selectors import adapter_get_for_tenant

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
    from guardrails.services import pii_vault_delete

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
    message.feedback = feedback
    message.feedback_comment = comment
    message.save(update_fields=["feedback", "feedback_comment"])
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
