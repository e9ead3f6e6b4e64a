"""The portal's own Prometheus metrics, defined once here and imported where they are observed.

Labels never carry PII or free text: only tenant slugs, model/adapter/backend names, stages and decisions
(pass names read from the database through :func:`label_value`).

- Celery workers export through prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (``make
  run`` sets it under ``var/``; the container entrypoint under ``/tmp``): every process writes its samples there and
  ``/metrics`` merges them (:func:`metrics_registry`). In containers each worker also serves its own merged samples on
  ``PORTAL_METRICS_PORT`` (see ``portal/metrics_views.py``).
- State gauges (documents by ingestion state, the ingestion queue depth, backend up, breaker open) are set from the
  database at scrape time by :func:`metrics_refresh_state`; other code need not set them.
- ``/metrics`` is served by ``core.metrics_views.metrics`` (a bearer token or an allowed network).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.apps import apps
from django.db.models import Count
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)

TTFT = Histogram(
    "portal_ttft_seconds", "Time to first token", ["backend", "model", "adapter"], buckets=_LATENCY_BUCKETS
)
TPOT = Histogram(
    "portal_tpot_seconds",
    "Mean time per output token after the first",
    ["backend", "model", "adapter"],
    buckets=_TPOT_BUCKETS,
)
TOKENS = Counter("portal_tokens_total", "Tokens processed", ["direction", "tenant", "model", "adapter"])
COST = Counter("portal_cost_total", "Cost in the configured currency", ["tenant"])
REQUESTS = Counter("portal_llm_requests_total", "Model requests by outcome", ["backend", "model", "outcome"])
GUARDRAIL_DECISIONS = Counter("portal_guardrail_decisions_total", "Guardrail decisions", ["stage", "decision"])
PII_ENTITIES = Counter("portal_pii_entities_total", "PII entities found (counts only)", ["entity_type", "action"])
INGESTION_DOCUMENTS = Gauge(
    "portal_ingestion_documents", "Documents by ingestion state", ["state"], multiprocess_mode="livemax"
)
INGESTION_QUEUE_DEPTH = Gauge(
    "portal_ingestion_queue_depth", "Documents waiting to be ingested", multiprocess_mode="livemax"
)
INGESTION_CHUNKS = Counter("portal_ingestion_chunks_total", "Chunks indexed", ["tenant"])
POOL_BACKEND_UP = Gauge(
    "portal_pool_backend_up", "1 when a backend is healthy", ["backend"], multiprocess_mode="livemax"
)
POOL_INFLIGHT = Gauge(
    "portal_pool_inflight", "In-flight requests per backend", ["backend"], multiprocess_mode="livesum"
)
POOL_BREAKER_OPEN = Gauge(
    "portal_pool_breaker_open", "1 when a backend's circuit breaker is open", ["backend"], multiprocess_mode="livemax"
)
QUOTA_REJECTIONS = Counter("portal_quota_rejections_total", "Requests refused by quota", ["tenant", "reason"])
PIPELINE_STAGE = Histogram(
    "portal_pipeline_stage_seconds", "Chat pipeline stage durations", ["stage"], buckets=_LATENCY_BUCKETS
)
AGENT_STEPS = Counter("portal_agent_steps_total", "Agent steps by kind", ["kind"])

# --- Budgets ---------------------------------------------------------------------------------------------
BUDGET_USED = Gauge(
    "portal_budget_used_ratio",
    "Share of the department's monthly budget spent this month (UTC); departments without a budget are left out",
    ["tenant"],
    multiprocess_mode="livemax",
)
BUDGET_ALERTS = Counter("portal_budget_alerts_total", "Budget alerts raised, by level", ["tenant", "level"])

# --- Answer quality (per department and model; see chat/quality.py) ---------------------------------------
_SHARE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ANSWER_GROUNDEDNESS = Histogram(
    "portal_answer_groundedness",
    "Share of an answer's sentences supported by its cited passages (answers with sources only)",
    ["tenant", "model"],
    buckets=_SHARE_BUCKETS,
)
ANSWERS = Counter(
    "portal_answers_total",
    "Chat turns by outcome (answered, abstained, blocked, error)",
    ["tenant", "model", "outcome"],
)
ANSWER_VERDICTS = Counter(
    "portal_answer_verdicts_total",
    "Guard verdicts on chat turns (input, passages, output) by decision",
    ["tenant", "model", "stage", "decision"],
)
ANSWER_FEEDBACK = Counter(
    "portal_answer_feedback_total", "Thumbs up and down given to answers", ["tenant", "model", "rating"]
)

# --- Retrieval and embedding drift (see knowledge/drift.py) -----------------------------------------------
RETRIEVAL_SEARCHES = Counter(
    "portal_retrieval_searches_total",
    "Dense searches by support: weak when the best passage's similarity is under KNOWLEDGE_DRIFT_WEAK_SIMILARITY",
    ["tenant", "support"],
)
DRIFT_CENTROID = Gauge(
    "portal_embedding_drift_centroid_distance",
    "Cosine distance between the centroid of recent queries and the knowledge base's chunk centroid",
    ["tenant", "knowledge_base"],
    multiprocess_mode="livemax",
)
DRIFT_PSI = Gauge(
    "portal_embedding_drift_psi",
    "Population stability index of recent queries against the knowledge base's chunks (mean over projections)",
    ["tenant", "knowledge_base"],
    multiprocess_mode="livemax",
)
DRIFT_WEAK_SUPPORT = Gauge(
    "portal_embedding_drift_weak_support_ratio",
    "Share of the window's searches of a knowledge base whose best passage was weakly similar",
    ["tenant", "knowledge_base"],
    multiprocess_mode="livemax",
)

# --- Celery workers --------------------------------------------------------------------------------------
CELERY_TASKS = Counter("portal_celery_tasks_total", "Celery tasks finished, by task and state", ["task", "state"])
CELERY_TASK_SECONDS = Histogram(
    "portal_celery_task_seconds", "Celery task run time", ["task"], buckets=(*_LATENCY_BUCKETS, 60, 300, 900)
)

#: Every metric family the portal defines, by name (the Grafana dashboards may only query these, django-prometheus's
#: and the engines' own; tests/test_docker.py checks it).
PORTAL_METRIC_NAMES: frozenset[str] = frozenset(
    m._name
    for m in (
        TTFT,
        TPOT,
        TOKENS,
        COST,
        REQUESTS,
        GUARDRAIL_DECISIONS,
        PII_ENTITIES,
        INGESTION_DOCUMENTS,
        INGESTION_QUEUE_DEPTH,
        INGESTION_CHUNKS,
        POOL_BACKEND_UP,
        POOL_INFLIGHT,
        POOL_BREAKER_OPEN,
        QUOTA_REJECTIONS,
        PIPELINE_STAGE,
        AGENT_STEPS,
        BUDGET_USED,
        BUDGET_ALERTS,
        ANSWER_GROUNDEDNESS,
        ANSWERS,
        ANSWER_VERDICTS,
        ANSWER_FEEDBACK,
        RETRIEVAL_SEARCHES,
        DRIFT_CENTROID,
        DRIFT_PSI,
        DRIFT_WEAK_SUPPORT,
        CELERY_TASKS,
        CELERY_TASK_SECONDS,
    )
)

_SAFE_LABEL = re.compile(r"[^A-Za-z0-9_.:/@+-]")


def label_value(value: object, *, default: str = "none") -> str:
    """A label value that cannot carry free text: empty → ``default``, anything outside ``[A-Za-z0-9_.:/@+-]``
    replaced by ``_``, at most 64 characters. Use it for names taken from the database (adapters, models)."""
    text = "" if value is None else str(value)
    if not text:
        return default
    return _SAFE_LABEL.sub("_", text)[:64]


# --- Collection ------------------------------------------------------------------------------------------
def multiprocess_dir() -> str | None:
    """The directory where every process writes its samples (prometheus_client multiprocess mode), if enabled.

    It must be in the environment before ``prometheus_client`` is imported (the launcher and the container
    entrypoint set it), so it is read from there and not from Django settings."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_registry() -> CollectorRegistry:
    """What to export: in multiprocess mode a fresh registry that merges the samples of every process (web, Celery
    worker children, beat) from the shared directory; otherwise this process's default registry."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def metrics_render() -> tuple[bytes, str]:
    """The Prometheus text exposition of :func:`metrics_registry` and its content type."""
    return generate_latest(metrics_registry()), CONTENT_TYPE_LATEST


def metrics_mark_process_dead(pid: int) -> None:
    """Forget a dead process's live gauges (Celery calls it when a prefork child exits)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, path)


