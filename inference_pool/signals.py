"""Load signals scraped from an engine's Prometheus ``/metrics`` page, normalised across engines.

Every engine reports ``running`` (sequences being generated), ``waiting`` (queued in the engine) and, where it
knows, ``kv_usage`` (0..1 fraction of the KV cache in use):

- vLLM: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
  (``vllm:gpu_cache_usage_perc`` before v0.10);
- TGI: ``tgi_batch_current_size``, ``tgi_queue_size``;
- llama.cpp: ``llamacpp:requests_processing``, ``llamacpp:requests_deferred`` (``llamacpp:kv_cache_usage_ratio``
  on builds that still export it).
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

_SIGNALS: dict[str, dict[str, tuple[str, ...]]] = {
    "vllm": {
        "running": ("vllm:num_requests_running",),
        "waiting": ("vllm:num_requests_waiting",),
        "kv_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    },
    "tgi": {
        "running": ("tgi_batch_current_size",),
        "waiting": ("tgi_queue_size",),
    },
    "llamacpp": {
        "running": ("llamacpp:requests_processing",),
        "waiting": ("llamacpp:requests_deferred",),
        "kv_usage": ("llamacpp:kv_cache_usage_ratio",),
    },
}


def parse_metrics(text: str) -> dict[str, float]:
    """Sum every sample of each metric over its label sets (vLLM labels per model; we want the server's total)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals


def load_signals(*, kind: str, text: str) -> dict[str, float]:
    """The normalised ``running``/``waiting``/``kv_usage`` of one engine from its /metrics text."""
    metrics = parse_metrics(text)
    names = _SIGNALS.get(kind, _SIGNALS["vllm"])
    signals: dict[str, float] = {}
    for signal, candidates in names.items():
        for name in candidates:
            if name in metrics:
                signals[signal] = metrics[name]
                break
    if "kv_usage" in signals:
        signals["kv_usage"] = min(max(signals["kv_usage"], 0.0), 1.0)
    return signals
