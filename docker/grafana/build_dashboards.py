"""Writes the Grafana dashboards under docker/grafana/dashboards/ from the compact definitions below.

    python docker/grafana/build_dashboards.py

Edit the definitions, rerun, commit the JSON (tests/test_docker.py checks that the files are current and that every
query names a metric that exists: the portal's (portal/metrics.py), django-prometheus's, or an engine's listed in
``ENGINE_METRICS``). Replicas report the same database-derived gauges, so those are aggregated with ``max``;
counters and histograms are summed over replicas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}

#: Metrics the engines themselves export (scraped by the engine-* jobs), plus Prometheus's own ``up``.
ENGINE_METRICS = frozenset(
    {
        "up",
        # llama.cpp llama-server --metrics
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:tokens_predicted_total",
        "llamacpp:prompt_tokens_total",
        # vLLM
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        # Text Generation Inference
        "tgi_queue_size",
        "tgi_batch_current_size",
    }
)


@dataclass
class Panel:
    title: str
    exprs: list[tuple[str, str]]  # (PromQL, legend)
    kind: str = "timeseries"  # timeseries | stat | bargauge | table
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def q(quantile: float, metric: str, by: str) -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket[$__rate_interval])))"


TENANT = '{tenant=~"$tenant"}'


def q_by(quantile: float, metric: str, by: str, selector: str = "") -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket{selector}[$__rate_interval])))"


DASHBOARDS: dict[str, tuple[str, str, list[Panel]]] = {
    "portal-latency": (
        "Portal · Latency",
        "Time to first token, time per output token, pipeline stages and HTTP latency.",
        [
            Panel(
                "Time to first token (p50 / p95 / p99)",
                [
                    (q(0.5, "portal_ttft_seconds", "backend"), "p50 {{backend}}"),
                    (q(0.95, "portal_ttft_seconds", "backend"), "p95 {{backend}}"),
                    (q(0.99, "portal_ttft_seconds", "backend"), "p99 {{backend}}"),
                ],
                unit="s",
            ),
            Panel(
                "Time per output token (p50 / p95)",
                [
                    (q(0.5, "portal_tpot_seconds", "backend"), "p50 {{backend}}"),
                    (q(0.95, "portal_tpot_seconds", "backend"), "p95 {{backend}}"),
                ],
                unit="s",
            ),
            Panel(
                "TTFT p95 by model and adapter",
                [(q(0.95, "portal_ttft_seconds", "model, adapter"), "{{model}} / {{adapter}}")],
                unit="s",
            ),
            Panel(
                "Pipeline stages (p95)", [(q(0.95, "portal_pipeline_stage_seconds", "stage"), "{{stage}}")], unit="s"
            ),
            Panel(
                "HTTP latency by view (p95)",
                [(q(0.95, "django_http_requests_latency_seconds_by_view_method", "view"), "{{view}}")],
                unit="s",
            ),
            Panel(
                "HTTP responses by status",
                [
                    (
                        "sum by (status) "
                        "(rate(django_http_responses_total_by_status_view_method_total[$__rate_interval]))",
                        "{{status}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Model requests by outcome",
                [("sum by (outcome) (rate(portal_llm_requests_total[$__rate_interval]))", "{{outcome}}")],
                unit="reqps",
            ),
            Panel(
                "Database query time (p95)",
                [(q(0.95, "django_db_query_duration_seconds", "alias"), "{{alias}}")],
                unit="s",
            ),
        ],
    ),
    "portal-tokens": (
        "Portal · Tokens",
        "Tokens in and out, by department, model and adapter.",
        [
            Panel(
                "Tokens per second by direction",
                [(f"sum by (direction) (rate(portal_tokens_total{TENANT}[$__rate_interval]))", "{{direction}}")],
                unit="short",
            ),
            Panel(
                "Tokens in the range",
                [(f"sum(increase(portal_tokens_total{TENANT}[$__range]))", "tokens")],
                kind="stat",
                width=6,
            ),
            Panel(
                "Output share",
                [
                    (
                        f'sum(increase(portal_tokens_total{{direction="out", tenant=~"$tenant"}}[$__range])) '
                        f"/ sum(increase(portal_tokens_total{TENANT}[$__range]))",
                        "out / all",
                    )
                ],
                kind="stat",
                unit="percentunit",
                width=6,
            ),
            Panel(
                "Tokens per second by department",
                [(f"sum by (tenant) (rate(portal_tokens_total{TENANT}[$__rate_interval]))", "{{tenant}}")],
            ),
            Panel(
                "Tokens per second by model and adapter",
                [
                    (
                        f"sum by (model, adapter) (rate(portal_tokens_total{TENANT}[$__rate_interval]))",
                        "{{model}} / {{adapter}}",
                    )
                ],
            ),
            Panel(
                "Engine tokens generated (llama.cpp)",
                [("sum by (instance) (rate(llamacpp:tokens_predicted_total[$__rate_interval]))", "{{instance}}")],
            ),
            Panel(
                "Top departments in the range",
                [(f"topk(10, sum by (tenant) (increase(portal_tokens_total{TENANT}[$__range])))", "{{tenant}}")],
                kind="bargauge",
            ),
        ],
    ),
    "portal-cost": (
        "Portal · Cost per tenant",
        "Cost from settled usage (prices per 1,000 tokens in the admin console) and quota refusals.",
        [
            Panel(
                "Cost in the range by department",
                [(f"sort_desc(sum by (tenant) (increase(portal_cost_total{TENANT}[$__range])))", "{{tenant}}")],
                kind="bargauge",
                unit="currencyUSD",
            ),
            Panel(
                "Total cost in the range",
                [(f"sum(increase(portal_cost_total{TENANT}[$__range]))", "cost")],
                kind="stat",
                unit="currencyUSD",
                width=6,
            ),
            Panel(
                "Cost per 1,000 tokens",
                [
                    (
                        f"1000 * sum(increase(portal_cost_total{TENANT}[$__range])) "
                        f"/ sum(increase(portal_tokens_total{TENANT}[$__range]))",
                        "per 1k tokens",
                    )
                ],
                kind="stat",
                unit="currencyUSD",
                width=6,
            ),
            Panel(
                "Cost per hour by department",
                [(f"3600 * sum by (tenant) (rate(portal_cost_total{TENANT}[$__rate_interval]))", "{{tenant}}")],
                unit="currencyUSD",
            ),
            Panel(
                "Quota refusals by department and reason",
                [
                    (
                        f"sum by (tenant, reason) (increase(portal_quota_rejections_total{TENANT}[$__rate_interval]))",
                        "{{tenant}}: {{reason}}",
                    )
                ],
            ),
            Panel(
                "Monthly budget used by department",
                [(f"max by (tenant) (portal_budget_used_ratio{TENANT})", "{{tenant}}")],
                kind="bargauge",
                unit="percentunit",
                description="This month's settled cost over the department's budget (1 = spent).",
                extra={"fieldConfig": {"defaults": {"unit": "percentunit", "min": 0, "max": 1.2}, "overrides": []}},
            ),
            Panel(
                "Budget alerts in the range",
                [
                    (
                        f"sum by (tenant, level) (increase(portal_budget_alerts_total{TENANT}[$__range]))",
                        "{{tenant}}: {{level}}",
                    )
                ],
                kind="stat",
            ),
            Panel(
                "Cost and tokens by department (table)",
                [
                    (f"sum by (tenant) (increase(portal_cost_total{TENANT}[$__range]))", "cost"),
                    (f"sum by (tenant) (increase(portal_tokens_total{TENANT}[$__range]))", "tokens"),
                ],
                kind="table",
                width=24,
            ),
        ],
    ),
    "portal-guardrails": (
        "Portal · Guardrails",
        "Guardrail decisions by stage and PII entities found (types and counts only, never values).",
        [
            Panel(
                "Decisions by stage and decision",
                [
                    (
                        "sum by (stage, decision) (rate(portal_guardrail_decisions_total[$__rate_interval]))",
                        "{{stage}}: {{decision}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Blocked share (input)",
                [
                    (
                        "sum(increase("
                        'portal_guardrail_decisions_total{stage="input", decision="block"}[$__range])) '
                        '/ sum(increase(portal_guardrail_decisions_total{stage="input"}[$__range]))',
                        "blocked",
                    )
                ],
                kind="stat",
                unit="percentunit",
                width=6,
            ),
            Panel(
                "Warnings and blocks in the range",
                [
                    (
                        'sum by (decision) (increase(portal_guardrail_decisions_total{decision!="allow"}[$__range]))',
                        "{{decision}}",
                    )
                ],
                kind="stat",
                width=6,
            ),
            Panel(
                "PII entities by type",
                [("sum by (entity_type) (rate(portal_pii_entities_total[$__rate_interval]))", "{{entity_type}}")],
            ),
            Panel(
                "PII entities by action in the range",
                [("sum by (action) (increase(portal_pii_entities_total[$__range]))", "{{action}}")],
                kind="bargauge",
            ),
        ],
    ),
    "portal-quality": (
        "Portal · Answer quality and drift",
        "Groundedness, abstentions, guard verdicts and thumbs up/down per department and model; embedding drift "
        "and weak retrieval support per knowledge base.",
        [
            Panel(
                "Groundedness median by department",
                [(q_by(0.5, "portal_answer_groundedness", "tenant", TENANT), "{{tenant}}")],
                unit="percentunit",
            ),
            Panel(
                "Groundedness p10 / p50 by model",
                [
                    (q_by(0.1, "portal_answer_groundedness", "model", TENANT), "p10 {{model}}"),
                    (q_by(0.5, "portal_answer_groundedness", "model", TENANT), "p50 {{model}}"),
                ],
                unit="percentunit",
            ),
            Panel(
                "Turns by outcome",
                [
                    (
                        f"sum by (outcome) (rate(portal_answers_total{TENANT}[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Abstention share by department and model",
                [
                    (
                        'sum by (tenant, model) (rate(portal_answers_total{outcome="abstained", tenant=~"$tenant"}'
                        "[$__rate_interval])) / sum by (tenant, model) "
                        '(rate(portal_answers_total{outcome=~"answered|abstained", tenant=~"$tenant"}'
                        "[$__rate_interval]))",
                        "{{tenant}} / {{model}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Blocked and warned verdicts by department",
                [
                    (
                        'sum by (tenant, stage, decision) (rate(portal_answer_verdicts_total{decision=~"block|warn", '
                        'tenant=~"$tenant"}[$__rate_interval]))',
                        "{{tenant}} {{stage}}: {{decision}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Blocked share of questions by department",
                [
                    (
                        'sum by (tenant) (rate(portal_answer_verdicts_total{stage="input", decision="block", '
                        'tenant=~"$tenant"}[$__rate_interval])) / sum by (tenant) '
                        '(rate(portal_answer_verdicts_total{stage="input", tenant=~"$tenant"}[$__rate_interval]))',
                        "{{tenant}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Thumbs up and down by department and model",
                [
                    (
                        f"sum by (tenant, model, rating) (increase(portal_answer_feedback_total{TENANT}[$__range]))",
                        "{{tenant}} / {{model}}: {{rating}}",
                    )
                ],
                kind="bargauge",
            ),
            Panel(
                "Thumbs-down share",
                [
                    (
                        'sum(increase(portal_answer_feedback_total{rating="down", tenant=~"$tenant"}[$__range])) '
                        f"/ sum(increase(portal_answer_feedback_total{TENANT}[$__range]))",
                        "down / all",
                    )
                ],
                kind="stat",
                unit="percentunit",
                width=6,
            ),
            Panel(
                "Weak-support searches",
                [
                    (
                        'sum(increase(portal_retrieval_searches_total{support="weak", tenant=~"$tenant"}[$__range])) '
                        f"/ sum(increase(portal_retrieval_searches_total{TENANT}[$__range]))",
                        "weak / all",
                    )
                ],
                kind="stat",
                unit="percentunit",
                width=6,
            ),
            Panel(
                "Embedding drift: PSI by knowledge base",
                [
                    (
                        f"max by (tenant, knowledge_base) (portal_embedding_drift_psi{TENANT})",
                        "{{tenant}} kb {{knowledge_base}}",
                    )
                ],
                description="Population stability index of the window's queries against the knowledge base's chunks "
                "(over random projections); on-topic questions sit near 0.2, above 0.4 they moved.",
            ),
            Panel(
                "Embedding drift: centroid distance by knowledge base",
                [
                    (
                        f"max by (tenant, knowledge_base) (portal_embedding_drift_centroid_distance{TENANT})",
                        "{{tenant}} kb {{knowledge_base}}",
                    )
                ],
            ),
            Panel(
                "Weak retrieval support by knowledge base",
                [
                    (
                        f"max by (tenant, knowledge_base) (portal_embedding_drift_weak_support_ratio{TENANT})",
                        "{{tenant}} kb {{knowledge_base}}",
                    )
                ],
                unit="percentunit",
            ),
            Panel(
                "Searches by support",
                [
                    (
                        f"sum by (tenant, support) (rate(portal_retrieval_searches_total{TENANT}[$__rate_interval]))",
                        "{{tenant}}: {{support}}",
                    )
                ],
                unit="reqps",
            ),
        ],
    ),
    "portal-ingestion": (
        "Portal · Ingestion",
        "Documents by state, the waiting queue, indexing throughput and the Celery tasks behind it.",
        [
            Panel(
                "Documents by state", [("max by (state) (portal_ingestion_documents)", "{{state}}")], kind="bargauge"
            ),
            Panel("Waiting to be ingested", [("max(portal_ingestion_queue_depth)", "queued")], kind="stat", width=6),
            Panel(
                "Failed documents",
                [('max(portal_ingestion_documents{state="failed"})', "failed")],
                kind="stat",
                width=6,
            ),
            Panel("Queue depth over time", [("max(portal_ingestion_queue_depth)", "queued")]),
            Panel(
                "Chunks indexed per second by department",
                [(f"sum by (tenant) (rate(portal_ingestion_chunks_total{TENANT}[$__rate_interval]))", "{{tenant}}")],
            ),
            Panel(
                "Celery tasks by state",
                [("sum by (task, state) (rate(portal_celery_tasks_total[$__rate_interval]))", "{{task}}: {{state}}")],
            ),
            Panel("Celery task time (p95)", [(q(0.95, "portal_celery_task_seconds", "task"), "{{task}}")], unit="s"),
        ],
    ),
    "portal-pool": (
        "Portal · Pool health",
        "Backends up, circuit breakers, in-flight requests and the engines' own queue and cache signals.",
        [
            Panel("Backends up", [("max by (backend) (portal_pool_backend_up)", "{{backend}}")], kind="stat", width=12),
            Panel(
                "Circuit breakers open",
                [("max by (backend) (portal_pool_breaker_open)", "{{backend}}")],
                kind="stat",
                width=12,
            ),
            Panel("In-flight requests (portal's count)", [("sum by (backend) (portal_pool_inflight)", "{{backend}}")]),
            Panel(
                "Engine queues",
                [
                    ("sum by (instance) (llamacpp:requests_deferred)", "llama.cpp deferred {{instance}}"),
                    ("sum by (instance) (vllm:num_requests_waiting)", "vLLM waiting {{instance}}"),
                    ("sum by (instance) (tgi_queue_size)", "TGI queue {{instance}}"),
                ],
            ),
            Panel(
                "Engine running requests",
                [
                    ("sum by (instance) (llamacpp:requests_processing)", "llama.cpp {{instance}}"),
                    ("sum by (instance) (vllm:num_requests_running)", "vLLM {{instance}}"),
                    ("sum by (instance) (tgi_batch_current_size)", "TGI batch {{instance}}"),
                ],
            ),
            Panel(
                "vLLM KV cache usage",
                [
                    ("max by (instance) (vllm:kv_cache_usage_perc)", "{{instance}}"),
                    ("max by (instance) (vllm:gpu_cache_usage_perc)", "{{instance}} (older vLLM)"),
                ],
                unit="percentunit",
            ),
            Panel(
                "Model request errors by backend",
                [
                    (
                        'sum by (backend, outcome) (rate(portal_llm_requests_total{outcome!="ok"}[$__rate_interval]))',
                        "{{backend}}: {{outcome}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Scrape targets up", [('up{job=~"engine-.*|portal-.*"}', "{{job}} {{instance}}")], kind="stat", width=24
            ),
        ],
    ),
}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, object]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
        | ({"format": "table", "instant": True} if panel.kind == "table" else {})
        for i, (expr, legend) in enumerate(panel.exprs)
    ]
    options: dict[str, object] = {}
    if panel.kind == "timeseries":
        options = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    elif panel.kind in ("stat", "bargauge"):
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": options,
        "targets": targets,
    } | panel.extra


def dashboard_json(uid: str) -> dict[str, object]:
    title, description, panels = DASHBOARDS[uid]
    laid_out = []
    x = y = row_height = 0
    for i, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(_panel_json(panel, i, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    uses_tenant = any("$tenant" in expr for p in panels for expr, _ in p.exprs)
    variables: list[dict[str, object]] = []
    if uses_tenant:
        variables.append(
            {
                "name": "tenant",
                "label": "Department",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": "label_values(portal_tokens_total, tenant)", "refId": "tenant"},
                "definition": "label_values(portal_tokens_total, tenant)",
                "includeAll": True,
                "multi": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
                "sort": 1,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["enterprise-llm-portal"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "links": [
            {"type": "dashboards", "tags": ["enterprise-llm-portal"], "asDropdown": True, "title": "Portal dashboards"}
        ],
        "panels": laid_out,
    }


def render(uid: str) -> str:
    return json.dumps(dashboard_json(uid), indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for uid in DASHBOARDS:
        (OUT / f"{uid}.json").write_text(render(uid))
        print(f"wrote {OUT / f'{uid}.json'}")


if __name__ == "__main__":
    main()
