"""Tracing of agent runs against the real llama-server: each step is a trace (``invoke_agent <name>``) with its model
call (GenAI attributes) or its tool call (``execute_tool <tool>``) as children; the steps of a run share its
conversation id; no task text on any span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from agents.models import RunStatus
from agents.runner import agent_run_drive
from agents.tests.conftest import make_definition, start_run
from core.tracing import tracing_configure, tracing_shutdown

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]

TASK = "How many vacation days do employees get?"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing_configure(exporter=exporter)
    yield exporter
    tracing_shutdown()


def test_tracing_agent_steps_model_and_tool_calls(
    engine_backend: Any, world: Any, handbook_kb: Any, spans: Any
) -> None:
    definition = make_definition(
        world, knowledge_base_ids=[handbook_kb.pk], min_tool_calls=1, max_tool_calls=1, max_steps=3
    )
    run = start_run(world, definition, TASK)
    spans.clear()
    agent_run_drive(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error)

    finished = spans.get_finished_spans()
    steps = [s for s in finished if s.name == f"invoke_agent {definition.name}"]
    assert len(steps) >= 3  # thought + tool call, the tool, the final answer
    assert len({s.context.trace_id for s in steps}) == len(steps)  # one trace per step
    for step in steps:
        attrs = dict(step.attributes)
        assert step.parent is None and step.kind == SpanKind.INTERNAL
        assert attrs["gen_ai.operation.name"] == "invoke_agent"
        assert attrs["gen_ai.agent.name"] == definition.name and attrs["gen_ai.agent.id"] == str(definition.pk)
        assert attrs["gen_ai.conversation.id"] == run.request_id and attrs["portal.agent_run_id"] == run.pk
        assert attrs["portal.tenant"] == "alpha"
    models = [s for s in finished if s.attributes.get("gen_ai.operation.name") == "chat"]
    tools = [s for s in finished if s.name == "execute_tool knowledge_search"]
    assert len(models) >= 2 and len(tools) == 1
    step_ids = {s.context.span_id for s in steps}
    for child in models + tools:
        assert child.parent is not None and child.parent.span_id in step_ids
    for model in models:
        attrs = dict(model.attributes)
        assert model.kind == SpanKind.CLIENT and attrs["gen_ai.request.model"] == settings.LLAMA_MODEL_NAME
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["gen_ai.response.finish_reasons"][0] in ("stop", "length")
        assert attrs["portal.tenant"] == "alpha"
    assert tools[0].attributes["gen_ai.tool.name"] == "knowledge_search" and tools[0].attributes["portal.ok"] is True
    carried = " ".join(str(v) for s in finished for v in (s.attributes or {}).values())
    assert TASK not in carried and "vacation" not in carried
