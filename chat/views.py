"""Chat pages (htmx). Thin: resolve the member, call selectors/services, render. Errors go through ``page_errors``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from chat.models import Message
from chat.rendering import document_url, render_markdown
from chat.selectors import (
    chat_adapter_options,
    chat_knowledge_base_options,
    conversation_get,
    conversation_list,
    message_get,
    message_list,
)
from chat.services import (
    conversation_create,
    conversation_delete,
    conversation_rename,
    conversation_set_options,
    message_feedback_set,
)
from core.errors import InvalidInput
from core.pages import page_errors
from tenants.models import Membership, Role, Tenant
from tenants.quota import quota_status
from tenants.selectors import membership_require


def _member(request: HttpRequest) -> Membership:
    """The session's department membership (viewer or higher); a suspended department is named as such."""
    tenant: Tenant | None = getattr(request, "tenant", None)
    if tenant is None and request.user.is_authenticated:
        suspended = Membership.unscoped.filter(
            user_id=request.user.pk, tenant__status=Tenant.Status.SUSPENDED
        ).select_related("tenant")
        first = suspended.first()
        if first is not None:
            tenant = first.tenant
    return membership_require(user=request.user, tenant=tenant, min_role=Role.VIEWER)


def message_view(message: Message) -> dict[str, Any]:
    anchor = f"cite-{message.pk}"
    citations = [{**c, "url": document_url(c), "anchor": f"{anchor}-{c.get('n')}"} for c in message.citations or []]
    return {
        "m": message,
        "html": render_markdown(message.text, citations=message.citations, anchor=anchor)
        if message.role == Message.Role.ASSISTANT
        else None,
        "citations": citations,
        "warnings": message.guard_warnings if message.role == Message.Role.ASSISTANT else [],
    }


def _sidebar(request: HttpRequest, membership: Membership, *, query: str = "") -> dict[str, Any]:
    return {
        "conversations": list(conversation_list(tenant=membership.tenant, user=request.user, query=query)[:200]),
        "query": query,
    }


def _options(membership: Membership) -> dict[str, Any]:
    return {
        "kb_options": chat_knowledge_base_options(tenant=membership.tenant, role=membership.role),
        "adapter_options": chat_adapter_options(tenant=membership.tenant),
        "quota": quota_status(tenant=membership.tenant),
    }


@require_GET
@page_errors
def chat_index(request: HttpRequest) -> HttpResponse:
    membership = _member(request)
    context = {**_sidebar(request, membership), **_options(membership), "conversation": None}
    return render(request, "chat/index.html", context)


@require_GET
@page_errors
def conversation_search(request: HttpRequest) -> HttpResponse:
    membership = _member(request)
    query = request.GET.get("q", "")
    active = request.GET.get("active", "")
    context = {**_sidebar(request, membership, query=query), "active_id": int(active) if active.isdigit() else None}
    return render(request, "chat/_conversation_list.html", context)


@require_POST
@page_errors
def conversation_new(request: HttpRequest) -> HttpResponse:
    membership = _member(request)
    conversation = conversation_create(
        tenant=membership.tenant,
        user=request.user,  # type: ignore[arg-type]
        role=membership.role,
        knowledge_base_ids=request.POST.getlist("knowledge_bases"),
        adapter=request.POST.get("adapter", ""),
    )
    url = reverse("chat:conversation", args=[conversation.pk])
    if getattr(request, "htmx", False):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@require_GET
@page_errors
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    membership = _member(request)
    conversation = conversation_get(tenant=membership.tenant, user=request.user, conversation_id=conversation_id)
    messages = [message_view(m) for m in message_list(conversation=conversation)]
    context = {
        **_sidebar(request, membership),
        **_options(membership),
        "conversation": conversation,
        "active_id": conversation.pk,
        "message_items": messages,
        "selected_kbs": set(conversation.knowledge_bases.values_list("pk", flat=True)),
    }
    return render(request, "chat/conversation.html", context)


@require_POST
@page_errors
def conversation_rename_view(request: HttpRequest, conversation_id: int) -> HttpResponse:
    membership = _member(request)
    conversation = conversation_get(tenant=membership.tenant, user=request.user, conversation_id=conversation_id)
    conversation_rename(conversation=conversation, title=request.POST.get("title", ""))
    return render(request, "chat/_title.html", {"conversation": conversation})


@require_POST
@page_errors
def conversation_delete_view(request: HttpRequest, conversation_id: int) -> HttpResponse:
    membership = _member(request)
    conversation = conversation_get(tenant=membership.tenant, user=request.user, conversation_id=conversation_id)
    conversation_delete(conversation=conversation, actor=request.user)  # type: ignore[arg-type]
    url = reverse("chat:index")
    if getattr(request, "htmx", False):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@require_POST
@page_errors
def conversation_options_view(request: HttpRequest, conversation_id: int) -> HttpResponse:
    membership = _member(request)
    conversation = conversation_get(tenant=membership.tenant, user=request.user, conversation_id=conversation_id)
    conversation_set_options(
        conversation=conversation,
        role=membership.role,
        knowledge_base_ids=request.POST.getlist("knowledge_bases"),
        adapter=request.POST.get("adapter", ""),
    )
    context = {
        **_options(membership),
        "conversation": conversation,
        "selected_kbs": set(conversation.knowledge_bases.values_list("pk", flat=True)),
        "saved": True,
    }
    return render(request, "chat/_options.html", context)


@require_GET
@page_errors
def message_detail(request: HttpRequest, message_id: int) -> HttpResponse:
    membership = _member(request)
    message = message_get(tenant=membership.tenant, user=request.user, message_id=message_id)
    return render(request, "chat/_message.html", message_view(message))


@require_POST
@page_errors
def message_feedback(request: HttpRequest, message_id: int) -> HttpResponse:
    membership = _member(request)
    message = message_get(tenant=membership.tenant, user=request.user, message_id=message_id)
    feedback = request.POST.get("feedback", "")
    if feedback == message.feedback and "comment" not in request.POST:
        feedback = Message.Feedback.NONE  # pressing the same thumb again clears it
    if feedback not in Message.Feedback.values:
        raise InvalidInput("Feedback is thumbs up or thumbs down.")
    message_feedback_set(
        message=message,
        feedback=feedback,
        comment=request.POST.get("comment", message.feedback_comment),
        actor=request.user,  # type: ignore[arg-type]
    )
    return render(request, "chat/_feedback.html", {"m": message})
