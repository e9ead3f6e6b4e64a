"""Runs against the real llama-server (SmolLM2-135M with schema-constrained output), driven in-process."""

from __future__ import annotations

from typing import Any

import pytest

from agents.models import AgentEvent, AgentRun, AgentStep, RunStatus, StepKind, StepStatus
from agents.runner import agent_run_drive
from agents.tests.conftest import make_definition, start_run
from tenants.models import UsageRecord

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]


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
