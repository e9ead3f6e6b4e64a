"""Knowledge pages (htmx): list and create, a knowledge base with drag-and-drop upload, live per-file progress
(a small partial polled while anything is indexing — it works whatever process the worker runs in), delete,
re-index, cancel, settings, and a search box showing ranked chunks with their source."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from core.errors import InvalidInput, PermissionDenied
from core.pages import page_errors
from knowledge import selectors, services
from knowledge.embeddings import embedding_models
from knowledge.models import Access, KnowledgeBase
from knowledge.selectors import chunk_search
from tenants.models import Membership, Role, role_at_least
from tenants.selectors import membership_require


def _membership(request: HttpRequest, min_role: str = Role.VIEWER) -> Membership:
    return membership_require(user=request.user, tenant=getattr(request, "tenant", None), min_role=min_role)


def _kb(request: HttpRequest, kb_id: int, *, min_role: str = Role.VIEWER) -> tuple[Membership, KnowledgeBase]:
    membership = _membership(request, min_role)
    kb = selectors.knowledge_base_get(tenant=membership.tenant, role=membership.role, knowledge_base_id=kb_id)
    return membership, kb


def _kb_for_upload(request: HttpRequest, kb_id: int) -> tuple[Membership, KnowledgeBase]:
    membership, kb = _kb(request, kb_id)
    if not kb.may_upload(membership.role):
        raise PermissionDenied("Your role may not change documents in this knowledge base.")
    return membership, kb


def _documents_context(kb: KnowledgeBase, membership: Membership) -> dict[str, Any]:
    documents = list(selectors.document_list(knowledge_base=kb).defer("pii_counts")[:500])
    return {
        "kb": kb,
        "documents": documents,
        "active": any(d.is_active for d in documents),
        "may_upload": kb.may_upload(membership.role),
    }


def _documents_partial(request: HttpRequest, kb: KnowledgeBase, membership: Membership, **extra: Any) -> HttpResponse:
    return render(request, "knowledge/_documents.html", {**_documents_context(kb, membership), **extra})


def _role_list(request: HttpRequest, name: str) -> list[str]:
    return [r for r in request.POST.getlist(name) if r]


def _int(value: str | None, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number.") from None


@require_GET
@page_errors
def kb_list(request: HttpRequest) -> HttpResponse:
    membership = _membership(request)
    kbs = list(selectors.knowledge_base_list_readable(tenant=membership.tenant, role=membership.role))
    counts = selectors.document_counts(knowledge_base_ids=[kb.pk for kb in kbs], tenant=membership.tenant)
    return render(
        request,
        "knowledge/list.html",
        {
            "kbs": [(kb, counts.get(kb.pk, {})) for kb in kbs],
            "may_create": role_at_least(membership.role, Role.ADMIN),
            "roles": Role.choices,
            "access": Access.choices,
        },
    )


@require_POST
@page_errors
def kb_create(request: HttpRequest) -> HttpResponse:
    membership = _membership(request, Role.ADMIN)
    kb = services.knowledge_base_create(
        tenant=membership.tenant,
        actor=request.user,  # type: ignore[arg-type]
        name=request.POST.get("name", ""),
        description=request.POST.get("description", ""),
        read_access=request.POST.get("read_access", Access.TENANT),
        read_roles=_role_list(request, "read_roles"),
        upload_access=request.POST.get("upload_access", Access.TENANT),
        upload_roles=_role_list(request, "upload_roles"),
        chunk_size=_int(request.POST.get("chunk_size"), "Chunk size", 400),
        chunk_overlap=_int(request.POST.get("chunk_overlap"), "Overlap", 60),
    )
    url = reverse("knowledge:detail", args=[kb.pk])
    if getattr(request, "htmx", False):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@require_GET
@page_errors
def kb_detail(request: HttpRequest, kb_id: int) -> HttpResponse:
    membership, kb = _kb(request, kb_id)
    return render(
        request,
        "knowledge/detail.html",
        {
            **_documents_context(kb, membership),
            "may_manage": role_at_least(membership.role, Role.ADMIN),
            "roles": Role.choices,
            "access": Access.choices,
            "models": sorted(embedding_models()),
            "max_upload_mb": selectors.upload_limit_mb(tenant=kb.tenant),
        },
    )


@require_GET
@page_errors
def kb_documents(request: HttpRequest, kb_id: int) -> HttpResponse:
    membership, kb = _kb(request, kb_id)
    return _documents_partial(request, kb, membership)


@require_POST
@page_errors
def kb_upload(request: HttpRequest, kb_id: int) -> HttpResponse:
    membership, kb = _kb_for_upload(request, kb_id)
    files = request.FILES.getlist("files")
    results = services.document_upload(knowledge_base=kb, actor=request.user, files=files)  # type: ignore[arg-type]
    duplicates = [  # as the person named the file, and as the knowledge base already holds it
        r.document.filename if f.name == r.document.filename else f"{f.name} (as {r.document.filename})"
        for f, r in zip(files, results, strict=True)
        if r.duplicate
    ]
    return _documents_partial(request, kb, membership, duplicates=duplicates, uploaded=True)


@require_GET
@page_errors
def document_page(request: HttpRequest, kb_id: int, doc_id: int) -> HttpResponse:
    """A document as indexed, in reading order; ``?chunk=<id>`` highlights a cited passage (the page opens there)."""
    membership, kb = _kb(request, kb_id)
    doc = selectors.document_get(knowledge_base=kb, document_id=doc_id)
    segments = selectors.document_segments(document=doc)
    try:
        cited = int(request.GET.get("chunk", ""))
    except ValueError:
        cited = None
    cited_index = next((i for i, seg in enumerate(segments) if seg.chunk_id == cited), None)
    blocks = []
    lead_shown = False
    for index, seg in enumerate(segments):
        nxt = segments[index + 1] if index + 1 < len(segments) else None
        # the text a highlighted chunk shares with the one before is shown once: at the end of that one, highlighted
        shared = ""
        body = seg.text
        if nxt is not None and cited_index == index + 1 and nxt.lead and seg.text.endswith(nxt.lead):
            shared, body = nxt.lead, seg.text[: len(seg.text) - len(nxt.lead)]
            lead_shown = True
        previous = segments[index - 1] if index else None
        blocks.append(
            {
                "segment": seg,
                "body": body,
                "shared": shared,
                "prefix": seg.lead if index == cited_index and not lead_shown else "",
                "cited": index == cited_index,
                "new_heading": seg.heading if previous is None or previous.heading != seg.heading else "",
                "new_page": seg.page if seg.page and (previous is None or previous.page != seg.page) else None,
            }
        )
    return render(
        request,
        "knowledge/document.html",
        {
            "kb": kb,
            "doc": doc,
            "blocks": blocks,
            "cited": cited_index is not None,
            "may_upload": kb.may_upload(membership.role),
        },
    )


@require_POST
@page_errors
def document_delete(request: HttpRequest, kb_id: int, doc_id: int) -> HttpResponse:
    membership, kb = _kb_for_upload(request, kb_id)
    doc = selectors.document_get(knowledge_base=kb, document_id=doc_id)
    services.document_delete(document=doc, actor=request.user)  # type: ignore[arg-type]
    return _documents_partial(request, kb, membership)


@require_POST
@page_errors
def document_reindex(request: HttpRequest, kb_id: int, doc_id: int) -> HttpResponse:
    membership, kb = _kb_for_upload(request, kb_id)
    doc = selectors.document_get(knowledge_base=kb, document_id=doc_id)
    services.document_reindex(document=doc, actor=request.user)  # type: ignore[arg-type]
    return _documents_partial(request, kb, membership)


@require_POST
@page_errors
def document_cancel(request: HttpRequest, kb_id: int, doc_id: int) -> HttpResponse:
    membership, kb = _kb_for_upload(request, kb_id)
    doc = selectors.document_get(knowledge_base=kb, document_id=doc_id)
    services.document_cancel(document=doc, actor=request.user)  # type: ignore[arg-type]
    return _documents_partial(request, kb, membership)


@require_GET
@page_errors
def kb_search(request: HttpRequest, kb_id: int) -> HttpResponse:
    membership, kb = _kb(request, kb_id)
    query = request.GET.get("q", "").strip()
    hits = (
        chunk_search(tenant=membership.tenant, knowledge_base_ids=[kb.pk], query=query, k=10, role=membership.role)
        if query
        else []
    )
    return render(request, "knowledge/_results.html", {"kb": kb, "query": query, "hits": hits})


@require_POST
@page_errors
def kb_settings(request: HttpRequest, kb_id: int) -> HttpResponse:
    _, kb = _kb(request, kb_id, min_role=Role.ADMIN)
    changes: dict[str, Any] = {
        "name": request.POST.get("name", kb.name),
        "description": request.POST.get("description", kb.description),
        "read_access": request.POST.get("read_access", kb.read_access),
        "read_roles": _role_list(request, "read_roles"),
        "upload_access": request.POST.get("upload_access", kb.upload_access),
        "upload_roles": _role_list(request, "upload_roles"),
        "chunk_size": _int(request.POST.get("chunk_size"), "Chunk size", kb.chunk_size),
        "chunk_overlap": _int(request.POST.get("chunk_overlap"), "Overlap", kb.chunk_overlap),
    }
    model = request.POST.get("embedding_model", "")
    if model and model != kb.embedding_model:
        changes["embedding_model"] = model
    services.knowledge_base_update(knowledge_base=kb, actor=request.user, **changes)  # type: ignore[arg-type]
    if request.POST.get("reindex"):
        services.knowledge_base_reindex(knowledge_base=kb, actor=request.user)  # type: ignore[arg-type]
    return redirect("knowledge:detail", kb_id=kb.pk)


@require_POST
@page_errors
def kb_delete(request: HttpRequest, kb_id: int) -> HttpResponse:
    _, kb = _kb(request, kb_id, min_role=Role.ADMIN)
    services.knowledge_base_delete(knowledge_base=kb, actor=request.user)  # type: ignore[arg-type]
    if getattr(request, "htmx", False):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = reverse("knowledge:list")
        return response
    return redirect("knowledge:list")
