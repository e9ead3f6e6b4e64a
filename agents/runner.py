"""The agent loop, one step per call: ``agent_run_step(run_id=..., checkpoint=..., worker=...)``.

A step is either a model turn (the model answers with a tool call or the final answer) or the execution of the
pending tool call. Each ends with a checkpoint: one transaction that records the step rows, the usage and the
events, advances ``AgentRun.checkpoint`` and releases the run's lease; the next step is queued after the commit.

Crash safety:
- a task runs only if it carries the run's current checkpoint (older copies are dropped) and it holds the run's
  lease (``lease_owner``/``lease_expires_at``, kept alive by a heartbeat thread while the step works). A worker
  that dies leaves its lease to expire; ``agents.tasks.resume_stalled`` (beat, and at every worker start) queues
  the run again and the next worker resumes from the last checkpoint.
- a tool call is recorded (``pending``, with an idempotency key) by the model turn's checkpoint and marked
  ``running`` in its own commit before it executes. A call with a committed result is never executed again; a
  ``running`` call found on resume was interrupted: an idempotent one is repeated with the same idempotency key,
  a non-idempotent one is not repeated blindly — the run waits for a person to retry or stop it.
- a model call in flight holds its token upper bound on the run (``inflight_tokens``); if its worker dies, that
  bound is counted as ``tokens_unaccounted`` so the token budget stays a hard limit.

Limits are hard: no model turn starts past ``max_steps``, and a turn's ``max_tokens`` is cut so that its upper
bound (prompt bound + max_tokens) fits the budget left; a turn that cannot fit ends the run (``token_budget``).
Cancelling (``agents.services.agent_run_cancel``) takes effect at once in the database; the worker notices through
its heartbeat (within a second), abandons the model stream or the HTTP read, records what already happened and
stops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.db import close_old_connections

from agents.checkpoints import (
    Abandon,
    Outcome,
    add_step,
    agent_run_fail,
    claim,
    fail_in_step,
    lease_release,
    scope_key,
)
from agents.heartbeat import Heartbeat, event_loop_reset
from agents.model_step import model_step
from agents.models import AgentRun, AgentStep, StepKind, StepStatus
from agents.prompting import build_prompt, prompt_bound
from agents.tool_step import tool_step
from core.errors import ApplicationError, Busy, GuardrailUnavailable, NotFound, QuotaExceeded, UpstreamError
from core.tracing import stage_span
from tenants.models import Role, Tenant, role_at_least
from tenants.selectors import membership_get

logger = logging.getLogger(__name__)

__all__ = [
    "Outcome",
    "add_step",
    "agent_run_drive",
    "agent_run_fail",
    "agent_run_step",
    "build_prompt",
    "event_loop_reset",
    "prompt_bound",
    "run_authority",
    "scope_key",
]


# --- authority --------------------------------------------------------------------------------------------


def run_authority(run: AgentRun) -> str:
    """The starter's role now (a removed member or a revoked key stops the run), at least member to run."""
    tenant: Tenant = run.tenant
    if not tenant.is_active:
        raise NotFound("The department is suspended.")
    role: str | None = None
    if run.api_key_id is not None:
        key = run.api_key
        if key is not None and key.is_usable():
            role = key.role
    elif run.user_id is not None:
        membership = membership_get(user=run.user, tenant=tenant)  # type: ignore[arg-type]
        role = membership.role if membership else None
    if role is None or not role_at_least(role, Role.MEMBER):
        raise NotFound("The person or key that started this run no longer has access to agents.")
    return role


# --- the step ---------------------------------------------------------------------------------------------


def agent_run_step(*, run_id: int, checkpoint: int, worker: str) -> Outcome:
    """Run one step of a run if ``checkpoint`` is still current; see the module's docstring."""
    outcome, run = claim(run_id=run_id, checkpoint=checkpoint, worker=worker)
    if outcome is not None:
        return outcome
    assert run is not None
    with Heartbeat(run_id, worker) as beat, _step_span(run) as span:
        try:
            outcome = _work(run, worker, beat)
            span.set(outcome=outcome.state, detail=outcome.detail or None)
            return outcome
        except Abandon as why:
            lease_release(run_id, worker)
            return Outcome("stale", detail=str(why))
        except (Busy, UpstreamError, GuardrailUnavailable) as exc:
            lease_release(run_id, worker)
            return Outcome("retry", checkpoint, delay=float(exc.retry_after or 5), detail=exc.code)
        except QuotaExceeded as exc:
            if exc.details.get("reason") == "requests_per_minute":  # the next minute has room: wait for it
                lease_release(run_id, worker)
                return Outcome("retry", checkpoint, delay=float(exc.retry_after or 30), detail=exc.code)
            fail_in_step(run_id, worker, code=exc.code, message=exc.message)
            return Outcome("finished", detail=exc.code)
        except ApplicationError as exc:
            fail_in_step(run_id, worker, code=exc.code, message=exc.message)
            return Outcome("finished", detail=exc.code)
        except SoftTimeLimitExceeded:
            fail_in_step(run_id, worker, code="step_timeout", message="A step took too long; the run was stopped.")
            return Outcome("finished", detail="step_timeout")
        except Exception as exc:
            logger.exception("agent step failed", extra={"run_id": run_id})
            fail_in_step(
                run_id,
                worker,
                code="internal_error",
                message=f"The step failed unexpectedly ({type(exc).__name__}); the run was stopped.",
            )
            return Outcome("finished", detail="internal_error")


def _step_span(run: AgentRun) -> Any:
    """One trace per step (a Celery task: the unit of work of one process) with the GenAI agent conventions; the
    steps of one run share ``gen_ai.conversation.id`` (the run's request id) and ``portal.agent_run_id``. The model
    call and the tool call are its children."""
    definition = run.definition
    return stage_span(
        "agent.step",
        span_name=f"invoke_agent {definition.name}",
        operation="invoke_agent",
        agent_name=definition.name,
        agent_id=str(definition.pk),
        conversation_id=run.request_id,
        agent_run_id=run.pk,
        tenant=run.tenant.slug,
        checkpoint=run.checkpoint,
    )


def _work(run: AgentRun, worker: str, beat: Heartbeat) -> Outcome:
    role = run_authority(run)
    pending = (
        AgentStep.objects.for_tenant(run.tenant_id)
        .filter(
            run=run,
            kind=StepKind.TOOL_CALL,
            status__in=[StepStatus.PENDING, StepStatus.RUNNING, StepStatus.APPROVED],
        )
        .order_by("-ordinal")
        .first()
    )
    if pending is not None:
        return tool_step(run, pending, role=role, worker=worker, beat=beat)
    return model_step(run, role=role, worker=worker, beat=beat)


@dataclass
class DriveResult:
    outcomes: list[Outcome] = field(default_factory=list)


def agent_run_drive(*, run_id: int, worker: str = "inline", max_steps: int = 100) -> DriveResult:
    """Run a run's steps in this process until it ends or waits (the management command and tests use it; the
    portal runs steps on Celery)."""
    result = DriveResult()
    for _ in range(max_steps):
        close_old_connections()
        checkpoint = AgentRun.unscoped.filter(pk=run_id).values_list("checkpoint", flat=True).first()
        if checkpoint is None:
            break
        outcome = agent_run_step(run_id=run_id, checkpoint=checkpoint, worker=worker)
        result.outcomes.append(outcome)
        if outcome.state in ("busy", "retry"):
            time.sleep(min(outcome.delay, 5.0))
            continue
        if outcome.state != "advanced":
            break
    return result
