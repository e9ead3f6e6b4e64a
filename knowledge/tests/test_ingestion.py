"""The ingestion pipeline, run in-process (the real-worker tests are in test_worker.py)."""

from __future__ import annotations

from collections import deque

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from knowledge import services
from knowledge.models import Chunk, Document, KnowledgeBase, KnowledgeBaseTerm
from knowledge.selectors import chunk_search
from knowledge.services import (
    document_cancel,
    document_delete,
    document_dispatch,
    document_ingest,
    document_reindex,
    document_upload,
    knowledge_base_create,
    knowledge_base_reembed,
    knowledge_base_update,
)
from knowledge.tests import files
from knowledge.tests.conftest import ingest, upload
from tenants.models import Quota
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _bm25_stats_from_scratch(kb: KnowledgeBase) -> tuple[dict[str, int], int, int]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT u.lexeme, count(*) FROM knowledge_chunk c CROSS JOIN LATERAL unnest(c.search) u "
            "WHERE c.knowledge_base_id = %s GROUP BY u.lexeme",
            [kb.pk],
        )
        dfs = dict(cur.fetchall())
        cur.execute(
            "SELECT count(*), coalesce(sum((SELECT sum(array_length(positions, 1)) FROM unnest(search))), 0) "
            "FROM knowledge_chunk WHERE knowledge_base_id = %s",
            [kb.pk],
        )
        n, total = cur.fetchone()
    return dfs, int(n), int(total)


def _assert_bm25_stats_consistent(kb: KnowledgeBase) -> None:
    kb.refresh_from_db()
    dfs, n, total = _bm25_stats_from_scratch(kb)
    kept = dict(KnowledgeBaseTerm.objects.for_tenant(kb.tenant).filter(knowledge_base=kb).values_list("term", "df"))
    assert kept == dfs
    assert (kb.bm25_chunk_count, kb.bm25_total_length) == (n, total)


@pytest.mark.parametrize(
    ("name", "data", "kind", "needle", "heading", "page"),
    [
        (
            "report.pdf",
            files.make_pdf(["Intro page.", "Revenue grew by 12 percent in Berlin."]),
            "pdf",
            "Revenue",
            "",
            2,
        ),
        (
            "policy.docx",
            files.make_docx([("h1", "Leave"), ("p", "Everyone has thirty vacation days.")]),
            "docx",
            "thirty vacation days",
            "Leave",
            None,
        ),
        ("travel.html", files.HTML, "html", "Hotel costs are reimbursed", "Travel policy › Expenses", None),
        ("onboarding.md", files.MARKDOWN, "markdown", "VPN account", "Onboarding › Accounts", None),
        ("notes.txt", b"The cafeteria opens at eight.", "text", "cafeteria", "", None),
        ("people.csv", files.CSV, "csv", "Carol", "name, role, office", None),
    ],
    ids=["pdf", "docx", "html", "markdown", "text", "csv"],
)
def test_each_format_is_indexed_and_found(world, kb, name, data, kind, needle, heading, page):
    doc = ingest(upload(kb, name, data, actor=world.member))
    assert (doc.status, doc.progress, doc.error, doc.detected_type) == ("indexed", 100, "", kind)
    assert doc.chunk_count == Chunk.objects.for_tenant(world.tenant).filter(document=doc).count() >= 1
    hits = chunk_search(tenant=world.tenant, knowledge_base_ids=[kb.pk], query=needle, k=3, role="viewer")
    assert hits and hits[0].document_id == doc.pk and hits[0].document_name == name
    top = next(h for h in hits if needle in h.text)
    assert (top.heading, top.page) == (heading, page)
    _assert_bm25_stats_consistent(kb)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog garbage", "The PDF is damaged"),
        ("locked.pdf", files.make_encrypted_pdf(["payroll"]), "password-protected"),
        ("bomb.docx", files.make_docx_bomb(60), "zip bomb"),
        ("invoice.pdf", files.make_executable(), "Windows program, not a document"),
        ("empty.txt", b"", "The file is empty."),
        ("scan.pdf", files.make_pdf([""]), "No text could be found in the PDF"),
    ],
    ids=["corrupt-pdf", "encrypted-pdf", "docx-zip-bomb", "exe-renamed-pdf", "empty", "no-text-pdf"],
)
def test_hostile_files_end_failed_with_a_clear_message(world, kb, name, data, message):
    doc = upload(kb, name, data)
    if doc.status == "queued":
        assert document_ingest(document_id=doc.pk) == "failed"  # returns normally: the worker never crashes
    doc.refresh_from_db()
    assert doc.status == "failed"
    assert message in doc.error
    assert not Chunk.objects.for_tenant(world.tenant).filter(document=doc).exists()


