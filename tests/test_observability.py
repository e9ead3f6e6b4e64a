"""Observability: the protected /metrics, state gauges, multiprocess merge for Celery workers, the worker exporter,
JSON logs with request/tenant/user ids, the redaction safety net, and OpenTelemetry stage spans."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.urls import path
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from core.logging import JsonFormatter, RedactingFilter, RequestContextFilter, redact
from core.metrics import metrics_refresh_state
from core.metrics_views import worker_metrics_serve
from core.tracing import stage_span, tracing_configure, tracing_shutdown
from tests.live_server import finishes_settled

TOKEN = "scrape-token-0123456789abcdef"
OUTSIDE = "203.0.113.7"  # TEST-NET-3: never in the default allowed networks


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(body: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(body)}


# --- /metrics: who may read it ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "role", ["anonymous", "other_tenant", "viewer", "member", "admin", "owner", "staff"], ids=lambda r: r
)
def test_metrics_refuse_every_session_from_a_disallowed_network(world, login_client, settings, role):
    """A browser session is no credential for metrics: from outside the allowed networks everyone is refused."""
    settings.METRICS_TOKEN = ""
    client = login_client(world.user(role))
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 403
    assert b"METRICS_ALLOWED_NETWORKS" in response.content
    assert b"portal_" not in response.content


def test_metrics_ask_for_the_token_when_one_is_configured(client, settings, db):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"portal_" not in response.content


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", f"bearer  {TOKEN[:-1]}"],
)
def test_metrics_refuse_a_wrong_token_even_from_an_allowed_network(client, settings, db, authorization):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401


def test_metrics_accept_the_token_from_anywhere(client, settings, db):
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    names = families(response.content.decode())
    assert {"portal_ttft_seconds", "portal_tokens", "portal_ingestion_queue_depth"} <= names
    # django-prometheus's own families are exported as well
    assert "django_http_requests_before_middlewares" in names


@pytest.mark.parametrize("remote_addr", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"])
def test_metrics_accept_allowed_networks_when_no_token_is_configured(client, settings, db, remote_addr):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]
    response = client.get("/metrics", REMOTE_ADDR=remote_addr)
    assert response.status_code == 200
    assert b"portal_ttft_seconds" in response.content


@pytest.mark.parametrize("remote_addr", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3"])
def test_a_configured_token_is_required_from_allowed_networks_too(client, settings, db, remote_addr):
    """A tenant-steered request from inside the portal (SSRF) arrives from loopback: loopback is no credential."""
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]
    response = client.get("/metrics", REMOTE_ADDR=remote_addr)
    assert response.status_code == 401
    assert b"portal_ttft_seconds" not in response.content
    assert client.get("/metrics", REMOTE_ADDR=remote_addr, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_with_no_allowed_network_need_the_token_even_on_loopback(client, settings, db):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []  # as in the containers (METRICS_ALLOWED_NETWORKS="")
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_ignore_forwarded_headers(client, settings, db):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR="127.0.0.1", HTTP_X_REAL_IP="127.0.0.1")
    assert response.status_code == 403


def test_metrics_are_read_only(client, db):
    assert client.post("/metrics").status_code == 405


def test_a_malformed_allowed_network_names_the_setting(client, settings, db):
    settings.METRICS_ALLOWED_NETWORKS = ["127.0.0.1/32", "not-a-network"]
    with pytest.raises(ImproperlyConfigured, match="METRICS_ALLOWED_NETWORKS has 'not-a-network'"):
        client.get("/metrics", REMOTE_ADDR=OUTSIDE)


# --- State gauges from the database -----------------------------------------------------------------------
def test_state_gauges_follow_the_database(client, world):
    from inference_pool.models import Backend, BaseModel
    from knowledge.models import Document, KnowledgeBase

    kb = KnowledgeBase.unscoped.create(tenant=world.tenant, name="Handbook", embedding_model="all-MiniLM-L6-v2")
    for i, status in enumerate(["queued", "queued", "indexed", "failed"]):
        Document.unscoped.create(
            tenant=world.tenant, knowledge_base=kb, filename=f"d{i}.txt", sha256=f"{i:064d}", status=status
        )
    base = BaseModel.objects.create(name="obs-model")
    Backend.objects.create(name="obs-up", base_url="http://127.0.0.1:9", base_model=base, health="up")
    down = Backend.objects.create(
        name="obs-down", base_url="http://127.0.0.1:9", base_model=base, health="down", breaker="open"
    )

    got = samples(client.get("/metrics").content.decode())
    assert got[("portal_ingestion_documents", (("state", "queued"),))] == 2
    assert got[("portal_ingestion_documents", (("state", "indexed"),))] == 1
    assert got[("portal_ingestion_documents", (("state", "failed"),))] == 1
    assert got[("portal_ingestion_documents", (("state", "parsing"),))] == 0
    assert got[("portal_ingestion_queue_depth", ())] == 2
    assert got[("portal_pool_backend_up", (("backend", "obs-up"),))] == 1
    assert got[("portal_pool_backend_up", (("backend", "obs-down"),))] == 0
    assert got[("portal_pool_breaker_open", (("backend", "obs-down"),))] == 1
    assert got[("portal_pool_breaker_open", (("backend", "obs-up"),))] == 0

    down.delete()
    got = samples(client.get("/metrics").content.decode())
    assert ("portal_pool_backend_up", (("backend", "obs-down"),)) not in got
    assert ("portal_pool_backend_up", (("backend", "obs-up"),)) in got


# --- Multiprocess mode: Celery worker processes merged into one /metrics ------------------------------------
WORKER_SCRIPT = r"""
import os, sys
from celery import signals
from portal.celery import app
from core.metrics import POOL_INFLIGHT, TOKENS

