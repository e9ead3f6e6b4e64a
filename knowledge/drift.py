"""Embedding drift: are the questions people ask still about what the knowledge bases hold?

Every dense search records a ``QuerySample`` (``query_sample_record``, called by ``knowledge.selectors.chunk_search``):
a fixed random projection of the query's embedding onto ``DIMENSIONS`` directions (the text and the embedding itself
are never kept, and the projection cannot be turned back into either) and the best dense similarity the search
found; ``portal_retrieval_searches_total{support}`` counts the searches whose best passage was weakly similar
(under ``KNOWLEDGE_DRIFT_WEAK_SIMILARITY``).

A scheduled job (``knowledge.drift_check``, every ``KNOWLEDGE_DRIFT_INTERVAL`` seconds) compares, per knowledge base,
the last ``KNOWLEDGE_DRIFT_WINDOW_HOURS`` of queries with a sample of its chunks projected the same way:

- the cosine distance between the two centroids;
- the population stability index (PSI) per projected dimension, with bins at the chunks' quantiles, averaged;
- the share of the window's searches with weak support.

Each check is a ``DriftReport`` row (charted in the console; exported at scrape time as
``portal_embedding_drift_*{tenant, knowledge_base}``); a knowledge base whose PSI passes ``KNOWLEDGE_DRIFT_PSI_ALERT``
or whose weak-support share passes ``KNOWLEDGE_DRIFT_WEAK_ALERT`` is flagged ``drifted`` (an audit event when it
becomes so; Prometheus alerts on the gauges). Samples older than ``KNOWLEDGE_DRIFT_RETENTION_HOURS`` are deleted.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models.expressions import RawSQL
from django.utils import timezone

from core.metrics import RETRIEVAL_SEARCHES, label_value
from knowledge.models import Chunk, DriftReport, KnowledgeBase, QuerySample
from tenants.models import Tenant
from tenants.services import audit_record

logger = logging.getLogger(__name__)

DIMENSIONS = 32  # random directions a query is projected onto (fixed: stored samples are compared across checks)
_SEED = 20_240_611  # the projection is the same in every process and across restarts
_EPSILON = 1e-4  # PSI's floor for an empty bin
_REPORTS_KEPT = timedelta(days=90)


@functools.cache
def _projection(dimension: int) -> np.ndarray:
    """A fixed Gaussian random projection (Johnson-Lindenstrauss): inner products are kept on average."""
    rng = np.random.default_rng(_SEED + dimension)
    return (rng.standard_normal((DIMENSIONS, dimension)) / math.sqrt(DIMENSIONS)).astype(np.float64)


def project(vectors: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` normalized, then projected: shape (n, DIMENSIONS)."""
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.asarray((matrix / norms) @ _projection(matrix.shape[1]).T)


# --- recording (every search) ----------------------------------------------------------------------------------


def query_sample_record(
    *,
    tenant: Tenant,
    embedding_model: str,
    knowledge_base_ids: Sequence[int],
    vector: Sequence[float],
    best_distance: float | None,
) -> None:
    """One dense search's sample (see the module docstring) and the weak-support counter."""
    similarity = None if best_distance is None else 1.0 - float(best_distance)
    weak = similarity is None or similarity < settings.KNOWLEDGE_DRIFT_WEAK_SIMILARITY
    RETRIEVAL_SEARCHES.labels(tenant=label_value(tenant.slug), support="weak" if weak else "ok").inc()
    if not settings.KNOWLEDGE_DRIFT_SAMPLE:
        return
    QuerySample.objects.create(
        tenant=tenant,
        embedding_model=embedding_model[:200],
        knowledge_base_ids=sorted({int(i) for i in knowledge_base_ids}),
        projection=[round(float(x), 6) for x in project(np.asarray([vector]))[0]],
        best_similarity=None if similarity is None else round(similarity, 6),
    )


# --- statistics ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftStats:
    queries: int
    chunks: int
    centroid_distance: float
    psi: float
    weak_share: float


def centroid_distance(queries: np.ndarray, reference: np.ndarray) -> float:
    a, b = queries.mean(axis=0), reference.mean(axis=0)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denominator == 0:
        return 1.0
    return float(1.0 - np.dot(a, b) / denominator)