def metrics_multiprocess_dir_reset(path: Path) -> None:
    """Empty (or create) a multiprocess directory before the processes that write to it start."""
    path.mkdir(parents=True, exist_ok=True)
    for file in path.glob("*.db"):
        file.unlink(missing_ok=True)


_seen_backends: set[str] = set()


def metrics_refresh_state() -> None:
    """Set the state gauges from the database, at scrape time: documents by ingestion state, the ingestion queue
    depth, and per backend whether it is up and whether its circuit breaker is open. The database is the one truth
    for these (health probes and ingestion tasks write it), so every replica reports the same values."""
    try:
        document = apps.get_model("knowledge", "Document")
    except LookupError:  # pragma: no cover - the knowledge app is always installed
        document = None
    if document is not None:
        rows = document.unscoped.values("status").annotate(n=Count("id")).order_by()
        counts = {row["status"]: row["n"] for row in rows}
        for state in document.Status.values:
            INGESTION_DOCUMENTS.labels(state=state).set(counts.get(state, 0))
        INGESTION_QUEUE_DEPTH.set(counts.get(document.Status.QUEUED, 0))

    _refresh_budgets()
    _refresh_drift()
    try:
        backend = apps.get_model("inference_pool", "Backend")
    except LookupError:  # pragma: no cover
        return
    current: set[str] = set()
    for name, health, breaker in backend.objects.filter(enabled=True).values_list("name", "health", "breaker"):
        label = label_value(name)
        current.add(label)
        POOL_BACKEND_UP.labels(backend=label).set(1 if health == "up" else 0)
        POOL_BREAKER_OPEN.labels(backend=label).set(1 if breaker == "open" else 0)
    for gone in _seen_backends - current:
        for gauge in (POOL_BACKEND_UP, POOL_BREAKER_OPEN):
            if multiprocess_dir() is not None:  # samples cannot be removed from the shared files: report 0
                gauge.labels(backend=gone).set(0)
                continue
            try:
                gauge.remove(gone)
            except KeyError:
                pass
    _seen_backends.clear()
    _seen_backends.update(current)