def test_oversize_upload_is_recorded_failed_without_storing_it(world, kb):
    Quota.objects.filter(tenant=world.tenant).update(max_upload_mb=1)
    doc = upload(kb, "huge.txt", b"word " * 300_000)
    assert doc.status == "failed"
    assert doc.error == "The file is 1.4 MB; your department's limit is 1 MB per file."
    assert not hasattr(doc, "content") or doc.content is None


def test_document_limit_from_quota(world, kb):
    Quota.objects.filter(tenant=world.tenant).update(max_documents=1)
    first = upload(kb, "a.txt", b"first file")
    second = upload(kb, "b.txt", b"second file")
    assert first.status == "queued"
    assert (second.status, second.error) == ("failed", "Your department has reached its limit of 1 documents.")


def test_same_file_twice_is_not_indexed_twice(world, kb):
    data = b"The parking garage closes at ten."
    first = ingest(upload(kb, "parking.txt", data))
    [again] = document_upload(knowledge_base=kb, actor=None, files=[SimpleUploadedFile("copy.txt", data)])
    assert again.duplicate and not again.created and again.document.pk == first.pk
    assert Document.objects.for_tenant(world.tenant).filter(knowledge_base=kb).count() == 1
    # the same bytes in another knowledge base are a different document
    other = knowledge_base_create(tenant=world.tenant, actor=None, name="Other")
    assert upload(other, "parking.txt", data).pk != first.pk


def test_running_the_task_twice_gives_the_same_chunks(world, kb):
    text = " ".join(f"Paragraph {i} explains expense rule number {i} for travel." for i in range(150))
    doc = ingest(upload(kb, "rules.txt", text.encode()))

    def snapshot():
        rows = Chunk.objects.for_tenant(world.tenant).filter(document=doc).order_by("ordinal")
        return [(c.ordinal, c.text, c.token_count, [round(x, 5) for x in c.embedding]) for c in rows]

    before = snapshot()
    kb.refresh_from_db()
    stats = (kb.bm25_chunk_count, kb.bm25_total_length)
    assert len(before) >= 3
    ingest(doc)
    assert snapshot() == before
    kb.refresh_from_db()
    assert (kb.bm25_chunk_count, kb.bm25_total_length) == stats
    _assert_bm25_stats_consistent(kb)


def test_bm25_statistics_follow_ingestion_deletion_and_reindex(world, kb):
    a = ingest(upload(kb, "a.txt", b"Trains are booked for trips under 500 km. Trains are cheap."))
    b = ingest(upload(kb, "b.txt", b"Flights need approval from a director."))
    _assert_bm25_stats_consistent(kb)
    assert KnowledgeBaseTerm.objects.for_tenant(world.tenant).get(knowledge_base=kb, term="train").df == 1
    document_delete(document=a, actor=world.admin)
    _assert_bm25_stats_consistent(kb)
    assert not KnowledgeBaseTerm.objects.for_tenant(world.tenant).filter(knowledge_base=kb, term="train").exists()
    kb.chunk_size = 64
    kb.save()
    document_reindex(document=b, actor=world.admin)
    ingest(b)
    _assert_bm25_stats_consistent(kb)


def test_cancel_stops_ingestion_and_writes_nothing(world, kb):
    doc = upload(kb, "later.txt", b"Cancelled before it ran.")
    document_cancel(document=doc, actor=world.member)
    assert document_ingest(document_id=doc.pk) == "skipped"
    doc.refresh_from_db()
    assert doc.status == "cancelled"
    assert not Chunk.objects.for_tenant(world.tenant).filter(document=doc).exists()


def test_cancel_during_embedding_writes_nothing(world, kb, monkeypatch):
    doc = upload(kb, "long.txt", " ".join(f"Sentence {i} about benefits." for i in range(400)).encode())
    kb.chunk_size = 64
    kb.save()
    real_progress = services._progress

    def cancel_midway(document_id, **fields):
        if fields.get("progress", 0) > 20:  # a user presses cancel while the batches are embedding
            Document.objects.for_tenant(world.tenant).filter(pk=doc.pk).update(status="cancelled")
        real_progress(document_id, **fields)

    monkeypatch.setattr(services, "_progress", cancel_midway)
    assert document_ingest(document_id=doc.pk) == "cancelled"
    assert not Chunk.objects.for_tenant(world.tenant).filter(document=doc).exists()


def test_delete_while_indexing_writes_nothing(world, kb, monkeypatch):
    doc = upload(kb, "gone.txt", b"This file is deleted while it is indexed.")
    real_replace = services.chunks_replace

    def delete_first(**kwargs):
        Document.objects.for_tenant(world.tenant).filter(pk=doc.pk).delete()
        return real_replace(**kwargs)

    monkeypatch.setattr(services, "chunks_replace", delete_first)
    assert document_ingest(document_id=doc.pk) == "cancelled"
    assert not Chunk.unscoped.filter(document_id=doc.pk).exists()


