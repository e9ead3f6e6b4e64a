"""Writes: knowledge bases, uploads, fair dispatch, the ingestion pipeline, chunk replacement with BM25 statistics,
deletion, re-indexing and embedding-model changes.

Ingestion: upload → Document(queued) → fair dispatch (at most ``INGEST_TENANT_CONCURRENCY`` documents of one
tenant are handed to the broker at a time; the rest wait in the tenant's line in PostgreSQL, oldest first) →
``ingest_document`` (on commit) → parse → chunk → embed in batches (progress on the row) → replace the document's
chunks and the knowledge base's BM25 statistics in one transaction → indexed (or failed with a readable message)
→ the tenant's next waiting document is dispatched.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import ApplicationError, Conflict, InvalidInput
from core.metrics import INGESTION_CHUNKS, PII_ENTITIES
from knowledge.chunking import ChunkDraft, chunk_sections, embedding_text
from knowledge.embeddings import embedding_models, get_embedder
from knowledge.models import EMBEDDING_DIM, Access, Chunk, Document, DocumentContent, KnowledgeBase
from knowledge.parsing import DocumentRejected
from knowledge.sandbox import ParseLimits, parse_document_isolated
from tenants.models import Quota, Role, Tenant
from tenants.services import audit_record

logger = logging.getLogger(__name__)

TS_CONFIG = "english"
EMBED_BATCH = 32
_ADVISORY_NAMESPACE = 4242  # pg_advisory_xact_lock(namespace, tenant_id): one dispatcher per tenant at a time


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


class UploadFile(Protocol):
    name: str | None
    size: int | None

    def chunks(self, chunk_size: int | None = None) -> Iterable[bytes]: ...


@dataclass
class UploadResult:
    document: Document
    created: bool
    duplicate: bool


class IngestCancelled(Exception):
    """The document was cancelled or deleted while it was being ingested."""


# --- knowledge bases --------------------------------------------------------------------------------------


def _clean_roles(roles: Iterable[str] | None) -> list[str]:
    result = []
    for role in roles or []:
        if role not in Role.values:
            raise InvalidInput(f"Unknown role '{role}'.", details={"roles": [role]})
        if role not in result:
            result.append(role)
    return result


def _validate_kb_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in fields:
        name = " ".join(str(fields["name"] or "").split())
        if not name:
            raise InvalidInput("A knowledge base needs a name.", details={"name": ["required"]})
        if len(name) > 200:
            raise InvalidInput("The name is too long (at most 200 characters).", details={"name": ["too long"]})
        out["name"] = name
    if "description" in fields:
        out["description"] = str(fields["description"] or "")[:5000]
    for key in ("read_access", "upload_access"):
        if key in fields:
            if fields[key] not in Access.values:
                raise InvalidInput(f"'{key}' must be 'tenant' or 'roles'.", details={key: ["invalid"]})
            out[key] = fields[key]
    for key in ("read_roles", "upload_roles"):
        if key in fields:
            out[key] = _clean_roles(fields[key])
    if "chunk_size" in fields:
        size = int(fields["chunk_size"])
        if not 64 <= size <= 2000:
            raise InvalidInput("The chunk size must be between 64 and 2,000 tokens.", details={"chunk_size": ["range"]})
        out["chunk_size"] = size
    if "chunk_overlap" in fields:
        overlap = int(fields["chunk_overlap"])
        size = out.get("chunk_size", fields.get("_current_chunk_size", 400))
        if not 0 <= overlap <= size // 2:
            raise InvalidInput(
                "The overlap must be between 0 and half the chunk size.", details={"chunk_overlap": ["range"]}
            )
        out["chunk_overlap"] = overlap
    return out


def _model_dimension(model_id: str) -> int:
    spec = embedding_models().get(model_id)
    if spec is None:
        raise InvalidInput(f"The embedding model '{model_id}' is not configured on this portal.")
    dimension = int(spec.get("dimension", EMBEDDING_DIM))
    if dimension != EMBEDDING_DIM:
        raise InvalidInput(
            f"The model '{model_id}' makes {dimension}-dimensional vectors; this portal's index holds {EMBEDDING_DIM}."
        )
    return dimension


@transaction.atomic
def knowledge_base_create(
    *,
    tenant: Tenant,
    actor: User | None,
    name: str,
    description: str = "",
    read_access: str = Access.TENANT,
    read_roles: Iterable[str] = (),
    upload_access: str = Access.TENANT,
    upload_roles: Iterable[str] = (),
    chunk_size: int = 400,
    chunk_overlap: int = 60,
    embedding_model: str | None = None,
) -> KnowledgeBase:
    fields = _validate_kb_fields(
        {
            "name": name,
            "description": description,
            "read_access": read_access,
            "read_roles": list(read_roles),
            "upload_access": upload_access,
            "upload_roles": list(upload_roles),
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
        }
    )
    model_id = embedding_model or settings.EMBEDDING_MODEL
    dimension = _model_dimension(model_id)
    if KnowledgeBase.objects.for_tenant(tenant).filter(name=fields["name"]).exists():
        raise Conflict(f"A knowledge base named '{fields['name']}' already exists.")
    kb = KnowledgeBase.objects.create(
        tenant=tenant,
        created_by=actor if actor is not None and actor.pk else None,
        embedding_model=model_id,
        embedding_dim=dimension,
        **fields,
    )
    audit_record(action="knowledge_base.create", tenant=tenant, actor=actor, target=kb)
    return kb


@transaction.atomic
def knowledge_base_update(*, knowledge_base: KnowledgeBase, actor: User | None, **changes: Any) -> KnowledgeBase:
    """Change settings; a new ``embedding_model`` re-embeds the chunks in the background, then switches."""
    allowed = {
        "name",
        "description",
        "read_access",
        "read_roles",
        "upload_access",
        "upload_roles",
        "chunk_size",
        "chunk_overlap",
        "embedding_model",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"Unknown fields: {', '.join(sorted(unknown))}.")
    model_id = changes.pop("embedding_model", None)
    fields = _validate_kb_fields({**changes, "_current_chunk_size": knowledge_base.chunk_size})
    kb = KnowledgeBase.objects.for_tenant(knowledge_base.tenant_id).select_for_update().get(pk=knowledge_base.pk)
    if (
        "name" in fields
        and fields["name"] != kb.name
        and KnowledgeBase.objects.for_tenant(kb.tenant_id).filter(name=fields["name"]).exclude(pk=kb.pk).exists()
    ):
        raise Conflict(f"A knowledge base named '{fields['name']}' already exists.")
    for key, value in fields.items():
        setattr(kb, key, value)
    reembed = False
    if model_id and model_id != kb.embedding_model:
        _model_dimension(model_id)
        kb.pending_embedding_model = model_id
        reembed = True
    elif model_id and kb.pending_embedding_model:
        kb.pending_embedding_model = ""  # switching back before the swap: drop the pending re-embedding
        Chunk.objects.for_tenant(kb.tenant_id).filter(knowledge_base=kb).update(embedding_next=None)
    kb.updated_at = timezone.now()
    kb.save()
    audit_record(
        action="knowledge_base.update",
        tenant=kb.tenant,
        actor=actor,
        target=kb,
        details={"fields": sorted(set(fields) | ({"embedding_model"} if model_id else set()))},
    )
    if reembed:
        from knowledge.tasks import reembed_knowledge_base

        kb_id = kb.pk
        queue = str(_setting("INGEST_QUEUE", "ingest"))
        transaction.on_commit(lambda: reembed_knowledge_base.apply_async(args=[kb_id], queue=queue))
    return kb


@transaction.atomic
def knowledge_base_delete(*, knowledge_base: KnowledgeBase, actor: User | None) -> None:
    tenant = knowledge_base.tenant
    kb = KnowledgeBase.objects.for_tenant(tenant).select_for_update().filter(pk=knowledge_base.pk).first()
    if kb is None:
        return
    doc_count = Document.objects.for_tenant(tenant).filter(knowledge_base=kb).count()
    kb_id = kb.pk
    with connection.cursor() as cur:
        # the big tables first, in set operations (the ORM cascade would fetch every chunk)
        cur.execute("DELETE FROM knowledge_chunk WHERE tenant_id = %s AND knowledge_base_id = %s", [tenant.pk, kb_id])
        cur.execute(
            "DELETE FROM knowledge_knowledgebaseterm WHERE tenant_id = %s AND knowledge_base_id = %s",
            [tenant.pk, kb_id],
        )
    kb.delete()
    audit_record(
        action="knowledge_base.delete",
        tenant=tenant,
        actor=actor,
        target=f"KnowledgeBase:{kb_id}",
        details={"documents": doc_count},
    )
    tenant_id = tenant.pk
    transaction.on_commit(lambda: document_dispatch(tenant_id=tenant_id))


# --- uploads and fair dispatch ----------------------------------------------------------------------------


def _quota(tenant: Tenant) -> Quota:
    quota = Quota.objects.filter(tenant=tenant).first()
    return quota or Quota(tenant=tenant)


def _read_upload(upload: UploadFile, limit_bytes: int) -> tuple[bytes | None, str, int]:
    """Read an upload (refusing to hold more than the limit in memory); returns (data or None if over, sha256, size)."""
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    for block in upload.chunks():
        size += len(block)
        digest.update(block)
        if size <= limit_bytes:
            parts.append(block)
        else:
            parts = []
    return (b"".join(parts) if size <= limit_bytes else None), digest.hexdigest(), size


def _safe_filename(name: str | None) -> str:
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip() or "upload"
    return base[:255]


def document_upload(
    *, knowledge_base: KnowledgeBase, actor: User | None, files: Sequence[UploadFile]
) -> list[UploadResult]:
    """Store each file and queue it for ingestion. A file already in this knowledge base (same sha256) is not
    indexed twice. Files over the department's size limit, or beyond its document limit, are recorded as failed
    with the reason, so a multi-file upload reports per file."""
    if not files:
        raise InvalidInput("Choose at least one file to upload.")
    tenant = knowledge_base.tenant
    quota = _quota(tenant)
    limit_bytes = int(quota.max_upload_mb) * 1024 * 1024
    results: list[UploadResult] = []
    with transaction.atomic():
        kb = KnowledgeBase.objects.for_tenant(tenant).select_for_update().get(pk=knowledge_base.pk)
        for upload in files:
            filename = _safe_filename(upload.name)
            data, sha256, size = _read_upload(upload, limit_bytes)
            existing = Document.objects.for_tenant(tenant).filter(knowledge_base=kb, sha256=sha256).first()
            error = ""
            if data is None:
                error = (
                    f"The file is {size / 1048576:.1f} MB; "
                    f"your department's limit is {quota.max_upload_mb} MB per file."
                )
            elif size == 0:
                error = "The file is empty."
            else:
                live = (
                    Document.objects.for_tenant(tenant)
                    .exclude(status__in=[Document.Status.FAILED, Document.Status.CANCELLED])
                    .count()
                )
                if live >= quota.max_documents and (existing is None or not existing.is_active):
                    error = f"Your department has reached its limit of {quota.max_documents:,} documents."
            if existing is not None and existing.status not in (Document.Status.FAILED, Document.Status.CANCELLED):
                results.append(UploadResult(document=existing, created=False, duplicate=True))
                continue
            now = timezone.now()
            status = Document.Status.FAILED if error else Document.Status.QUEUED
            if existing is not None:  # a failed or cancelled earlier upload of the same bytes: try again
                doc = existing
                doc.filename = filename
                doc.status = status
                doc.error = error
                doc.progress = 0
                doc.dispatched_at = None
                doc.uploaded_by = actor if actor is not None and actor.pk else None
                doc.updated_at = now
                doc.save()
                created = False
            else:
                doc = Document.objects.create(
                    tenant=tenant,
                    knowledge_base=kb,
                    filename=filename,
                    size_bytes=size,
                    sha256=sha256,
                    status=status,
                    error=error,
                    uploaded_by=actor if actor is not None and actor.pk else None,
                    created_at=now,
                    updated_at=now,
                )
                created = True
            if data is not None and not error:
                DocumentContent.objects.for_tenant(tenant).update_or_create(
                    document=doc, defaults={"tenant": tenant, "data": data}
                )
            results.append(UploadResult(document=doc, created=created, duplicate=False))
        audit_record(
            action="knowledge.upload",
            tenant=tenant,
            actor=actor,
            target=kb,
            details={
                "files": len(files),
                "queued": sum(1 for r in results if r.document.status == Document.Status.QUEUED and not r.duplicate),
                "duplicates": sum(1 for r in results if r.duplicate),
                "refused": sum(1 for r in results if r.document.status == Document.Status.FAILED),
            },
        )
        document_dispatch(tenant_id=tenant.pk)
    return results


def document_dispatch(*, tenant_id: int) -> list[int]:
    """Hand the tenant's oldest waiting documents to the broker, keeping at most ``INGEST_TENANT_CONCURRENCY`` of
    its documents there or in a worker at a time. Each tenant has its own line; the broker only ever holds a few
    documents per tenant, so one department's 5,000-file upload cannot bury another department's single file.
    The messages are sent after commit."""
    cap = int(_setting("INGEST_TENANT_CONCURRENCY", 2))
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_ADVISORY_NAMESPACE, int(tenant_id)])
        cur.execute(
            """
            UPDATE knowledge_document SET dispatched_at = %(now)s
            WHERE id IN (
                SELECT id FROM knowledge_document
                WHERE tenant_id = %(tenant)s AND status = 'queued' AND dispatched_at IS NULL
                ORDER BY created_at, id
                LIMIT greatest(0, %(cap)s - (
                    SELECT count(*) FROM knowledge_document
                    WHERE tenant_id = %(tenant)s AND dispatched_at IS NOT NULL
                      AND status IN ('queued', 'parsing', 'chunking', 'embedding')))
            )
            RETURNING id
            """,
            {"now": timezone.now(), "tenant": int(tenant_id), "cap": cap},
        )
        ids = sorted(row[0] for row in cur.fetchall())
        if ids:
            transaction.on_commit(lambda: _send(ids))
    return ids


def _send(ids: list[int]) -> None:
    from knowledge.tasks import ingest_document

    queue = str(_setting("INGEST_QUEUE", "ingest"))
    for doc_id in ids:
        ingest_document.apply_async(args=[doc_id], queue=queue)


def ingest_sweep(*, stale_after: timedelta | None = None) -> dict[str, int]:
    """Safety net for lost broker messages: re-send documents dispatched long ago that never moved, and dispatch
    every tenant that has documents waiting."""
    stale_after = stale_after or timedelta(seconds=int(_setting("INGEST_STALE_SECONDS", 2400)))
    cutoff = timezone.now() - stale_after
    stale = list(
        Document.unscoped.filter(
            status__in=Document.ACTIVE_STATES, dispatched_at__isnull=False, updated_at__lt=cutoff
        ).values_list("id", flat=True)[:500]
    )
    if stale:
        Document.unscoped.filter(pk__in=stale).update(updated_at=timezone.now())
        _send(stale)
    tenants = list(
        Document.unscoped.filter(status=Document.Status.QUEUED, dispatched_at__isnull=True)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    dispatched = sum(len(document_dispatch(tenant_id=t)) for t in tenants)
    return {"resent": len(stale), "dispatched": dispatched}


# --- the ingestion pipeline -------------------------------------------------------------------------------


class _Progress:
    """Progress on the Document row, written in autocommit (visible to the pages at once) at most every
    ``interval`` seconds, except forced writes; every write also notices a cancellation or deletion."""

    def __init__(self, document_id: int, interval: float = 0.3) -> None:
        self.document_id = document_id
        self.interval = interval
        self.last = 0.0
        self.pending: dict[str, Any] = {}

    def __call__(self, *, force: bool = False, **fields: Any) -> None:
        self.pending.update(fields)
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        _progress(self.document_id, **self.pending)
        self.pending = {}
        self.last = now


def _progress(document_id: int, **fields: Any) -> None:
    """Write progress now; stop when the document was cancelled or deleted."""
    fields["updated_at"] = timezone.now()
    updated = Document.unscoped.filter(pk=document_id).exclude(status=Document.Status.CANCELLED).update(**fields)
    if not updated:
        raise IngestCancelled()


def _finish_failed(document_id: int, message: str) -> None:
    Document.unscoped.filter(pk=document_id).exclude(status=Document.Status.CANCELLED).update(
        status=Document.Status.FAILED, error=message, progress=100, updated_at=timezone.now()
    )


def document_mark_failed(*, document_id: int, message: str) -> None:
    """Give up on a document (used when retries of a transient error are exhausted) and free its tenant's slot."""
    _finish_failed(document_id, message)
    tenant_id = Document.unscoped.filter(pk=document_id).values_list("tenant_id", flat=True).first()
    if tenant_id is not None:
        document_dispatch(tenant_id=tenant_id)


