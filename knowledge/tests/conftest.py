from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge.models import Document, KnowledgeBase
from knowledge.services import document_ingest, document_upload, knowledge_base_create


@pytest.fixture
def kb(world: Any) -> KnowledgeBase:
    return knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Policies")


def upload(kb: KnowledgeBase, name: str, data: bytes, actor: Any = None) -> Document:
    [result] = document_upload(knowledge_base=kb, actor=actor, files=[SimpleUploadedFile(name, data)])
    return result.document


def ingest(doc: Document) -> Document:
    document_ingest(document_id=doc.pk)
    return Document.objects.for_tenant(doc.tenant_id).get(pk=doc.pk)


@pytest.fixture
def upload_and_ingest():  # type: ignore[no-untyped-def]
    def _run(kb: KnowledgeBase, name: str, data: bytes) -> Document:
        return ingest(upload(kb, name, data))

    return _run