def test_progress_is_written_as_it_goes(world, kb, monkeypatch, settings):
    doc = upload(kb, "steps.txt", " ".join(f"Line {i} of the handbook." for i in range(300)).encode())
    kb.chunk_size = 64
    kb.save()
    seen = []
    real_progress = services._progress

    def record(document_id, **fields):
        real_progress(document_id, **fields)
        row = Document.objects.for_tenant(world.tenant).get(pk=document_id)
        seen.append((row.status, row.progress))

    monkeypatch.setattr(services, "_progress", record)
    settings.KNOWLEDGE_EMBED_BATCH = 4
    settings.KNOWLEDGE_PROGRESS_INTERVAL = 0  # every step is written
    ingest(doc)
    statuses = [s for s, _ in seen]
    assert statuses[:3] == ["parsing", "chunking", "embedding"]
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and len(set(progress)) >= 5
    doc.refresh_from_db()
    assert (doc.status, doc.progress) == ("indexed", 100)
    # by default the writes are throttled (at most about three a second), but the start is always written
    seen.clear()
    settings.KNOWLEDGE_PROGRESS_INTERVAL = 3600
    document_reindex(document=doc, actor=None)
    ingest(doc)
    assert seen == [("parsing", 5)]


def test_fair_dispatch_one_tenant_batch_does_not_stall_another(world, kb, django_capture_on_commit_callbacks, settings):
    """A FIFO broker fed by the dispatcher: tenant A's 20 files are in line first, B's single file still goes
    through after at most the per-tenant cap of A's documents."""
    settings.INGEST_TENANT_CONCURRENCY = 2
    broker: deque[int] = deque()
    original_send = services._send
    services._send = broker.extend  # type: ignore[assignment]
    try:
        other = TenantFactory()
        other_kb = knowledge_base_create(tenant=other, actor=None, name="Other")
        with django_capture_on_commit_callbacks(execute=True):
            document_upload(
                knowledge_base=kb,
                actor=None,
                files=[SimpleUploadedFile(f"a{i}.txt", f"Batch file {i} of tenant A.".encode()) for i in range(20)],
            )
        assert len(broker) == 2  # only the cap is handed to the broker
        with django_capture_on_commit_callbacks(execute=True):
            [single] = document_upload(
                knowledge_base=other_kb, actor=None, files=[SimpleUploadedFile("b.txt", b"Tenant B's one file.")]
            )
        order = []
        while broker:
            doc_id = broker.popleft()
            with django_capture_on_commit_callbacks(execute=True):
                document_ingest(document_id=doc_id)
            order.append(doc_id)
    finally:
        services._send = original_send  # type: ignore[assignment]
    assert len(order) == 21
    assert order.index(single.document.pk) <= 2
    assert Document.objects.for_tenant(world.tenant).filter(status="indexed").count() == 20


def test_dispatch_respects_the_cap_across_calls(world, kb, settings):
    settings.INGEST_TENANT_CONCURRENCY = 3
    for i in range(5):
        upload(kb, f"f{i}.txt", f"file {i}".encode())
    assert Document.objects.for_tenant(world.tenant).filter(dispatched_at__isnull=False).count() == 3
    assert document_dispatch(tenant_id=world.tenant.pk) == []


def test_changing_the_model_reembeds_in_the_background_then_switches(
    world, kb, settings, django_capture_on_commit_callbacks
):
    from knowledge.embeddings import default_model_path, reset_embedders

    settings.EMBEDDING_MODELS = {"minilm-copy": {"path": str(default_model_path()), "dimension": 384}}
    reset_embedders()
    doc = ingest(upload(kb, "a.txt", b"Company cars are electric."))
    sent = []
    from knowledge import tasks

    original = tasks.reembed_knowledge_base.apply_async
    tasks.reembed_knowledge_base.apply_async = lambda args, kwargs=None, **kw: sent.append(list(args))  # type: ignore[method-assign]
    try:
        with django_capture_on_commit_callbacks(execute=True):
            knowledge_base_update(knowledge_base=kb, actor=world.admin, embedding_model="minilm-copy")
    finally:
        tasks.reembed_knowledge_base.apply_async = original  # type: ignore[method-assign]
    assert sent == [[kb.pk]]
    kb.refresh_from_db()
    assert (kb.embedding_model, kb.pending_embedding_model) == ("all-MiniLM-L6-v2", "minilm-copy")
    # a document indexed while the re-embedding is pending is included in the swap
    ingest(upload(kb, "b.txt", b"Bicycles are reimbursed."))
    assert knowledge_base_reembed(knowledge_base_id=kb.pk) == "switched"
    kb.refresh_from_db()
    assert (kb.embedding_model, kb.pending_embedding_model) == ("minilm-copy", "")
    assert not Chunk.objects.for_tenant(world.tenant).filter(knowledge_base=kb, embedding_next__isnull=False).exists()
    hits = chunk_search(tenant=world.tenant, knowledge_base_ids=[kb.pk], query="electric cars", k=1, role="viewer")
    assert hits[0].document_id == doc.pk
    reset_embedders()