def _pii_counts(tenant: Tenant, texts: list[str]) -> list[dict[str, int]]:
    """Entity counts per chunk (``KNOWLEDGE_PII_SCAN``; values are never stored), from the guardrails app's scanner
    in small batches. The scan is informational: when the scanner is unavailable the chunks are indexed without
    counts (and that is logged), never held back."""
    empty: list[dict[str, int]] = [{} for _ in texts]
    if not _setting("KNOWLEDGE_PII_SCAN", False) or not texts:
        return empty
    try:
        scan = importlib.import_module("guardrails.services").pii_counts
    except (ImportError, AttributeError):
        return empty
    counts: list[dict[str, int]] = []
    batch = int(_setting("KNOWLEDGE_PII_SCAN_BATCH", 8))
    try:
        for start in range(0, len(texts), batch):
            counts.extend(scan(tenant=tenant, texts=texts[start : start + batch]))
    except ApplicationError as exc:
        logger.warning("pii scan unavailable during ingestion: %s", exc.code)
        return empty
    for entity_counts in counts:
        for entity, n in entity_counts.items():
            PII_ENTITIES.labels(entity_type=entity, action="ingest_scan").inc(n)
    return counts


def document_is_done(*, document_id: int) -> bool:
    """True when the document was indexed after its latest dispatch: a message for it now is a stale duplicate."""
    row = Document.unscoped.filter(pk=document_id).values("status", "indexed_at", "dispatched_at").first()
    if row is None or row["status"] != Document.Status.INDEXED or row["indexed_at"] is None:
        return False
    return row["dispatched_at"] is None or row["indexed_at"] >= row["dispatched_at"]