@app.task(name="observability-test.add")
def add(x, y):
    return x + y

n = int(sys.argv[1])
assert add.apply(args=(n, n)).get() == 2 * n  # a real task run: Celery's prerun/postrun signals fire
TOKENS.labels(direction="out", tenant="alpha", model="m", adapter="none").inc(n)
POOL_INFLIGHT.labels(backend="b1").set(n)
if sys.argv[2] == "exit":
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)  # what Celery sends in a child
    sys.exit(0)
print("ready", flush=True)
sys.stdin.read()  # stay alive (its live gauges count) until the test closes stdin
"""


def _worker(tmp: Path, n: int, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, str(n), mode],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_metrics_merge_every_worker_process(client, db, tmp_path, monkeypatch):
    done = _worker(tmp_path, 3, "exit")
    assert done.wait(timeout=120) == 0
    alive = _worker(tmp_path, 4, "stay")
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == "ready"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
        got = samples(client.get("/metrics").content.decode())
    finally:
        alive.communicate(timeout=60)
    tokens = (
        "portal_tokens_total",
        (("adapter", "none"), ("direction", "out"), ("model", "m"), ("tenant", "alpha")),
    )
    assert got[tokens] == 7  # counters: summed over both processes, the exited one included
    assert got[("portal_pool_inflight", (("backend", "b1"),))] == 4  # live gauge: the exited process is dropped
    task = ("portal_celery_tasks_total", (("state", "success"), ("task", "observability-test.add")))
    assert got[task] == 2
    assert got[("portal_celery_task_seconds_count", (("task", "observability-test.add"),))] == 2


def test_worker_exporter_serves_with_the_same_protection(db, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    done = _worker(tmp_path, 5, "exit")
    assert done.wait(timeout=120) == 0
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]  # loopback is not allowed: only the token opens it
    server = worker_metrics_serve(host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/metrics", timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    got = samples(body)
    assert got[("portal_celery_tasks_total", (("state", "success"), ("task", "observability-test.add")))] == 1


# --- JSON logs -------------------------------------------------------------------------------------------
log = logging.getLogger("portal.tests.observability")


def logged_view(request: HttpRequest) -> HttpResponse:
    log.info("reply sent to bob.smith@example.com", extra={"documents": 3, "api_key": "sk-should-not-appear"})
    return HttpResponse("ok")


urlpatterns = [path("logged/", logged_view)]


def _captured(console: Any) -> Any:
    """Point a stream handler at a buffer while the test runs; yields a reader of the JSON lines written."""
    buffer = io.StringIO()
    previous = console.setStream(buffer)
    try:
        yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    finally:
        console.setStream(previous)


@pytest.fixture
def json_lines(settings) -> Any:
    """The configured console handler (settings.LOGGING), writing into a buffer for the test."""
    console = next(h for h in logging.getLogger().handlers if isinstance(getattr(h, "formatter", None), JsonFormatter))
    yield from _captured(console)


def test_logging_settings_wire_context_and_redaction(settings):
    console = settings.LOGGING["handlers"]["console"]
    assert console["filters"] == ["connections", "request_context", "redact"]  # ACCESS_LOG is off by default
    assert settings.LOGGING["filters"]["redact"]["()"] == "core.logging.RedactingFilter"
    assert console["formatter"] == "json"


@pytest.fixture
def project_logging(settings) -> Any:
    """The project's logging as the web process configures it (an in-process uvicorn of an earlier test replaces the
    ``uvicorn`` loggers' handlers with its own), writing into a buffer."""
    import logging.config

    logging.config.dictConfig(settings.LOGGING)
    console = next(h for h in logging.getLogger("uvicorn").handlers if isinstance(h.formatter, JsonFormatter))
    yield from _captured(console)


