"""Tracing through the real pipeline (PostgreSQL, guards, llama-server): one trace per request through both doors, a
root span with a child per stage and per model call (GenAI semantic conventions, TTFT/TPOT, the department), no
prompt or answer text unless content capture is on (then masked text only); exported with the SDK's in-memory
exporter, and once over OTLP/HTTP to a receiver the test starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from chat.services import conversation_create
from chat.tests.conftest import collect, indexed_document, ws_open
from core.tracing import tracing_configure, tracing_shutdown
from tenants.services import api_key_create
from tests.live_server import finishes_settled

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

MODEL = settings.LLAMA_MODEL_NAME
EMAIL = "jane.doe@example.com"
QUESTION = f"What is the daily meal allowance on zephyrine business trips? Reply to {EMAIL}"
HANDBOOK = (
    "# Travel policy\n\nEmployees book trains for trips shorter than 600 kilometres. "
    "The daily meal allowance on business trips is 42 euros.\n"
)
STAGES = {
    "chat.authorize",
    "chat.quota",
    "chat.input_guard",
    "chat.mask",
    "chat.retrieve",
    "chat.prompt",
    "chat.output_guard",
    "chat.persist",
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing_configure(exporter=exporter)
    yield exporter
    tracing_shutdown()


def _roots(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.parent is None and s.name == "chat.request"]


def _persisted(exporter: InMemorySpanExporter) -> int:
    return sum(1 for s in exporter.get_finished_spans() if s.name == "chat.persist")


def _wait_roots(exporter: InMemorySpanExporter, n: int) -> list[ReadableSpan]:
    """The roots of ``n`` requests, once each request's persistence span ended too (the /v1 door persists and
    settles after the client's last chunk: that span ends after its root, as a child may)."""
    deadline = time.monotonic() + 30
    while (len(_roots(exporter)) < n or _persisted(exporter) < n) and time.monotonic() < deadline:
        time.sleep(0.05)
    roots = _roots(exporter)
    assert len(roots) == n, [s.name for s in exporter.get_finished_spans()]
    return roots


def _trace(exporter: InMemorySpanExporter, root: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == root.context.trace_id]


def _texts(spans: list[ReadableSpan]) -> str:
    """Every string a span carries: names, attribute values, event names and attributes."""
    out = []
    for s in spans:
        out.append(s.name)
        for value in (s.attributes or {}).values():
            out.append(str(value))
        for event in s.events:
            out.append(event.name)
            out.extend(str(v) for v in (event.attributes or {}).values())
    return "\n".join(out)


def _model_span(trace: list[ReadableSpan]) -> ReadableSpan:
    [span] = [s for s in trace if s.attributes.get("gen_ai.operation.name") == "chat"]
    return span


def _check_model_span(span: ReadableSpan, root: ReadableSpan) -> dict[str, Any]:
    attrs = dict(span.attributes)
    assert span.name == f"chat {MODEL}" and span.kind == SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == root.context.span_id
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.finish_reasons"][0] in ("stop", "length")
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    assert attrs["gen_ai.request.max_tokens"] > 0 and attrs["gen_ai.request.stream"] is True
    assert attrs["portal.tenant"] == "alpha" and attrs["portal.backend"] == "shared-engine"
    assert "gen_ai.first_token" in [e.name for e in span.events]
    return attrs


async def test_tracing_one_trace_per_websocket_request_with_every_stage(engine_backend, world, spans):
    from knowledge.services import knowledge_base_create

    def setup() -> Any:
        kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Handbook")
        indexed_document(kb=kb, name="travel.md", text=HANDBOOK, actor=world.admin)
        return conversation_create(tenant=world.tenant, user=world.member, role="member", knowledge_base_ids=[kb.pk])

    conv = await database_sync_to_async(setup)()
    spans.clear()
    comm, connected = await ws_open(world.member, conv.pk, tenant=world.tenant)
    assert connected
    await comm.send_json_to({"type": "send", "text": QUESTION, "max_tokens": 24})
    frames = await collect(comm)
    await comm.disconnect()
    done = frames[-1]
    assert done["type"] == "done", frames

    [root] = await database_sync_to_async(_wait_roots)(spans, 1)
    trace = _trace(spans, root)
    assert len({s.context.trace_id for s in spans.get_finished_spans() if s.name.startswith("chat")}) == 1
    names = {s.name for s in trace}
    assert names >= STAGES, names
    for span in trace:
        if span is not root:  # every stage and the model call hang directly off the request's root
            assert span.parent is not None and span.parent.span_id == root.context.span_id, span.name
    root_attrs = dict(root.attributes)
    assert root.kind == SpanKind.SERVER
    assert root_attrs["portal.tenant"] == "alpha" and root_attrs["portal.door"] == "chat"
    assert root_attrs["portal.status"] == "complete" and root_attrs["gen_ai.request.model"] == MODEL
    assert root_attrs["gen_ai.conversation.id"] == str(conv.pk)
    attrs = _check_model_span(_model_span(trace), root)
    assert attrs["gen_ai.usage.output_tokens"] == done["usage"]["completion_tokens"]
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs
    # no prompt or answer text anywhere on the trace
    carried = _texts(trace)
    for text in (EMAIL, "zephyrine", "meal allowance", "42 euros"):
        assert text not in carried, text
    if len(done["text"].strip()) > 12:
        assert done["text"].strip() not in carried