def parse_limits() -> ParseLimits:
    """The limits one document's parsing runs under (``KNOWLEDGE_PARSE_CPU_SECONDS``, ``..._MEMORY_MB``,
    ``..._WALL_SECONDS``)."""
    return ParseLimits(
        cpu_seconds=float(_setting("KNOWLEDGE_PARSE_CPU_SECONDS", 60)),
        memory_mb=int(_setting("KNOWLEDGE_PARSE_MEMORY_MB", 1024)),
        wall_seconds=float(_setting("KNOWLEDGE_PARSE_WALL_SECONDS", 120)),
    )


POISON_MESSAGE = (
    "Indexing this file was started {attempts} times and never finished: reading it stops the indexing worker "
    "(it may be damaged or built to crash document readers). It was set aside so other files can go ahead. "
    "Save it again (or as PDF) and upload the new file."
)


def document_is_poison(*, document_id: int) -> bool:
    """Whether the document already had ``KNOWLEDGE_MAX_ATTEMPTS`` runs that never ended (each killed its worker):
    if so it is marked failed with a readable reason, so a redelivered message does not crash workers forever."""
    limit = int(_setting("KNOWLEDGE_MAX_ATTEMPTS", 3))
    row = Document.unscoped.filter(pk=document_id).values("attempts", "status", "tenant_id").first()
    if row is None or row["attempts"] < limit or row["status"] not in Document.ACTIVE_STATES:
        return False
    logger.warning("document %s set aside after %s unfinished attempts", document_id, row["attempts"])
    document_mark_failed(document_id=document_id, message=POISON_MESSAGE.format(attempts=row["attempts"]))
    return True


