"""Agent test helpers: the real llama-server registered in the pool, indexed documents, a local HTTP server the
HTTP tool can call, definitions and runs driven in-process (the Celery worker test drives them on Redis)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from agents.models import AgentDefinition, AgentRun
from agents.services import agent_definition_create, agent_run_start
from inference_pool.models import Backend
from inference_pool.services import backend_register
from tenants.models import Role
from tests.api_harness import api_keys  # noqa: F401  (fixture)


def register_engine(engine: Any, *, name: str = "agents-engine") -> Backend:
    spec = engine.spec
    backend = backend_register(
        name=name,
        kind="llamacpp",
        base_url=spec.base_url,
        model=settings.LLAMA_MODEL_NAME,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=8,
        context_length=spec.context // spec.slots,
    )
    Backend.objects.filter(pk=backend.pk).update(health="up")
    return backend


@pytest.fixture
def engine_backend(llama_server: Any, transactional_db: Any) -> Iterator[Backend]:
    from agents.runner import event_loop_reset

    event_loop_reset()  # a fresh pool router: the previous test's backend rows are gone
    yield register_engine(llama_server)
    event_loop_reset()


@dataclass
class Dispatched:
    steps: list[tuple[int, int, float]] = field(default_factory=list)
    webhooks: list[tuple[int, int]] = field(default_factory=list)


@pytest.fixture(autouse=True)
def dispatched(monkeypatch: pytest.MonkeyPatch) -> Dispatched:
    """In-process tests drive runs themselves (``agent_run_drive``): what would go to the broker is recorded."""
    record = Dispatched()
    monkeypatch.setattr(
        "agents.dispatch.enqueue_step",
        lambda *, run_id, checkpoint, countdown=0.0: record.steps.append((run_id, checkpoint, countdown)),
    )
    monkeypatch.setattr(
        "agents.dispatch.enqueue_webhook",
        lambda *, endpoint_id, event_id: record.webhooks.append((endpoint_id, event_id)),
    )
    return record


def indexed_document(*, kb: Any, name: str, text: str, actor: Any) -> Any:
    """Upload and ingest a document in-process (the real parse → chunk → embed → index path)."""
    from knowledge.models import Document
    from knowledge.services import document_ingest, document_upload

    [result] = document_upload(knowledge_base=kb, actor=actor, files=[SimpleUploadedFile(name, text.encode())])
    document_ingest(document_id=result.document.pk)
    doc = Document.objects.for_tenant(kb.tenant_id).get(pk=result.document.pk)
    assert doc.status == Document.Status.INDEXED, doc.error
    return doc


HANDBOOK = (
    "Employee handbook.\n\nVacation policy: every employee receives 28 days of paid vacation per year. "
    "Unused vacation days can be carried over until the end of March of the following year.\n\n"
    "Remote work: employees may work from home up to three days per week after agreeing with their manager."
)


@pytest.fixture
def handbook_kb(world: Any) -> Any:
    from knowledge.services import knowledge_base_create

    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Handbook")
    indexed_document(kb=kb, name="handbook.txt", text=HANDBOOK, actor=world.admin)
    return kb


def make_definition(world: Any, **fields: Any) -> AgentDefinition:
    fields.setdefault("name", "Researcher")
    fields.setdefault(
        "instructions",
        "You answer employees' questions about company policy. Search the handbook, then answer briefly.",
    )
    fields.setdefault("tools", ["knowledge_search"])
    fields.setdefault("max_output_tokens", 128)
    return agent_definition_create(tenant=world.tenant, actor=world.admin, **fields)


def start_run(world: Any, definition: AgentDefinition, text: str, *, user: Any = None) -> AgentRun:
    return agent_run_start(definition=definition, role=Role.MEMBER, text=text, user=user or world.member)


# --- a local HTTP server for the HTTP tool and webhooks ----------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class LocalServer:
    """Answers every request from ``routes`` (path → (status, body)) and records it; ``delay_s`` slows answers."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.routes: dict[str, tuple[int, str]] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.delay_s = 0.0
        self.started = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with server._lock:
                    server.requests.append(
                        Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                server.started.set()
                if server.delay_s:
                    import time

                    time.sleep(server.delay_s)
                status, text = server.routes.get(self.path.split("?")[0], (404, '{"error": "no such thing"}'))
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in server.headers.get(self.path.split("?")[0], {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, path_prefix: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def idempotency_keys(self) -> Counter[str]:
        return Counter(r.headers.get("idempotency-key", "") for r in self.calls())

    def json(self, path: str, obj: Any, status: int = 200) -> None:
        self.routes[path] = (status, json.dumps(obj))


@pytest.fixture
def http_server(settings: Any) -> Iterator[LocalServer]:
    # the test server listens on loopback: the platform (never a tenant) lists it as a reachable internal host
    settings.EGRESS_ALLOWED_INTERNAL = ["127.0.0.1"]
    server = LocalServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
