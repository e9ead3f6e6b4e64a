"""The run's event log and its fan-out.

``event_append`` writes an ``AgentEvent`` inside the caller's transaction, numbered under the run's row lock (the
caller holds it), so sequence numbers have no gaps and commit in order. After the commit each event is broadcast to
the run's Channels group (the run page) and handed to the webhook deliveries. Server-sent events and the page read
the log itself, so a missed broadcast (another process with an in-memory channel layer, a reconnect) loses nothing.

Event types: ``status`` (the run's status changed: status, error, result, usage), ``step`` (a step was recorded or
changed: the step's public fields), ``resumed`` (a new worker took over a run whose worker died).
Events never hold raw PII (the model's view: placeholders) nor secrets.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from agents import webhooks
from agents.models import AgentEvent, AgentRun, AgentStep

logger = logging.getLogger(__name__)


def run_group(run_id: int) -> str:
    return f"agent-run-{int(run_id)}"


def step_public(step: AgentStep) -> dict[str, Any]:
    return {
        "id": step.pk,
        "ordinal": step.ordinal,
        "kind": step.kind,
        "status": step.status,
        "tool": step.tool,
        "payload": step.payload,
        "flagged": step.flagged,
        "executions": step.executions,
        "tokens_in": step.tokens_in,
        "tokens_out": step.tokens_out,
        "duration_ms": step.duration_ms,
        "decided_by": step.decided_by.get_username() if step.decided_by_id and step.decided_by else None,
        "created_at": step.created_at.isoformat(),
        "finished_at": step.finished_at.isoformat() if step.finished_at else None,
    }


def usage_public(run: AgentRun) -> dict[str, Any]:
    return {
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
        "tokens_unaccounted": run.tokens_unaccounted,
        "tokens_used": run.tokens_used,
        "token_budget": run.definition.token_budget,
        "steps_used": run.steps_used,
        "max_steps": run.definition.max_steps,
        "tool_calls": run.tool_calls,
        "cost": str(run.cost),
    }


def status_data(run: AgentRun, *, result: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"status": run.status, "usage": usage_public(run)}
    if run.error_code:
        data["error_code"] = run.error_code
        data["error"] = run.error
    if result is not None:
        data["result"] = result
    return data


def event_append(run: AgentRun, type_: str, data: dict[str, Any]) -> AgentEvent:
    """Append one event; call inside a transaction holding the run's row lock, then save ``run.event_seq``."""
    run.event_seq += 1
    event = AgentEvent.objects.create(tenant_id=run.tenant_id, run=run, seq=run.event_seq, type=type_, data=data)
    AgentRun.unscoped.filter(pk=run.pk).update(event_seq=run.event_seq)
    transaction.on_commit(lambda: event_publish(event=event))
    return event


def event_frame(event: AgentEvent) -> dict[str, Any]:
    return {"seq": event.seq, "type": event.type, "data": event.data, "at": event.created_at.isoformat()}


def event_publish(*, event: AgentEvent) -> None:
    """Broadcast to the run's group and queue webhook deliveries (after the commit; failures only log)."""
    try:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(
                run_group(event.run_id), {"type": "agent.event", "run_id": event.run_id, "event": event_frame(event)}
            )
    except Exception:
        logger.warning("agent event broadcast failed", extra={"run_id": event.run_id}, exc_info=True)
    try:
        webhooks.webhook_fanout(event=event)
    except Exception:
        logger.warning("webhook fan-out failed", extra={"run_id": event.run_id}, exc_info=True)