def document_attempt_release(*, document_id: int) -> None:
    """An attempt that ended in a transient error (to be retried) does not count toward the poison limit."""
    Document.unscoped.filter(pk=document_id, attempts__gt=0).update(attempts=F("attempts") - 1)


def document_ingest(*, document_id: int) -> str:
    """Parse, chunk, embed and index one document. Idempotent: a rerun replaces the document's chunks.
    Readable failures end the document as ``failed``; transient errors propagate (the task retries them)."""
    doc = Document.unscoped.select_related("knowledge_base", "tenant__quota", "content").filter(pk=document_id).first()
    if doc is None or doc.status == Document.Status.CANCELLED:
        return "skipped"
    tenant_id = doc.tenant_id
    try:
        outcome = _ingest(doc)
    except IngestCancelled:
        outcome = "cancelled"
    except DocumentRejected as rejected:
        _finish_failed(document_id, rejected.message)
        outcome = "failed"
    document_dispatch(tenant_id=tenant_id)
    return outcome


def _ingest(doc: Document) -> str:
    kb = doc.knowledge_base
    tenant = doc.tenant
    progress = _Progress(doc.pk, interval=float(_setting("KNOWLEDGE_PROGRESS_INTERVAL", 0.3)))
    progress(
        force=True,
        status=Document.Status.PARSING,
        progress=5,
        error="",
        started_at=timezone.now(),
        attempts=doc.attempts + 1,
    )
    try:
        content = doc.content
    except DocumentContent.DoesNotExist:
        raise DocumentRejected("The uploaded file is no longer stored; upload it again.") from None
    data = bytes(content.data)
    try:
        quota = tenant.quota
    except Quota.DoesNotExist:
        quota = Quota(tenant=tenant)
    if len(data) > int(quota.max_upload_mb) * 1024 * 1024:
        raise DocumentRejected(
            f"The file is {len(data) / 1048576:.1f} MB; your department's limit is {quota.max_upload_mb} MB per file."
        )
    # parsed in a child process under CPU and memory limits: a hostile file fails alone, the worker lives on
    parsed = parse_document_isolated(data=data, filename=doc.filename, limits=parse_limits())
    progress(status=Document.Status.CHUNKING, progress=15, detected_type=parsed.detected_type, pages=parsed.pages)
    drafts = chunk_sections(parsed.sections, chunk_size=kb.chunk_size, overlap=kb.chunk_overlap)
    max_chunks = int(_setting("KNOWLEDGE_MAX_CHUNKS_PER_DOCUMENT", 20000))
    if not drafts:
        raise DocumentRejected("The file has no text to index.")
    if len(drafts) > max_chunks:
        raise DocumentRejected(
            f"The file holds too much text ({len(drafts):,} chunks; the limit is {max_chunks:,}). Split it into parts."
        )
    texts = [embedding_text(d.heading, d.text) for d in drafts]
    pii = _pii_counts(tenant, [d.text for d in drafts])
    progress(status=Document.Status.EMBEDDING, progress=20)
    model_id = kb.embedding_model
    embedder = get_embedder(model_id)
    parts: list[np.ndarray] = []
    batch = int(_setting("KNOWLEDGE_EMBED_BATCH", EMBED_BATCH))
    for start in range(0, len(texts), batch):
        parts.append(embedder.embed_array(texts[start : start + batch], batch_size=batch))
        done = min(start + batch, len(texts))
        progress(progress=20 + int(70 * done / len(texts)))
    vectors = np.concatenate(parts) if parts else np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    count = chunks_replace(
        document_id=doc.pk,
        drafts=drafts,
        vectors=vectors,
        model_id=model_id,
        pii=pii,
        detected_type=parsed.detected_type,
        pages=parsed.pages,
    )
    INGESTION_CHUNKS.labels(tenant=tenant.slug).inc(count)
    return "indexed"