def population_stability(queries: np.ndarray, reference: np.ndarray) -> float:
    """PSI per column, with bins at the reference's quantiles (deciles, fewer for a small reference), averaged:
    sum of (q - r) * ln(q / r) over the bins. Between two samples of one population it stays under 0.1; questions
    and the passages that answer them differ by nature, so on-topic questions sit near 0.2 against the chunks (hence
    the default alert at 0.4)."""
    bins = max(2, min(10, len(reference) // 5))
    total = 0.0
    for j in range(reference.shape[1]):
        edges = np.unique(np.quantile(reference[:, j], np.linspace(0, 1, bins + 1)[1:-1]))
        ref = np.bincount(np.searchsorted(edges, reference[:, j], side="right"), minlength=len(edges) + 1)
        cur = np.bincount(np.searchsorted(edges, queries[:, j], side="right"), minlength=len(edges) + 1)
        r = np.maximum(ref / ref.sum(), _EPSILON)
        q = np.maximum(cur / cur.sum(), _EPSILON)
        total += float(np.sum((q - r) * np.log(q / r)))
    return total / reference.shape[1]


def drift_stats(*, queries: np.ndarray, reference: np.ndarray, similarities: Sequence[float | None]) -> DriftStats:
    threshold = settings.KNOWLEDGE_DRIFT_WEAK_SIMILARITY
    weak = sum(1 for s in similarities if s is None or s < threshold)
    return DriftStats(
        queries=len(queries),
        chunks=len(reference),
        centroid_distance=round(centroid_distance(queries, reference), 6),
        psi=round(population_stability(queries, reference), 6),
        weak_share=round(weak / len(similarities), 6) if similarities else 0.0,
    )


def _reference(kb: KnowledgeBase, limit: int) -> np.ndarray:
    """Up to ``limit`` of the knowledge base's chunk embeddings, a uniform sample, projected."""
    chunks: Any = Chunk.objects.for_tenant(kb.tenant_id).filter(knowledge_base=kb)
    total = chunks.count()
    if total == 0:
        return np.zeros((0, DIMENSIONS))
    if total > limit:  # a uniform sample without sorting the whole knowledge base
        chunks = chunks.alias(draw=RawSQL("random()", [])).filter(draw__lt=min(1.0, 1.5 * limit / total))
    rows = [np.asarray(v, dtype=np.float64) for v in chunks.values_list("embedding", flat=True)[:limit]]
    return project(np.vstack(rows)) if rows else np.zeros((0, DIMENSIONS))


# --- the check (beat) ---------------------------------------------------------------------------------------------


def knowledge_base_drift_check(*, kb: KnowledgeBase, now: datetime | None = None) -> DriftReport | None:
    """Compare the window's queries to ``kb`` with its chunks; a report, or None with too few queries or chunks."""
    now = now or timezone.now()
    since = now - timedelta(hours=settings.KNOWLEDGE_DRIFT_WINDOW_HOURS)
    samples = list(
        QuerySample.objects.for_tenant(kb.tenant_id)
        .filter(
            created_at__gte=since,
            created_at__lt=now,
            embedding_model=kb.embedding_model,
            knowledge_base_ids__contains=[kb.pk],
        )
        .values_list("projection", "best_similarity")
    )
    samples = [(p, s) for p, s in samples if len(p) == DIMENSIONS]
    if len(samples) < settings.KNOWLEDGE_DRIFT_MIN_QUERIES:
        return None
    reference = _reference(kb, settings.KNOWLEDGE_DRIFT_REFERENCE_CHUNKS)
    if len(reference) < 2:
        return None
    stats = drift_stats(
        queries=np.asarray([p for p, _ in samples], dtype=np.float64),
        reference=reference,
        similarities=[s for _, s in samples],
    )
    drifted = stats.psi > settings.KNOWLEDGE_DRIFT_PSI_ALERT or stats.weak_share > settings.KNOWLEDGE_DRIFT_WEAK_ALERT
    previous = DriftReport.objects.for_tenant(kb.tenant_id).filter(knowledge_base=kb).order_by("-created_at").first()
    report = DriftReport.objects.create(
        tenant_id=kb.tenant_id,
        knowledge_base=kb,
        created_at=now,
        window_start=since,
        embedding_model=kb.embedding_model,
        queries=stats.queries,
        chunks=stats.chunks,
        centroid_distance=stats.centroid_distance,
        psi=stats.psi,
        weak_share=stats.weak_share,
        drifted=drifted,
    )
    if drifted and (previous is None or not previous.drifted):
        audit_record(
            action="knowledge.drift",
            tenant=kb.tenant,
            actor_label="system",
            target=kb,
            details={
                "psi": stats.psi,
                "centroid_distance": stats.centroid_distance,
                "weak_share": stats.weak_share,
                "queries": stats.queries,
            },
        )
    return report


def drift_check_all(*, now: datetime | None = None) -> list[DriftReport]:
    """The beat job: every knowledge base with chunks, then the retention of samples and reports."""
    now = now or timezone.now()
    reports = []
    for kb in KnowledgeBase.unscoped.select_related("tenant").filter(bm25_chunk_count__gt=0).order_by("pk"):
        try:
            report = knowledge_base_drift_check(kb=kb, now=now)
        except Exception:
            logger.exception("drift check failed", extra={"knowledge_base_id": kb.pk})
            continue
        if report is not None:
            reports.append(report)
    QuerySample.unscoped.filter(created_at__lt=now - timedelta(hours=settings.KNOWLEDGE_DRIFT_RETENTION_HOURS)).delete()
    DriftReport.unscoped.filter(created_at__lt=now - _REPORTS_KEPT).delete()
    return reports
