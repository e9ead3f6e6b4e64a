"""Runs against the real llama-server (SmolLM2-135M with schema-constrained output), driven in-process."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import AgentEvent, AgentRun, AgentStep, RunStatus, StepKind, StepStatus
from agents.runner import agent_run_drive
from agents.tests.conftest import make_definition, start_run
from tenants.models import UsageRecord

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]


def _steps(run: AgentRun) -> list[AgentStep]:
    return list(AgentStep.objects.for_tenant(run.tenant_id).filter(run=run).order_by("ordinal"))


def test_a_run_searches_the_knowledge_base_and_answers(engine_backend: Any, world: Any, handbook_kb: Any) -> None:
    definition = make_definition(
        world, knowledge_base_ids=[handbook_kb.pk], min_tool_calls=1, max_tool_calls=1, max_steps=3
    )
    run = start_run(world, definition, "How many vacation days do employees get?")

    agent_run_drive(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error)
    steps = _steps(run)
    kinds = [s.kind for s in steps]
    assert kinds == [
        StepKind.THOUGHT,
        StepKind.TOOL_CALL,
        StepKind.TOOL_RESULT,
        StepKind.THOUGHT,
        StepKind.FINAL,
    ], kinds
    call, result = steps[1], steps[2]
    assert call.tool == "knowledge_search" and call.status == StepStatus.DONE and call.executions == 1
    assert call.payload["arguments"]["query"].strip()
    assert result.payload["ok"] is True
    assert "handbook.txt" in result.payload["text"]
    assert result.payload["data"]["hits"][0]["document_name"] == "handbook.txt"
    assert run.result.strip() and run.result == steps[4].payload["answer"]
    # usage: every model turn settled as agent usage; the run's totals are theirs
    records = list(UsageRecord.objects.for_tenant(world.tenant).filter(request_id=run.request_id))
    assert len(records) >= 2 and {r.source for r in records} == {"agent"}
    assert run.tokens_in == sum(r.tokens_in for r in records) > 0
    assert run.tokens_out == sum(r.tokens_out for r in records) > 0
    assert run.steps_used == 2 and run.tool_calls == 1
    assert run.lease_owner == "" and run.finished_at is not None
    # the event log is numbered without gaps and ends with the final status
    seqs = list(AgentEvent.objects.for_tenant(world.tenant).filter(run=run).values_list("seq", flat=True))
    assert seqs == list(range(1, run.event_seq + 1))
    last = AgentEvent.objects.for_tenant(world.tenant).get(run=run, seq=run.event_seq)
    assert last.type == "status" and last.data["status"] == "succeeded" and last.data["result"]


def test_the_step_limit_ends_the_run(engine_backend: Any, world: Any, handbook_kb: Any) -> None:
    definition = make_definition(world, knowledge_base_ids=[handbook_kb.pk], max_steps=2)
    # an agent that must keep using tools (the form refuses this; here it forces the limit to be reached)
    type(definition).objects.for_tenant(world.tenant).filter(pk=definition.pk).update(min_tool_calls=2)
    run = start_run(world, definition, "What is the remote work policy?")

    agent_run_drive(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_code == "step_limit", (run.error_code, run.error)
    assert run.error == "The agent used all 2 steps without finishing."
    assert run.steps_used == 2 and run.tool_calls == 2
    kinds = [s.kind for s in _steps(run)]
    assert kinds.count(StepKind.THOUGHT) == 2 and kinds[-1] == StepKind.ERROR


def test_the_token_budget_is_a_hard_limit(engine_backend: Any, world: Any, handbook_kb: Any) -> None:
    definition = make_definition(world, knowledge_base_ids=[handbook_kb.pk], max_steps=5, token_budget=1_500)
    type(definition).objects.for_tenant(world.tenant).filter(pk=definition.pk).update(min_tool_calls=4)
    run = start_run(world, definition, "Summarize the vacation policy.")

    agent_run_drive(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_code == "token_budget", (run.error_code, run.error)
    assert "token budget is spent" in run.error
    assert run.steps_used >= 1  # it worked until the next turn could no longer fit
    assert run.tokens_used <= definition.token_budget
    records = UsageRecord.objects.for_tenant(world.tenant).filter(request_id=run.request_id)
    assert sum(r.tokens_in + r.tokens_out for r in records) == run.tokens_in + run.tokens_out <= 1_500


def test_cancel_during_a_model_turn_stops_the_run_at_once(engine_backend: Any, world: Any, handbook_kb: Any) -> None:
    import threading
    import time

    from agents.services import agent_run_cancel
    from tenants.models import Role

    definition = make_definition(world, knowledge_base_ids=[handbook_kb.pk], max_output_tokens=1024)
    run = start_run(world, definition, "Write a long report about every policy in the handbook.")
    thread = threading.Thread(target=agent_run_drive, kwargs={"run_id": run.pk, "worker": "inline-cancel"})
    thread.start()
    deadline = time.monotonic() + 120
    while not AgentEvent.objects.for_tenant(world.tenant).filter(run=run, type="thinking").exists():
        assert time.monotonic() < deadline, "the model turn did not start"
        time.sleep(0.1)

    cancelled_at = time.monotonic()
    agent_run_cancel(run=run, role=Role.MEMBER, user=world.member)
    thread.join(timeout=60)

    assert not thread.is_alive()
    assert time.monotonic() - cancelled_at < 30  # the stream was abandoned, not run to its end
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.lease_owner == ""
    assert run.steps_used == 0 and not _steps(run)  # the abandoned turn recorded no step
    [record] = UsageRecord.objects.for_tenant(world.tenant).filter(request_id=run.request_id)
    assert record.outcome == "cancelled" and record.source == "agent"
    assert record.tokens_out < 1024


def test_an_approved_call_runs_and_the_agent_answers(engine_backend: Any, world: Any, http_server: Any) -> None:
    from agents.services import agent_run_decide, http_tool_rule_create
    from agents.tests.test_runner import seed_tool_call
    from tenants.models import Role

    http_tool_rule_create(tenant=world.tenant, name="crm", method="GET", url_prefix=f"{http_server.base}/api/")
    http_server.json("/api/orders/42", {"order": 42, "status": "shipped"})
    definition = make_definition(
        world, name="Orders", tools=["http_request"], approval_tools=["http_request"], max_tool_calls=1
    )
    run = start_run(world, definition, "What is the status of order 42?")
    seed_tool_call(
        run, "http_request", {"method": "GET", "url": f"{http_server.base}/api/orders/42"}, needs_approval=True
    )

    agent_run_drive(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.WAITING_APPROVAL and http_server.calls() == []

    agent_run_decide(run=run, approve=True, role=Role.ADMIN, user=world.admin)
    agent_run_drive(run_id=run.pk)

    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error)
    assert len(http_server.calls("/api/orders/42")) == 1
    kinds = [s.kind for s in _steps(run)]
    assert kinds == [
        StepKind.THOUGHT,
        StepKind.TOOL_CALL,
        StepKind.APPROVAL,
        StepKind.TOOL_RESULT,
        StepKind.THOUGHT,
        StepKind.FINAL,
    ]
    assert run.result