def _vector_literal(row: Sequence[float]) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in row) + "]"


# Remove a document's chunks and their share of the BM25 statistics in one statement; returns the ids of terms
# whose document frequency dropped to zero (deleted after the new chunks are in, which may use them again).
_SUBTRACT_SQL = """
WITH old AS (
    DELETE FROM knowledge_chunk WHERE document_id = %(doc)s RETURNING search, length
), lexemes AS (
    SELECT u.lexeme AS term, count(*) AS n FROM old CROSS JOIN LATERAL unnest(old.search) u GROUP BY u.lexeme
), terms AS (
    UPDATE knowledge_knowledgebaseterm t SET df = t.df - lexemes.n FROM lexemes
    WHERE t.knowledge_base_id = %(kb)s AND t.term = lexemes.term
    RETURNING t.id, t.df
), kb AS (
    UPDATE knowledge_knowledgebase SET
        bm25_chunk_count = bm25_chunk_count - (SELECT count(*) FROM old),
        bm25_total_length = bm25_total_length - (SELECT coalesce(sum(length), 0) FROM old)
    WHERE id = %(kb)s
)
SELECT id FROM terms WHERE df <= 0
"""

# Insert the new chunks (tsvector and BM25 length computed next to the data), add their share of the statistics
# and mark the document indexed, in one statement.
_INSERT_SQL = """
WITH new AS (
    INSERT INTO knowledge_chunk (tenant_id, knowledge_base_id, document_id, ordinal, text, token_count, page, heading,
                                 embedding, search, length, pii_counts)
    SELECT %(tenant)s, %(kb)s, %(doc)s, t.ordinal, t.text, t.tokens, t.page, t.heading, t.embedding::vector, s.search,
           (SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0) FROM unnest(s.search) u),
           t.pii::jsonb
    FROM unnest(%(ordinals)s::int[], %(texts)s::text[], %(tokens)s::int[], %(pages)s::int[], %(headings)s::text[],
                %(embeddings)s::text[], %(search_texts)s::text[], %(pii)s::text[])
         AS t(ordinal, text, tokens, page, heading, embedding, search_text, pii)
    CROSS JOIN LATERAL (SELECT to_tsvector(%(config)s::regconfig, t.search_text) AS search) s
    RETURNING search, length
), terms AS (
    INSERT INTO knowledge_knowledgebaseterm (tenant_id, knowledge_base_id, term, df)
    SELECT %(tenant)s, %(kb)s, u.lexeme, count(*) FROM new CROSS JOIN LATERAL unnest(new.search) u GROUP BY u.lexeme
    ON CONFLICT (knowledge_base_id, term) DO UPDATE SET df = knowledge_knowledgebaseterm.df + EXCLUDED.df
), kb AS (
    UPDATE knowledge_knowledgebase SET
        bm25_chunk_count = bm25_chunk_count + (SELECT count(*) FROM new),
        bm25_total_length = bm25_total_length + (SELECT coalesce(sum(length), 0) FROM new)
    WHERE id = %(kb)s
)
UPDATE knowledge_document SET status = 'indexed', progress = 100, error = '', chunk_count = %(count)s,
    pii_counts = %(pii_total)s::jsonb, detected_type = %(detected)s, pages = %(doc_pages)s,
    indexed_at = %(now)s, updated_at = %(now)s
WHERE id = %(doc)s
"""


