"""A real Celery worker process on Redis runs the agent; it is killed (SIGKILL, the whole process group) in the
middle of a run and a new one takes over: the run resumes from its last checkpoint and no tool call is executed
twice (the local HTTP server counts the calls by their Idempotency-Key). Killed during a non-idempotent call,
the run is not repeated blindly: it waits for a person.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from agents.models import AgentEvent, AgentRun, AgentStep, RunStatus, StepKind, StepStatus
from agents.services import http_tool_rule_create
from agents.tests.conftest import make_definition, start_run
from tenants.models import UsageRecord

pytestmark = [pytest.mark.engine, pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(1500)]

REDIS_DB = 12
BROKER = f"redis://127.0.0.1:6379/{REDIS_DB}"
LEASE_S = 3


def _test_database_url() -> str:
    """The URL of the pytest database (the embedded server's URL with the test database's name)."""
    base = os.environ["DATABASE_URL"]
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + connection.settings_dict["NAME"], parts.query, ""))


def _clear_broker() -> None:
    import redis

    client = redis.Redis.from_url(BROKER)
    keys = [k for k in client.scan_iter() if k.startswith((b"agents", b"_kombu.binding", b"unacked"))]
    if keys:
        client.delete(*keys)
    client.close()


class Workers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "CELERY_BROKER_URL": BROKER,
            "AGENT_LEASE_SECONDS": str(LEASE_S),
            "PORTAL_VAR_DIR": str(tmp / "var"),
            "LOG_LEVEL": "WARNING",
            "EGRESS_ALLOWED_INTERNAL": "127.0.0.1",  # the test HTTP server on loopback (a platform setting)
        }
        for name in ("PORTAL_EPHEMERAL_DB", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "PORTAL_METRICS_PORT"):
            self.env.pop(name, None)

    def start(self) -> subprocess.Popen[bytes]:
        celery = str(Path(sys.executable).with_name("celery"))
        log = open(self.tmp / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                celery,
                "-A",
                "portal",
                "worker",
                "-Q",
                "agents",
                "-c",
                "1",
                "-P",
                "prefork",
                "-l",
                "INFO",
                "-n",
                f"agents-test-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """The machine loses the worker: parent and pool children die at once, nothing is acknowledged."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join((p.read_text(errors="replace")[-3000:]) for p in sorted(self.tmp.glob("worker-*.log")))


@pytest.fixture
def workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workers]:
    from portal.celery import app

    _clear_broker()

    def send(*, run_id: int, checkpoint: int, countdown: float = 0.0) -> None:
        from agents.tasks import run_step

        with app.connection_for_write(BROKER) as conn:
            run_step.apply_async(
                args=[run_id, checkpoint], queue="agents", connection=conn, countdown=countdown or None
            )

    monkeypatch.setattr("agents.dispatch.enqueue_step", send)
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()
    _clear_broker()


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, workers: Workers) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{workers.logs()}")
        time.sleep(0.2)


def _events(run: AgentRun, type_: str) -> list[AgentEvent]:
    return list(AgentEvent.objects.for_tenant(run.tenant_id).filter(run=run, type=type_).order_by("seq"))


def test_a_killed_worker_is_replaced_and_the_run_resumes_without_repeating_a_tool_call(
    engine_backend: Any, world: Any, http_server: Any, workers: Workers
) -> None:
    http_tool_rule_create(tenant=world.tenant, name="crm", method="GET", url_prefix=f"{http_server.base}/api/")
    definition = make_definition(
        world,
        name="Looker",
        instructions="Look up orders in the CRM with http_request, then answer briefly.",
        tools=["http_request"],
        min_tool_calls=2,
        max_tool_calls=2,
        max_steps=4,
    )
    run = start_run(world, definition, "What is the status of orders 41 and 42?")
    first = workers.start()

    # the first tool call has happened and its result is committed; the next model turn is under way
    wait_for(
        lambda: any(e.data.get("step") == 2 for e in _events(run, "thinking")),
        timeout=900,
        what="the second model turn",
        workers=workers,
    )
    workers.kill(first)
    calls_before = len(http_server.calls())
    assert calls_before == 1

    workers.start()
    wait_for(lambda: AgentRun.unscoped.get(pk=run.pk).is_terminal, timeout=900, what="the run to end", workers=workers)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error, workers.logs())
    assert len(_events(run, "resumed")) == 1
    calls = list(AgentStep.objects.for_tenant(run.tenant_id).filter(run=run, kind=StepKind.TOOL_CALL))
    assert len(calls) == 2 and all(c.executions == 1 and c.status == StepStatus.DONE for c in calls)
    # what the server saw: each tool call exactly once, by its own idempotency key
    keys = http_server.idempotency_keys()
    assert sorted(keys) == sorted(c.idempotency_key for c in calls)
    assert set(keys.values()) == {1}
    # the model turn that died with its worker still counts against the budget (its upper bound)
    assert run.tokens_unaccounted > 0
    assert run.tokens_used <= definition.token_budget
    assert UsageRecord.objects.for_tenant(world.tenant).filter(request_id=run.request_id, source="agent").count() >= 3


def test_a_worker_killed_during_a_non_idempotent_call_leaves_it_to_a_person(
    engine_backend: Any, world: Any, http_server: Any, workers: Workers
) -> None:
    http_tool_rule_create(tenant=world.tenant, name="desk", method="POST", url_prefix=f"{http_server.base}/api/")
    http_server.delay_s = 30.0  # the call is in flight when the worker dies
    definition = make_definition(
        world,
        name="Ticketer",
        instructions="Open a support ticket with http_request (POST), then answer briefly.",
        tools=["http_request"],
        min_tool_calls=1,
        max_tool_calls=1,
        max_steps=3,
    )
    run = start_run(world, definition, "Open a ticket: the printer is broken.")
    first = workers.start()
    wait_for(lambda: http_server.started.is_set(), timeout=900, what="the POST to start", workers=workers)
    workers.kill(first)

    workers.start()
    wait_for(
        lambda: AgentRun.unscoped.get(pk=run.pk).status == RunStatus.WAITING_APPROVAL,
        timeout=300,
        what="the run to wait for a person",
        workers=workers,
    )
    time.sleep(LEASE_S + 2)  # and nothing else happens meanwhile
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING_APPROVAL
    approval = AgentStep.objects.for_tenant(run.tenant_id).get(run=run, kind=StepKind.APPROVAL)
    assert approval.payload["reason"] == "in_doubt" and approval.status == StepStatus.PENDING
    assert len(http_server.calls()) == 1  # not repeated
    assert len(_events(run, "resumed")) == 1