def test_unknown_or_wrong_dimension_model_is_refused(world, kb, settings):
    from core.errors import InvalidInput

    settings.EMBEDDING_MODELS = {"big": {"url": "http://tei.invalid", "dimension": 1024}}
    with pytest.raises(InvalidInput, match="1024-dimensional"):
        knowledge_base_update(knowledge_base=kb, actor=None, embedding_model="big")
    with pytest.raises(InvalidInput, match="not configured"):
        knowledge_base_update(knowledge_base=kb, actor=None, embedding_model="nope")


def test_a_stale_duplicate_message_does_not_redo_finished_work(world, kb):
    from knowledge.tasks import ingest_document

    doc = upload(kb, "done.txt", b"Indexed once.")
    assert ingest_document.apply(args=[doc.pk]).get() == "indexed"
    first_ids = set(Chunk.objects.for_tenant(world.tenant).filter(document=doc).values_list("id", flat=True))
    assert ingest_document.apply(args=[doc.pk]).get() == "already indexed"
    assert set(Chunk.objects.for_tenant(world.tenant).filter(document=doc).values_list("id", flat=True)) == first_ids
    # a re-index dispatches it again, and then the task does run
    document_reindex(document=doc, actor=None)
    assert ingest_document.apply(args=[doc.pk]).get() == "indexed"
    assert not set(Chunk.objects.for_tenant(world.tenant).filter(document=doc).values_list("id", flat=True)) & first_ids


@pytest.mark.parametrize("failures", [2, 100], ids=["recovers", "gives-up"])
def test_transient_errors_are_retried_then_reported(world, kb, monkeypatch, failures):
    from knowledge.tasks import ingest_document

    doc = upload(kb, "flaky.txt", b"The embedding service hiccups.")
    real = services.get_embedder
    calls = {"n": 0}

    def flaky(model=None):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionError("embedding service unreachable")
        return real(model)

    monkeypatch.setattr(services, "get_embedder", flaky)
    ingest_document.apply(args=[doc.pk]).get(propagate=False)
    doc.refresh_from_db()
    if failures == 2:
        assert (doc.status, calls["n"]) == ("indexed", 3)
    else:
        assert calls["n"] == 1 + ingest_document.max_retries
        assert doc.status == "failed"
        assert doc.error.startswith(
            "A temporary problem (database or embedding service) kept this file from being indexed"
        )


def test_sweep_resends_lost_messages_and_dispatches_waiting_tenants(world, kb, monkeypatch, settings):
    from datetime import timedelta

    from django.utils import timezone

    sent = []
    monkeypatch.setattr(services, "_send", sent.extend)
    settings.INGEST_TENANT_CONCURRENCY = 1
    first = upload(kb, "one.txt", b"first")
    second = upload(kb, "two.txt", b"second")
    # the first was dispatched, but its message was lost an hour ago
    Document.objects.for_tenant(world.tenant).filter(pk=first.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert services.ingest_sweep() == {"resent": 1, "dispatched": 0}
    assert sent == [first.pk]
    ingest(first)  # finishing frees the slot: the dispatcher hands over the next one
    second.refresh_from_db()
    assert second.dispatched_at is not None


def test_beat_schedules_the_sweep():
    from portal.celery import app

    app.loader.import_default_modules()
    assert "knowledge.ingest_sweep" in app.conf.beat_schedule


def test_pii_scan_records_entity_counts_never_values(world, kb, settings):
    settings.KNOWLEDGE_PII_SCAN = True
    text = b"Contact Jane Miller at jane.miller@example.com or +1 212 555 0142 about the travel policy."
    doc = ingest(upload(kb, "contacts.txt", text))
    assert doc.status == "indexed"
    assert doc.pii_counts.get("EMAIL_ADDRESS") == 1
    [chunk] = Chunk.objects.for_tenant(world.tenant).filter(document=doc)
    assert chunk.pii_counts == doc.pii_counts
    stored = str(doc.pii_counts) + str(chunk.pii_counts)
    assert "jane" not in stored.lower() and "555" not in stored


def test_pii_scan_unavailable_does_not_hold_back_indexing(world, kb, settings, monkeypatch):
    from core.errors import GuardrailUnavailable
    from guardrails import services as guard_services

    def broken(**kwargs):
        raise GuardrailUnavailable()

    settings.KNOWLEDGE_PII_SCAN = True
    monkeypatch.setattr(guard_services, "pii_counts", broken)
    doc = ingest(upload(kb, "contacts.txt", b"Mail jane@example.com"))
    assert (doc.status, doc.pii_counts) == ("indexed", {})