def test_socket_handshakes_are_not_logged_while_access_logging_is_off(project_logging):
    """uvicorn and websockets write a line per WebSocket handshake, open and close on ``uvicorn.error``: 600 lines
    for 200 chat sockets. They are access lines; the server's own messages and warnings still come through."""
    json_lines = project_logging
    server = logging.getLogger("uvicorn.error")
    server.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:53386", "/ws/chat/199/")
    server.info('%s - "WebSocket %s" 403', "127.0.0.1:53390", "/ws/chat/7/")
    server.info("connection open")
    server.info("connection closed")
    server.info("Uvicorn running on %s", "http://127.0.0.1:8000")
    server.warning("connection closed")
    assert [(line["level"], line["msg"]) for line in json_lines()] == [
        ("INFO", "Uvicorn running on http://127.0.0.1:8000"),
        ("WARNING", "connection closed"),
    ]


@pytest.mark.urls(__name__)
def test_request_logs_carry_request_tenant_and_user_ids(world, login_client, json_lines):
    client = login_client(world.member)
    response = client.get("/logged/", HTTP_X_REQUEST_ID="req-42.abc")
    assert response.status_code == 200
    assert response["X-Request-ID"] == "req-42.abc"
    line = next(x for x in json_lines() if x["logger"] == log.name)
    assert line["request_id"] == "req-42.abc"
    assert line["tenant_id"] == world.tenant.id
    assert line["user_id"] == world.member.id
    assert line["level"] == "INFO"
    assert line["documents"] == 3
    assert line["msg"] == "reply sent to [EMAIL]"
    assert line["api_key"] == "[REDACTED]"
    assert "bob.smith" not in json.dumps(json_lines())


@pytest.mark.urls(__name__)
def test_anonymous_request_logs_have_an_id_and_no_tenant(client, db, json_lines):
    response = client.get("/logged/", HTTP_X_REQUEST_ID="bad id with spaces")
    generated = response["X-Request-ID"]
    assert generated != "bad id with spaces" and len(generated) == 32
    line = next(x for x in json_lines() if x["logger"] == log.name)
    assert (line["request_id"], line["tenant_id"], line["user_id"]) == (generated, None, None)
    log.info("after the request")
    after = [x for x in json_lines() if x["msg"] == "after the request"]
    assert after[0]["request_id"] == ""  # the context ends with the request


