"""Optional OpenTelemetry tracing: one span per pipeline stage, with the GenAI semantic-convention attributes.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: spans go to an
OTLP/HTTP collector in batches (the exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables; the service is
``OTEL_SERVICE_NAME``, default ``enterprise-portal``). Otherwise :func:`stage_span` still times the stage for
Prometheus and costs next to nothing.

Usage (the chat pipeline)::

    with stage_span("chat.pipeline", tenant=tenant.slug, conversation_id=str(conversation.pk)):
        with stage_span("chat.retrieve", hits=0) as stage:
            hits = chunk_search(...)
            stage.set(hits=len(hits))
        with stage_span("chat.inference", operation="chat", model=model, adapter=adapter) as stage:
            ...
            stage.set(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens, backend=backend)
        timings["inference"] = stage.elapsed_s

Short keyword names map to the GenAI conventions (``model`` → ``gen_ai.request.model``, ``input_tokens`` →
``gen_ai.usage.input_tokens``, ... see ``GENAI_ATTRIBUTES``); other names become ``portal.<name>``. Values are numbers,
booleans, short strings or lists of them; strings pass :func:`core.logging.redact` and are cut to 200 characters.
Never pass prompt or answer text, file names or PII. Every stage also observes
``portal_pipeline_stage_seconds{stage=<name>}`` (do not observe it again), and an exception marks the span as an error
(``error.type`` = the exception's class) and propagates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from core.logging import redact
from core.metrics import PIPELINE_STAGE, label_value

GENAI_ATTRIBUTES: dict[str, str] = {
    "operation": "gen_ai.operation.name",  # chat | embeddings | text_completion
    "provider": "gen_ai.provider.name",  # vllm | tgi | llamacpp | openai
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "seed": "gen_ai.request.seed",
    "stream": "gen_ai.request.stream",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "finish_reasons": "gen_ai.response.finish_reasons",
    "response_id": "gen_ai.response.id",
    "ttft_s": "gen_ai.response.time_to_first_chunk",
    "conversation_id": "gen_ai.conversation.id",
    "data_source": "gen_ai.data_source.id",
    "server_address": "server.address",
    "server_port": "server.port",
    "error_type": "error.type",
}
_MAX_STRING = 200

_provider: TracerProvider | None = None


def tracing_configure(*, exporter: SpanExporter | None = None) -> bool:
    """Install the portal's tracer provider. With ``exporter`` (tests: an ``InMemorySpanExporter``) spans are
    exported synchronously to it, replacing any earlier provider; without it, an OTLP/HTTP exporter is installed
    once if an endpoint is configured. Returns whether tracing is on."""
    global _provider
    if exporter is None:
        if _provider is not None:
            return True
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return False
        # lazy: the OTLP exporter (protobuf, requests) is loaded only when an endpoint is configured
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = _new_provider(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)  # so that libraries' own instrumentation joins the same traces
        _provider = provider
        return True
    if _provider is not None:
        _provider.shutdown()
    _provider = _new_provider(SimpleSpanProcessor(exporter))
    return True


def tracing_shutdown() -> None:
    """Flush and drop the portal's provider (stage spans become no-ops again)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def _new_provider(processor: Any) -> TracerProvider:
    service = os.environ.get("OTEL_SERVICE_NAME") or "enterprise-portal"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor)
    return provider


def _tracer() -> trace.Tracer:
    if _provider is not None:
        return _provider.get_tracer("portal")
    return trace.get_tracer("portal")


def _clean(value: Any) -> Any:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)[:_MAX_STRING]
    if isinstance(value, Sequence):
        items = [_clean(v) for v in value if v is not None]
        if all(isinstance(v, str) for v in items) or all(isinstance(v, bool | int | float) for v in items):
            return items
        return [str(v) for v in items]
    return redact(str(value))[:_MAX_STRING]


def span_attributes(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with short names mapped to semantic-convention keys, ``None`` dropped and values cleaned."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        name = GENAI_ATTRIBUTES.get(key) or (key if "." in key else f"portal.{key}")
        out[name] = _clean(value)
    return out


class StageSpan:
    """The handle :func:`stage_span` yields: add attributes as they become known, read the elapsed time."""

    def __init__(self, name: str, span: Span) -> None:
        self.name = name
        self.span = span
        self._started = time.perf_counter()
        self._ended: float | None = None

    def set(self, **attrs: Any) -> None:
        self.span.set_attributes(span_attributes(attrs))

    @property
    def elapsed_s(self) -> float:
        return (self._ended if self._ended is not None else time.perf_counter()) - self._started


@contextmanager
def stage_span(name: str, **attrs: Any) -> Iterator[StageSpan]:
    """A span for one pipeline stage (a child of the current span, if any) that also observes its duration in
    ``portal_pipeline_stage_seconds``. With ``operation`` set (a model call) the span is a CLIENT span named
    ``"{operation} {model}"`` as the GenAI conventions ask; otherwise an INTERNAL span named ``name``."""
    operation = attrs.get("operation")
    span_name = f"{operation} {attrs.get('model') or ''}".strip() if operation else name
    kind = SpanKind.CLIENT if operation else SpanKind.INTERNAL
    attributes = span_attributes(attrs)
    attributes["portal.stage"] = name
    with _tracer().start_as_current_span(
        span_name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        stage = StageSpan(name, span)
        try:
            yield stage
        except BaseException as exc:
            span.record_exception(exc)
            span.set_attribute("error.type", type(exc).__qualname__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
        finally:
            stage._ended = time.perf_counter()
            PIPELINE_STAGE.labels(stage=label_value(name)).observe(stage.elapsed_s)
