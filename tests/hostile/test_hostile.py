"""The hostile corpus (tests/hostile/corpus.py) through every entry point that takes text or files: each case ends
within its budget with a result or a clear error, and the process still answers afterwards.

Files: parsed in the limited child process and chunked (what ingestion does), one end to end through upload and
the ingestion task. Texts: mask, inspect_input, inspect_chunks, inspect_output and search in process, and through
the HTTP doors (/api/v1 search, /v1/chat/completions) of a live server. ``make bench-hostile`` runs the same corpus
and prints the figures."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from knowledge.chunking import chunk_sections
from knowledge.parsing import DocumentRejected
from knowledge.sandbox import parse_document_isolated
from knowledge.services import parse_limits
from tests.hostile.corpus import Case, file_cases, text_cases
from tests.live_server import LiveServer, live_portal  # noqa: F401  (fixture)

BUDGET_S = 5.0  # per case; a loaded 2-core test machine gets the same figure as make bench-hostile's target
FILES = file_cases()
TEXTS = text_cases()


def _within_budget(fn: Any) -> Any:
    started = time.monotonic()
    value = fn()
    elapsed = time.monotonic() - started
    assert elapsed <= BUDGET_S * 3, f"took {elapsed:.1f} s"  # 3× slack for the shared test machine
    return value


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in FILES])
def test_every_hostile_file_parses_or_is_refused_with_a_reason(case: Case) -> None:
    def parse() -> str:
        try:
            parsed = parse_document_isolated(data=case.data, filename=case.filename, limits=parse_limits())
        except DocumentRejected as rejected:
            assert rejected.message.endswith(".") and len(rejected.message) > 20, rejected.message
            return "rejected"
        chunk_sections(parsed.sections, chunk_size=400, overlap=60)
        return "parsed"

    _within_budget(parse)
    # the worker lives on: an ordinary file still parses
    assert parse_document_isolated(data=b"Still here.", filename="ok.txt").sections[0].text == "Still here."


@pytest.mark.django_db
def test_a_hostile_upload_ends_as_failed_or_indexed_and_the_next_file_is_indexed(world: Any) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from knowledge.models import Document
    from knowledge.services import document_ingest, document_upload, knowledge_base_create

    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Hostile")
    laughs = next(c for c in FILES if c.name == "docx-entity-expansion")
    deep = next(c for c in FILES if c.name == "deep-html-unclosed")
    for case in (laughs, deep):
        [result] = document_upload(
            knowledge_base=kb,
            actor=world.member,
            files=[SimpleUploadedFile(case.filename, case.data)],  # type: ignore[list-item]
        )
        _within_budget(lambda result=result: document_ingest(document_id=result.document.pk))
        doc = Document.objects.for_tenant(world.tenant).get(pk=result.document.pk)
        assert doc.status in ("indexed", "failed")
        assert doc.status == "indexed" or doc.error
        if case is laughs and doc.status == "indexed":
            assert not any("lollollol" * 1000 in c.text for c in doc.chunks.all())  # entities never expanded
    [ok] = document_upload(
        knowledge_base=kb,
        actor=world.member,
        files=[SimpleUploadedFile("ok.txt", b"Fine text.")],  # type: ignore[list-item]
    )
    document_ingest(document_id=ok.document.pk)
    assert Document.objects.for_tenant(world.tenant).get(pk=ok.document.pk).status == "indexed"


@pytest.mark.django_db
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in TEXTS])
def test_every_hostile_text_is_guarded_and_searched_within_budget(world: Any, case: Case, settings: Any) -> None:
    from guardrails.services import inspect_chunks, inspect_input, inspect_output, mask
    from knowledge.selectors import chunk_search
    from tenants.models import Role

    settings.GUARDRAIL_MAX_CHARS = 100_000
    text = case.text
    _within_budget(lambda: mask(tenant=world.tenant, scope_key="conversation:1", text=text))
    _within_budget(lambda: inspect_input(tenant=world.tenant, text=text))
    _within_budget(lambda: inspect_chunks(tenant=world.tenant, texts=[text[:4000]] * 4))
    _within_budget(
        lambda: inspect_output(
            tenant=world.tenant,
            scope_key="conversation:1",
            text=text,
            user_text="hi",
            canary="c4n4ry",
            sources=[text[:2000]],
        )
    )
    _within_budget(
        lambda: chunk_search(tenant=world.tenant, knowledge_base_ids=None, query=text[:2000], k=4, role=Role.VIEWER)
    )


@pytest.mark.slow
def test_the_http_doors_answer_hostile_texts_and_keep_serving(world: Any, live_portal: LiveServer) -> None:  # noqa: F811
    from tenants.services import api_key_create

    _, secret = api_key_create(tenant=world.tenant, name="hostile", created_by=world.admin)
    headers = {"Authorization": f"Bearer {secret}"}
    for case in TEXTS:
        text = case.text
        started = time.monotonic()
        search = httpx.post(
            f"{live_portal.url}/api/v1/knowledge-bases/search/",
            json={"query": text[:2000], "k": 4},
            headers=headers,
            timeout=60,
        )
        chat = httpx.post(
            f"{live_portal.url}/v1/chat/completions",
            json={"model": "any", "max_tokens": 1, "messages": [{"role": "user", "content": text}]},
            headers=headers,
            timeout=60,
        )
        elapsed = time.monotonic() - started
        assert elapsed <= BUDGET_S * 3, (case.name, elapsed)
        for response in (search, chat):
            assert response.status_code < 500 or response.status_code == 503, (case.name, response.text[:300])
            assert response.headers["content-type"].startswith("application/json"), case.name
        if chat.status_code >= 400:
            assert chat.json()["error"]["message"], case.name
    health = httpx.get(f"{live_portal.url}/healthz", timeout=10)  # the process still answers (no engine runs here)
    assert health.status_code in (200, 503) and health.json()["checks"]["database"]["ok"], health.text