def _v1(client: Any, key: str, content: str) -> Any:
    response = client.post(
        "/v1/chat/completions",
        data={"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 12, "temperature": 0},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200, response.content
    finishes_settled()  # the door persists the answer (the chat.persist span) after the client's last byte
    return response.json()


def test_tracing_the_v1_door_and_masked_content_capture(engine_backend, world, client, spans, settings):
    _, key = api_key_create(tenant=world.tenant, name="traced")
    first = _v1(client, key, "Say hello to the team.")
    settings.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = True
    second = _v1(client, key, f"Write one short greeting to {EMAIL}.")

    roots = _wait_roots(spans, 2)
    assert len({r.context.trace_id for r in roots}) == 2  # one trace per request
    by_request = {r.attributes["portal.request_id"]: r for r in roots}
    for body, captured in ((first, False), (second, True)):
        root = by_request[body["id"].removeprefix("chatcmpl-")]
        assert root.attributes["portal.door"] == "api" and root.attributes["portal.tenant"] == "alpha"
        trace = _trace(spans, root)
        assert STAGES - {"chat.retrieve"} <= {s.name for s in trace}
        attrs = _check_model_span(_model_span(trace), root)
        assert attrs["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"]
        assert attrs["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
        if captured:
            prompt = attrs["gen_ai.input.messages"]
            assert "<EMAIL_ADDRESS_1>" in prompt and EMAIL not in prompt  # masked text only
            assert "gen_ai.output.messages" in attrs
        else:
            assert "gen_ai.input.messages" not in attrs
            assert "Say hello to the team" not in _texts(trace)
    assert EMAIL not in _texts(spans.get_finished_spans())


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_tracing_over_otlp_http_to_a_receiver(engine_backend, world, client, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies = []
    tracing_shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "portal-tracing-test")
    _, key = api_key_create(tenant=world.tenant, name="otlp")
    try:
        assert tracing_configure() is True
        body = _v1(client, key, "Say hello.")
        tracing_shutdown()  # flushes the batch to the receiver
    finally:
        server.shutdown()
        server.server_close()
    assert _Receiver.bodies and {p for p, _ in _Receiver.bodies} == {"/v1/traces"}
    received: list[Any] = []
    for _, raw in _Receiver.bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(raw)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            assert service == "portal-tracing-test"
            for scope_spans in resource_spans.scope_spans:
                received.extend(scope_spans.spans)

    def attrs(span: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a in span.attributes:
            v = a.value
            out[a.key] = (
                v.string_value or v.int_value or v.double_value or list(x.string_value for x in v.array_value.values)
            )
        return out

    [root] = [s for s in received if s.name == "chat.request"]
    trace = [s for s in received if s.trace_id == root.trace_id]
    assert not root.parent_span_id
    # (the /v1 door persists after the client's last chunk: that stage may end after the exporter was shut down)
    assert STAGES - {"chat.retrieve", "chat.persist"} <= {s.name for s in trace}
    [model] = [s for s in trace if s.name == f"chat {MODEL}"]
    assert model.parent_span_id == root.span_id
    model_attrs = attrs(model)
    assert model_attrs["gen_ai.operation.name"] == "chat" and model_attrs["gen_ai.request.model"] == MODEL
    assert model_attrs["gen_ai.usage.output_tokens"] == body["usage"]["completion_tokens"]
    assert model_attrs["gen_ai.response.finish_reasons"][0] in ("stop", "length")
    assert model_attrs["portal.tenant"] == "alpha"
    assert all(s.parent_span_id == root.span_id for s in trace if s is not root)