def _refresh_budgets() -> None:
    """``portal_budget_used_ratio``: this UTC month's settled cost (the month's quota counter) over the budget."""
    try:
        counter = apps.get_model("tenants", "QuotaCounter")
        quota = apps.get_model("tenants", "Quota")
    except LookupError:  # pragma: no cover - the tenants app is always installed
        return
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    budgets = {
        tenant_id: budget
        for tenant_id, budget in quota.objects.filter(monthly_budget__gt=0).values_list("tenant_id", "monthly_budget")
    }
    rows = counter.unscoped.filter(period="month", window_start=month, tenant_id__in=list(budgets)).values_list(
        "tenant_id", "tenant__slug", "cost"
    )
    for tenant_id, slug, cost in rows:
        BUDGET_USED.labels(tenant=label_value(slug)).set(float(cost / budgets[tenant_id]))


def _refresh_drift() -> None:
    """``portal_embedding_drift_*``: each knowledge base's latest drift check of the last two days."""
    try:
        report = apps.get_model("knowledge", "DriftReport")
    except LookupError:  # pragma: no cover
        return
    since = datetime.now(UTC) - timedelta(days=2)
    rows = (
        report.unscoped.filter(created_at__gte=since)
        .order_by("knowledge_base_id", "-created_at", "-id")
        .distinct("knowledge_base_id")
        .values_list("knowledge_base_id", "tenant__slug", "centroid_distance", "psi", "weak_share")
    )
    for kb_id, slug, centroid, psi, weak in rows:
        labels = {"tenant": label_value(slug), "knowledge_base": str(kb_id)}
        DRIFT_CENTROID.labels(**labels).set(centroid)
        DRIFT_PSI.labels(**labels).set(psi)
        DRIFT_WEAK_SUPPORT.labels(**labels).set(weak)
