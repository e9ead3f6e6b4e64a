"""Enqueue the knowledge app's Celery tasks by name.

The services enqueue ingestion after commit and the tasks call the services: naming the tasks here (and nowhere
else) lets the services send them without importing ``knowledge.tasks``, which imports the services. The task
module registers these names; ``KnowledgeConfig.ready`` imports it in every process, so a send goes through the
registered task (its routing, its ``apply_async``) rather than a bare message.
"""

from __future__ import annotations

from celery import signature
from django.conf import settings

INGEST_DOCUMENT = "knowledge.ingest_document"
REEMBED_KNOWLEDGE_BASE = "knowledge.reembed_knowledge_base"
INGEST_SWEEP = "knowledge.ingest_sweep"


def ingest_enqueue(*, document_ids: list[int]) -> None:
    """Send one ingestion message per document (call it after commit: the worker must see the rows)."""
    for document_id in document_ids:
        signature(INGEST_DOCUMENT, args=[document_id], queue=settings.INGEST_QUEUE).apply_async()


def reembed_enqueue(*, knowledge_base_id: int) -> None:
    """Send the re-embedding of one knowledge base into its pending model (after commit)."""
    signature(REEMBED_KNOWLEDGE_BASE, args=[knowledge_base_id], queue=settings.INGEST_QUEUE).apply_async()