def _bm25_subtract(cur: Any, *, kb_id: int, document_id: int) -> list[int]:
    cur.execute(_SUBTRACT_SQL, {"doc": document_id, "kb": kb_id})
    return [row[0] for row in cur.fetchall()]


def _drop_empty_terms(cur: Any, term_ids: list[int]) -> None:
    if term_ids:
        cur.execute("DELETE FROM knowledge_knowledgebaseterm WHERE id = ANY(%s) AND df <= 0", [term_ids])


def chunks_replace(
    *,
    document_id: int,
    drafts: Sequence[ChunkDraft],
    vectors: np.ndarray,
    model_id: str,
    pii: Sequence[dict[str, int]] | None = None,
    detected_type: str = "",
    pages: int | None = None,
) -> int:
    """Replace the document's chunks and the knowledge base's BM25 statistics in one transaction, and mark the
    document indexed. Safe against a concurrent rerun (row locks), a deletion or a cancellation (nothing written),
    and a concurrent model switch (re-embedded with the knowledge base's current model)."""
    import json

    pii = list(pii or [{} for _ in drafts])
    totals: dict[str, int] = {}
    for counts in pii:
        for entity, n in (counts or {}).items():
            totals[entity] = totals.get(entity, 0) + int(n)
    with transaction.atomic(), connection.cursor() as cur:
        # lock the document and its knowledge base (the statistics row) together
        cur.execute(
            "SELECT d.tenant_id, d.knowledge_base_id, k.embedding_model FROM knowledge_document d "
            "JOIN knowledge_knowledgebase k ON k.id = d.knowledge_base_id "
            "WHERE d.id = %s AND d.status <> 'cancelled' FOR UPDATE",
            [document_id],
        )
        row = cur.fetchone()
        if row is None:
            raise IngestCancelled()
        tenant_id, kb_id, current_model = row
        if current_model != model_id:  # the knowledge base switched models while we embedded
            vectors = get_embedder(current_model).embed_array([embedding_text(d.heading, d.text) for d in drafts])
        emptied = _bm25_subtract(cur, kb_id=kb_id, document_id=document_id)
        cur.execute(
            _INSERT_SQL,
            {
                "tenant": tenant_id,
                "kb": kb_id,
                "doc": document_id,
                "ordinals": [d.ordinal for d in drafts],
                "texts": [d.text for d in drafts],
                "tokens": [d.token_count for d in drafts],
                "pages": [d.page for d in drafts],
                "headings": [d.heading for d in drafts],
                "embeddings": [_vector_literal(v) for v in vectors],
                "search_texts": [embedding_text(d.heading, d.text) for d in drafts],
                "pii": [json.dumps(p or {}) for p in pii],
                "config": TS_CONFIG,
                "count": len(drafts),
                "pii_total": json.dumps(totals),
                "detected": detected_type,
                "doc_pages": pages,
                "now": timezone.now(),
            },
        )
        _drop_empty_terms(cur, emptied)
    return len(drafts)


