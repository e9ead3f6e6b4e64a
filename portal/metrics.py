"""The portal's own Prometheus metrics, defined once here and imported where they are observed.

Labels never carry PII or free text: only tenant slugs, model/adapter/backend names, stages and decisions.
Celery workers export through prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
