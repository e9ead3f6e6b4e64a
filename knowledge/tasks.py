"""Celery tasks of the knowledge app: thin wrappers around knowledge.services.

``ingest_document`` is queued on commit by the fair dispatcher (``services.document_dispatch``) on the ``ingest``
queue. It acknowledges late and is rejected (redelivered) when its worker dies, so a killed worker's document is
ingested again from the start; the rerun replaces the chunks in one transaction, never duplicates them.
Transient errors (database connection, embedding service) are retried with exponential backoff; when the retries
are used up, the document is marked failed with a readable message. (Celery's Django fix-up closes stale
database connections around each task in the worker.)
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from knowledge import drift, queueing, services

logger = logging.getLogger(__name__)


class TransientIngestError(Exception):
    """A temporary failure (e.g. the embedding service did not answer): retry later."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientIngestError,
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
)
try:  # the production embedding backend's HTTP errors
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    TRANSIENT_ERRORS = (*TRANSIENT_ERRORS, httpx.TransportError, HfHubHTTPError)
except ImportError:  # pragma: no cover
    pass


class IngestTask(Task):  # type: ignore[misc]
    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        document_id = (args or [None])[0] if args else kwargs.get("document_id")
        if document_id is not None:
            services.document_attempt_release(document_id=int(document_id))

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        document_id = (args or [None])[0] if args else kwargs.get("document_id")
        if document_id is None:
            return
        logger.warning("ingestion of document %s gave up: %s", document_id, type(exc).__name__)
        try:
            services.document_mark_failed(
                document_id=int(document_id),
                message="A temporary problem (database or embedding service) kept this file from being indexed. "
                "Use re-index to try again.",
            )
        except Exception:
            logger.exception("could not mark document %s failed", document_id)


@shared_task(
    bind=True,
    base=IngestTask,
    name=queueing.INGEST_DOCUMENT,
    queue=settings.INGEST_QUEUE,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
    soft_time_limit=1800,
    time_limit=1900,
)
def ingest_document(self: Task, document_id: int) -> str:
    if services.document_is_done(document_id=document_id):
        return "already indexed"  # a stale copy of a message whose work already completed (e.g. a redelivery)
    if services.document_is_poison(document_id=document_id):
        return "failed"  # earlier attempts each killed their worker: set aside with a readable reason
    try:
        return services.document_ingest(document_id=document_id)
    except SoftTimeLimitExceeded:
        services.document_mark_failed(
            document_id=document_id, message="Indexing took too long (over 30 minutes); split the file and try again."
        )
        return "failed"


@shared_task(
    name=queueing.REEMBED_KNOWLEDGE_BASE,
    queue=settings.INGEST_QUEUE,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=10,
    retry_backoff_max=600,
    max_retries=10,
)
def reembed_knowledge_base(knowledge_base_id: int) -> str:
    return services.knowledge_base_reembed(knowledge_base_id=knowledge_base_id)


@shared_task(name=queueing.INGEST_SWEEP, queue=settings.INGEST_QUEUE, ignore_result=True)
def ingest_sweep() -> dict[str, int]:
    return services.ingest_sweep()


@shared_task(name="knowledge.drift_check", ignore_result=True, acks_late=False, time_limit=900)
def drift_check() -> int:
    """Beat: compare each knowledge base's recent queries with its chunks (``knowledge.drift``)."""
    return len(drift.drift_check_all())
