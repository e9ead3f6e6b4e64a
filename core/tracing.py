"""Optional OpenTelemetry tracing: one trace per request (a root span, :func:`request_span`), a child span per
pipeline stage (:func:`stage_span`) and per model call (:func:`model_call_span`, with the GenAI semantic-convention
attributes, TTFT and TPOT), the department as ``portal.tenant``. No prompt or answer text goes on a span unless
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is on, and then only the masked text the engine saw and wrote.

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

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
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
    "tpot_s": "gen_ai.response.time_per_output_chunk",
    "agent_name": "gen_ai.agent.name",
    "agent_id": "gen_ai.agent.id",
    "tool_name": "gen_ai.tool.name",
    "conversation_id": "gen_ai.conversation.id",
    "data_source": "gen_ai.data_source.id",
    "server_address": "server.address",
    "server_port": "server.port",
    "error_type": "error.type",
}
_MAX_STRING = 200
_MODEL_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "generate_content"})  # calls to a model

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
def stage_span(
    name: str, *, parent: Context | None = None, span_name: str | None = None, **attrs: Any
) -> Iterator[StageSpan]:
    """A span for one pipeline stage that also observes its duration in ``portal_pipeline_stage_seconds``: a child
    of ``parent`` (a request's root, :func:`request_span`) or else of the current span, if any. With ``operation``
    set the span is named ``"{operation} {model}"`` as the GenAI conventions ask (a CLIENT span for a model call,
    INTERNAL for ``invoke_agent`` or ``execute_tool``); otherwise an INTERNAL span named ``span_name`` or ``name``."""
    operation = attrs.get("operation")
    if span_name is None:
        span_name = f"{operation} {attrs.get('model') or ''}".strip() if operation else name
    kind = SpanKind.CLIENT if operation in _MODEL_OPERATIONS else SpanKind.INTERNAL
    attributes = span_attributes(attrs)
    attributes["portal.stage"] = name
    with _tracer().start_as_current_span(
        span_name,
        context=parent,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
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


# --- requests: a root span per request, closed by whoever started it --------------------------------------------


class RequestSpan:
    """A request's root span. It is not made current (a streamed request crosses yields and threads): stages
    name it as their parent (``stage_span(..., parent=root.context)``) and the model call too
    (:func:`model_call_span`). ``end`` closes it once (with an error status when ``error`` is given)."""

    def __init__(self, name: str, attrs: dict[str, Any]) -> None:
        self.span = _tracer().start_span(name, kind=SpanKind.SERVER, attributes=span_attributes(attrs))
        self.context: Context = trace.set_span_in_context(self.span)
        self._ended = False

    def set(self, **attrs: Any) -> None:
        self.span.set_attributes(span_attributes(attrs))

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def end(self, *, error: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        if error:
            self.span.set_attribute("error.type", error[:_MAX_STRING])
            self.span.set_status(Status(StatusCode.ERROR, error[:_MAX_STRING]))
        self.span.end()


def request_span(name: str, **attrs: Any) -> RequestSpan:
    """Start a request's root span (a new trace). ``attrs`` as for :func:`stage_span` (the department as
    ``tenant``, never text)."""
    return RequestSpan(name, attrs)


def current_context() -> Context:
    """The current trace context, to hand to work that runs elsewhere (another thread's event loop)."""
    return otel_context.get_current()


# --- model calls: a CLIENT span per call, with the GenAI conventions ---------------------------------------------

_MAX_CONTENT = 16_000


def content_capture() -> bool:
    """Whether the masked prompt and answer go on model-call spans (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_
    CONTENT``, off by default). Only ever masked text: what the engine saw and wrote."""
    return bool(settings.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT)


def _content(value: Any) -> str:
    return redact(json.dumps(value, ensure_ascii=False))[:_MAX_CONTENT]


class ModelCallSpan:
    """One model call (``gen_ai.operation.name`` chat): open across the stream, closed by :meth:`finish`."""

    def __init__(self, *, parent: Context | None, model: str, attrs: dict[str, Any]) -> None:
        attributes = span_attributes({"operation": "chat", "model": model, **attrs})
        attributes["portal.stage"] = "model_call"
        self.span = _tracer().start_span(
            f"chat {model}".strip(), context=parent, kind=SpanKind.CLIENT, attributes=attributes
        )
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.span.add_event("gen_ai.first_token")

    def messages(self, messages: Sequence[dict[str, str]]) -> None:
        """The (masked) prompt, only when content capture is on."""
        if content_capture():
            self.span.set_attribute(
                "gen_ai.input.messages",
                _content([{"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]} for m in messages]),
            )

    def finish(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        finish_reason: str,
        backend: str,
        ttft_s: float | None,
        tpot_s: float | None,
        error: str = "",
        output_text: str = "",
    ) -> None:
        if ttft_s is None and self.first_token_at is not None:
            ttft_s = self.first_token_at - self.started
        attrs: dict[str, Any] = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "finish_reasons": [finish_reason] if finish_reason else None,
            "backend": backend or None,
            "ttft_s": round(ttft_s, 6) if ttft_s is not None else None,
            "tpot_s": round(tpot_s, 6) if tpot_s is not None else None,
        }
        self.span.set_attributes(span_attributes(attrs))
        if content_capture() and output_text:
            self.span.set_attribute(
                "gen_ai.output.messages",
                _content(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": output_text}],
                            "finish_reason": finish_reason,
                        }
                    ]
                ),
            )
        if error:
            self.span.set_attribute("error.type", error[:_MAX_STRING])
            self.span.set_status(Status(StatusCode.ERROR, error[:_MAX_STRING]))
        self.span.end()


def model_call_span(*, parent: Context | None, model: str, **attrs: Any) -> ModelCallSpan:
    """Start a model call's CLIENT span, a child of ``parent`` (else of the current span)."""
    return ModelCallSpan(parent=parent, model=model, attrs=attrs)