# --- delete, cancel, re-index -----------------------------------------------------------------------------


def document_delete(*, document: Document, actor: User | None) -> None:
    tenant_id = document.tenant_id
    with transaction.atomic():
        doc = Document.objects.for_tenant(tenant_id).select_for_update().filter(pk=document.pk).first()
        if doc is None:
            return
        kb = KnowledgeBase.objects.for_tenant(tenant_id).select_for_update().get(pk=doc.knowledge_base_id)
        with connection.cursor() as cur:
            _drop_empty_terms(cur, _bm25_subtract(cur, kb_id=kb.pk, document_id=doc.pk))
        doc_id = doc.pk
        doc.delete()
        audit_record(
            action="knowledge.document_delete",
            tenant=kb.tenant,
            actor=actor,
            target=f"Document:{doc_id}",
            details={"knowledge_base": kb.pk},
        )
        transaction.on_commit(lambda: document_dispatch(tenant_id=tenant_id))


def document_cancel(*, document: Document, actor: User | None) -> Document:
    """Stop a queued or running ingestion; the worker notices at its next step and writes nothing."""
    tenant_id = document.tenant_id
    with transaction.atomic():
        updated = (
            Document.objects.for_tenant(tenant_id)
            .filter(pk=document.pk, status__in=Document.ACTIVE_STATES)
            .update(status=Document.Status.CANCELLED, error="Cancelled.", updated_at=timezone.now())
        )
        if not updated:
            raise Conflict("Only a queued or indexing document can be cancelled.")
        audit_record(
            action="knowledge.document_cancel", tenant=document.tenant, actor=actor, target=f"Document:{document.pk}"
        )
        transaction.on_commit(lambda: document_dispatch(tenant_id=tenant_id))
    return Document.objects.for_tenant(tenant_id).get(pk=document.pk)