# --- Redaction safety net ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mail jane.doe@corp.example.org now", "mail [EMAIL] now"),
        ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
        ("card 5500-0000-0000-0004", "card [CARD]"),
        ("iban DE89 3704 0044 0532 0130 00", "iban [IBAN]"),
        ("ssn 078-05-1120", "ssn [SSN]"),
        ("call +44 20 7946 0958", "call [PHONE]"),
        ("call (555) 123-4567", "call [PHONE]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [REDACTED]"),
        ("db postgresql://portal:hunter2@db:5432/portal", "db postgresql://portal:[REDACTED]@db:5432/portal"),
        ('{"password": "hunter2", "n": 1}', '{"password": "[REDACTED]", "n": 1}'),
        ("client_secret=abc&x=1", "client_secret=[REDACTED]&x=1"),
        ("key ep_0123456789ab_Zx9-secretsecretsecret", "key ep_0123456789ab_[REDACTED]"),
        ("openai sk-proj-abcdefghijklmnop1234", "openai [SECRET]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [SECRET]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "jwt [JWT]"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", "[PRIVATE_KEY]"),
    ],
    ids=lambda v: v[:24],
)
def test_redact_masks_secrets_and_pii(raw, expected):
    assert redact(raw) == expected


@pytest.mark.parametrize(
    "text",
    [
        "request 3f2a9c0e1b7d4a5f8e6c2d1b0a9f8e7d took 12.5 ms",
        "at 2025-01-15T10:11:12.123Z from 10.0.0.12 port 8081",
        "prompt_tokens=120 completion_tokens: 64 max_tokens=256 tokens_in=5",
        "document 4111111111111112 chunks=12 v1.2.3",  # not a valid card number (Luhn)
        "backend local-llamacpp-0 model smollm2-135m-instruct adapter none",
    ],
)
def test_redact_leaves_operational_text_alone(text):
    assert redact(text) == text