def document_reindex(*, document: Document, actor: User | None) -> Document:
    """Parse, chunk and embed the stored file again (e.g. after a chunking change or a failure)."""
    tenant_id = document.tenant_id
    with transaction.atomic():
        doc = Document.objects.for_tenant(tenant_id).select_for_update().get(pk=document.pk)
        if doc.is_active and doc.dispatched_at is not None:
            raise Conflict("The document is being indexed right now.")
        if not DocumentContent.objects.for_tenant(tenant_id).filter(document_id=doc.pk).exists():
            raise Conflict("The file is not stored (it was refused at upload); upload it again.")
        Document.objects.for_tenant(tenant_id).filter(pk=doc.pk).update(
            status=Document.Status.QUEUED,
            progress=0,
            error="",
            dispatched_at=None,
            attempts=0,
            updated_at=timezone.now(),
        )
        audit_record(action="knowledge.document_reindex", tenant=doc.tenant, actor=actor, target=f"Document:{doc.pk}")
        document_dispatch(tenant_id=tenant_id)
    return Document.objects.for_tenant(tenant_id).get(pk=document.pk)


def knowledge_base_reindex(*, knowledge_base: KnowledgeBase, actor: User | None) -> int:
    """Queue every stored document of the knowledge base again (fairly, through the tenant's line)."""
    tenant_id = knowledge_base.tenant_id
    with transaction.atomic():
        stored = DocumentContent.objects.for_tenant(tenant_id).filter(document__knowledge_base=knowledge_base)
        ids = list(stored.values_list("document_id", flat=True))
        count = (
            Document.objects.for_tenant(tenant_id)
            .filter(pk__in=ids)
            .exclude(status__in=Document.ACTIVE_STATES)
            .update(
                status=Document.Status.QUEUED,
                progress=0,
                error="",
                dispatched_at=None,
                attempts=0,
                updated_at=timezone.now(),
            )
        )
        audit_record(
            action="knowledge_base.reindex",
            tenant=knowledge_base.tenant,
            actor=actor,
            target=knowledge_base,
            details={"documents": count},
        )
        document_dispatch(tenant_id=tenant_id)
    return count


# --- embedding-model change -------------------------------------------------------------------------------


def knowledge_base_reembed(*, knowledge_base_id: int, batch: int = 128) -> str:
    """Re-embed every chunk with the pending model into ``embedding_next`` (search keeps using the current
    embeddings meanwhile), then swap both the vectors and the knowledge base's model in one transaction."""
    kb = KnowledgeBase.unscoped.filter(pk=knowledge_base_id).first()
    if kb is None or not kb.pending_embedding_model:
        return "nothing"
    target = kb.pending_embedding_model
    embedder = get_embedder(target)

    def fill(limit: int | None) -> int:
        done = 0
        while limit is None or done < limit:
            rows = list(
                Chunk.unscoped.filter(knowledge_base_id=kb.pk, embedding_next__isnull=True)
                .order_by("id")
                .values_list("id", "heading", "text")[:batch]
            )
            if not rows:
                break
            vectors = embedder.embed_array([embedding_text(h, t) for _, h, t in rows])
            with connection.cursor() as cur:
                cur.execute(
                    "UPDATE knowledge_chunk c SET embedding_next = v.e::vector "
                    "FROM unnest(%s::bigint[], %s::text[]) AS v(id, e) WHERE c.id = v.id",
                    [[r[0] for r in rows], [_vector_literal(v) for v in vectors]],
                )
            done += len(rows)
        return done

    fill(None)
    with transaction.atomic():
        locked = KnowledgeBase.unscoped.select_for_update().filter(pk=kb.pk).first()
        if locked is None or locked.pending_embedding_model != target:
            return "superseded"
        fill(None)  # chunks indexed since the first pass
        with connection.cursor() as cur:
            cur.execute(
                "UPDATE knowledge_chunk SET embedding = embedding_next, embedding_next = NULL "
                "WHERE knowledge_base_id = %s",
                [kb.pk],
            )
        locked.embedding_model = target
        locked.embedding_dim = embedder.dimension
        locked.pending_embedding_model = ""
        locked.updated_at = timezone.now()
        locked.save(update_fields=["embedding_model", "embedding_dim", "pending_embedding_model", "updated_at"])
    return "switched"