def test_redacting_filter_covers_arguments_extras_and_tracebacks():
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("portal.tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("could not reach postgresql://u:topsecret@db/x for ann@example.com")
        except ValueError:
            logger.exception(
                "user %s failed",
                "ann@example.com",
                extra={"detail": {"token": "t0k3n-value", "who": "ann@example.com"}},
            )
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    line = json.loads(buffer.getvalue())
    assert line["msg"] == "user [EMAIL] failed"
    assert line["detail"] == {"token": "[REDACTED]", "who": "[EMAIL]"}
    assert "ValueError" in line["exc"]
    assert "topsecret" not in buffer.getvalue()
    assert "ann@example.com" not in buffer.getvalue()


# --- Tracing -----------------------------------------------------------------------------------------------
@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    tracing_configure(exporter=exporter)
    yield exporter
    tracing_shutdown()


def _stage_count(stage: str) -> float:
    for family in text_string_to_metric_families(_registry_text()):
        for s in family.samples:
            if s.name == "portal_pipeline_stage_seconds_count" and s.labels.get("stage") == stage:
                return s.value
    return 0.0


def _registry_text() -> str:
    from prometheus_client import REGISTRY, generate_latest

    return generate_latest(REGISTRY).decode()


def test_stage_spans_nest_and_carry_genai_attributes(spans):
    before = _stage_count("chat.inference")
    with stage_span("chat.pipeline", tenant="alpha", conversation_id="17"):
        with stage_span("chat.retrieve") as retrieve:
            retrieve.set(hits=3, query="who is ann@example.com?")
        with stage_span("chat.inference", operation="chat", model="smollm2-135m-instruct", adapter="legal") as s:
            s.set(input_tokens=41, output_tokens=7, finish_reasons=["stop"], provider="llamacpp")
    assert s.elapsed_s > 0
    assert _stage_count("chat.inference") == before + 1  # stages are also timed for Prometheus

    finished = {span.name: span for span in spans.get_finished_spans()}
    assert set(finished) == {"chat.pipeline", "chat.retrieve", "chat smollm2-135m-instruct"}
    root, retrieve_span = finished["chat.pipeline"], finished["chat.retrieve"]
    inference = finished["chat smollm2-135m-instruct"]
    assert root.parent is None
    assert retrieve_span.parent.span_id == root.context.span_id
    assert inference.parent.span_id == root.context.span_id
    assert inference.context.trace_id == root.context.trace_id
    assert inference.kind == SpanKind.CLIENT and retrieve_span.kind == SpanKind.INTERNAL
    attrs = dict(inference.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "smollm2-135m-instruct"
    assert attrs["gen_ai.usage.input_tokens"] == 41
    assert attrs["gen_ai.usage.output_tokens"] == 7
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.provider.name"] == "llamacpp"
    assert attrs["portal.adapter"] == "legal"
    assert attrs["portal.stage"] == "chat.inference"
    assert dict(root.attributes)["gen_ai.conversation.id"] == "17"
    assert dict(retrieve_span.attributes)["portal.query"] == "who is [EMAIL]?"  # attributes pass redaction


def test_a_failing_stage_marks_its_span_and_propagates(spans):
    with pytest.raises(TimeoutError), stage_span("chat.inference", operation="chat", model="m"):
        raise TimeoutError("engine did not answer")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "TimeoutError"
    assert [e.name for e in span.events] == ["exception"]


def test_logs_inside_a_span_carry_its_trace_id(spans):
    record = logging.makeLogRecord({"msg": "x"})
    with stage_span("chat.prompt"):
        RequestContextFilter().filter(record)
    (span,) = spans.get_finished_spans()
    assert record.trace_id == format(span.context.trace_id, "032x")


def test_stage_span_without_tracing_still_times_the_stage():
    tracing_shutdown()
    before = _stage_count("chat.settle")
    with stage_span("chat.settle", tenant="alpha") as stage:
        stage.set(output_tokens=3)
    assert _stage_count("chat.settle") == before + 1


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_otlp_exporter_is_used_only_when_an_endpoint_is_configured(monkeypatch):
    tracing_shutdown()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing_configure() is False

    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "portal-test")
    try:
        assert tracing_configure() is True
        with stage_span("chat.guard_input", decision="allow"):
            pass
        tracing_shutdown()  # flushes the batch to the collector
    finally:
        server.shutdown()
        server.server_close()
    assert [p for p, _ in _Collector.received] == ["/v1/traces"]
    body = _Collector.received[0][1]
    assert b"chat.guard_input" in body and b"portal-test" in body


def test_refresh_state_runs_without_rows(db):
    metrics_refresh_state()  # no documents, no backends: every state is 0, nothing raises
    got = samples(_registry_text())
    assert got[("portal_ingestion_queue_depth", ())] == 0
    assert got[("portal_ingestion_documents", (("state", "indexed"),))] == 0


# --- End to end: one chat request and one ingestion, then /metrics ------------------------------------------
ISSUE_METRICS = {
    "portal_ttft_seconds",
    "portal_tpot_seconds",
    "portal_tokens",
    "portal_cost",
    "portal_guardrail_decisions",
    "portal_pii_entities",
    "portal_ingestion_documents",
    "portal_ingestion_queue_depth",
    "portal_pool_backend_up",
    "portal_pool_inflight",
    "portal_quota_rejections",
}
PII = ["Maria Gonzalez", "maria.gonzalez@example.com", "+44 20 7946 0958", "Zephyr-7731"]
DOCUMENT = (
    "# Contacts\n\nThe travel desk is run by Maria Gonzalez (maria.gonzalez@example.com, +44 20 7946 0958). "
    "Trips shorter than 600 kilometres go by train. Project code Zephyr-7731.\n"
)
QUESTION = "I am Maria Gonzalez, maria.gonzalez@example.com. How do short trips work? Answer in five words."


def _label_values(body: str) -> list[str]:
    return [v for family in text_string_to_metric_families(body) for s in family.samples for v in s.labels.values()]


def _value(body: str, name: str, **labels: str) -> float:
    """The sum of a sample over every series whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@pytest.mark.engine
@pytest.mark.django_db(transaction=True)
def test_metrics_after_one_chat_request_and_one_ingestion(llama_server, world, client, settings):
    from decimal import Decimal

    from django.core.files.uploadedfile import SimpleUploadedFile

    from inference_pool.models import Backend
    from inference_pool.services import backend_register
    from knowledge.models import Document
    from knowledge.services import document_upload, knowledge_base_create
    from knowledge.tasks import ingest_document
    from tenants.models import ModelPrice, Quota
    from tenants.services import api_key_create

    settings.METRICS_TOKEN = TOKEN
    spec = llama_server.spec
    backend = backend_register(
        name="obs-engine",
        kind="llamacpp",
        base_url=spec.base_url,
        model=settings.LLAMA_MODEL_NAME,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=4,
        context_length=spec.context // spec.slots,
    )
    Backend.objects.filter(pk=backend.pk).update(health="up")
    ModelPrice.objects.create(
        model=settings.LLAMA_MODEL_NAME, input_per_1k=Decimal("0.50"), output_per_1k=Decimal("1.50")
    )
    _, key = api_key_create(tenant=world.tenant, name="observability")

    def scrape() -> str:
        response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        return response.content.decode()

    before = scrape()

    # one ingestion: the upload service, then the real Celery task (run in this process)
    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Contacts")
    [upload] = document_upload(
        knowledge_base=kb, actor=world.admin, files=[SimpleUploadedFile("maria-gonzalez.md", DOCUMENT.encode())]
    )
    ingest_document.apply(args=(upload.document.pk,)).get()
    assert Document.unscoped.get(pk=upload.document.pk).status == Document.Status.INDEXED

    # one chat request through the OpenAI-compatible door, then one the quota refuses
    body = {
        "model": settings.LLAMA_MODEL_NAME,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 12,
        "temperature": 0,
    }
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    answer = client.post("/v1/chat/completions", data=body, content_type="application/json", **headers)
    assert answer.status_code == 200, answer.content
    Quota.objects.filter(tenant=world.tenant).update(tokens_per_day=1)  # the next request cannot fit
    refused = client.post("/v1/chat/completions", data=body, content_type="application/json", **headers)
    assert refused.status_code == 429, refused.content

    # the /v1 door settles after the client's last chunk (on a thread of its own): wait for the settlement
    finishes_settled()
    after = scrape()
    for family in text_string_to_metric_families(after):
        if family.name in ISSUE_METRICS:
            assert family.samples, f"{family.name} has no samples"
    assert families(after) >= ISSUE_METRICS

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("portal_ttft_seconds_count", backend="obs-engine") == 1
    assert delta("portal_tpot_seconds_count", backend="obs-engine") == 1
    assert delta("portal_tokens_total", tenant="alpha", direction="in") > 0
    assert delta("portal_tokens_total", tenant="alpha", direction="out") > 0
    assert delta("portal_cost_total", tenant="alpha") > 0
    assert delta("portal_quota_rejections_total", tenant="alpha", reason="request_too_large") == 1
    assert delta("portal_guardrail_decisions_total", stage="input") >= 1
    assert delta("portal_pii_entities_total", entity_type="EMAIL_ADDRESS") >= 1
    assert _value(after, "portal_ingestion_documents", state="indexed") == 1
    assert _value(after, "portal_ingestion_queue_depth") == 0
    assert _value(after, "portal_pool_backend_up", backend="obs-engine") == 1
    assert _value(after, "portal_pool_inflight", backend="obs-engine") == 0  # the request finished
    assert delta("portal_celery_tasks_total", task="knowledge.ingest_document", state="success") == 1
    assert delta("django_http_requests_total_by_method_total", method="POST") >= 2

    # labels carry names, slugs and types only: no PII, no text, no user names, no file names
    values = _label_values(after)
    forbidden = [*PII, "maria", "gonzalez", "@", "short trips", world.member.username, world.admin.username]
    for value in values:
        for bad in forbidden:
            assert bad.lower() not in value.lower(), (bad, value)
    assert {v for v in values if v.startswith("alpha") or v == "beta"} <= {"alpha", "beta"}
