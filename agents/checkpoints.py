"""Claiming a run, step rows and checkpoints: the commits that end each step (see ``agents.runner``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents import dispatch
from agents.events import event_append, status_data, step_public
from agents.heartbeat import lease_seconds
from agents.models import AgentRun, AgentStep, RunStatus, StepKind, StepStatus
from core.metrics import AGENT_STEPS


def scope_key(run_id: int) -> str:
    return f"agent_run:{int(run_id)}"


@dataclass
class Outcome:
    state: Literal["advanced", "finished", "waiting", "stale", "busy", "retry"]
    checkpoint: int = 0
    delay: float = 0.0
    detail: str = ""


class Abandon(Exception):
    """The run was cancelled or the lease lost while this step worked: stop without advancing."""


def claim(*, run_id: int, checkpoint: int, worker: str) -> tuple[Outcome | None, AgentRun | None]:
    now = timezone.now()
    with transaction.atomic():
        run = (
            AgentRun.unscoped.select_for_update(of=("self",))
            .select_related("definition", "tenant", "user", "api_key")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.is_terminal or run.checkpoint != checkpoint:
            return Outcome("stale", run.checkpoint if run else 0), None
        if run.status == RunStatus.WAITING_APPROVAL:
            return Outcome("waiting", run.checkpoint), None
        if run.lease_owner and run.lease_owner != worker and run.lease_expires_at and run.lease_expires_at > now:
            return Outcome("busy", run.checkpoint, delay=(run.lease_expires_at - now).total_seconds() + 0.5), None
        resumed = bool(run.lease_owner) and run.lease_owner != worker
        run.lease_owner = worker
        run.lease_expires_at = now + timedelta(seconds=lease_seconds())
        fields = ["lease_owner", "lease_expires_at", "updated_at"]
        if resumed:
            lost_tokens = run.inflight_tokens
            run.tokens_unaccounted += lost_tokens
            run.inflight_tokens = 0
            fields += ["tokens_unaccounted", "inflight_tokens"]
            event_append(run, "resumed", {"checkpoint": run.checkpoint, "tokens_unaccounted": lost_tokens})
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.RUNNING
            run.started_at = run.started_at or now
            fields += ["status", "started_at"]
            event_append(run, "status", status_data(run))
        run.updated_at = now
        run.save(update_fields=fields)
    return None, run


@contextmanager
def checkpoint_commit(run_id: int, worker: str) -> Iterator[AgentRun]:
    """The commit at the end of a step: the run locked and still ours (else ``Abandon``)."""
    with transaction.atomic():
        run = AgentRun.unscoped.select_for_update(of=("self",)).select_related("definition", "tenant").get(pk=run_id)
        if run.lease_owner != worker:
            raise Abandon("lease lost")
        yield run
        run.lease_owner = ""
        run.lease_expires_at = None
        run.updated_at = timezone.now()
        run.save()


def advance(run: AgentRun) -> int:
    """Move the checkpoint on and queue the next step after the commit (unless the run ended or waits)."""
    run.checkpoint += 1
    if run.status == RunStatus.RUNNING:
        run_id, checkpoint = run.pk, run.checkpoint
        transaction.on_commit(lambda: dispatch.enqueue_step(run_id=run_id, checkpoint=checkpoint))
    return run.checkpoint


def next_ordinal(run: AgentRun) -> int:
    top = AgentStep.objects.for_tenant(run.tenant_id).filter(run=run).aggregate(n=Max("ordinal"))["n"]
    return int(top or 0) + 1


def add_step(run: AgentRun, **fields: Any) -> AgentStep:
    step = AgentStep.objects.create(tenant_id=run.tenant_id, run=run, ordinal=next_ordinal(run), **fields)
    AGENT_STEPS.labels(kind=step.kind).inc()
    event_append(run, "step", step_public(step))
    return step


def save_step(run: AgentRun, step: AgentStep, fields: list[str]) -> None:
    step.save(update_fields=fields)
    event_append(run, "step", step_public(step))


def run_finish(run: AgentRun, *, status: str, error_code: str = "", error: str = "", result: str | None = None) -> None:
    """End the run (inside a checkpoint or a service's transaction holding the run's lock)."""
    run.status = status
    run.error_code = error_code
    run.error = error
    run.finished_at = timezone.now()
    run.inflight_tokens = 0
    if result is not None:
        run.result = result
    masked_result = None
    if status == RunStatus.SUCCEEDED:
        masked_result = (
            AgentStep.objects.for_tenant(run.tenant_id)
            .filter(run=run, kind=StepKind.FINAL)
            .order_by("-ordinal")
            .values_list("payload__answer", flat=True)
            .first()
        )
    event_append(run, "status", status_data(run, result=masked_result))


def agent_run_fail(*, run_id: int, code: str, message: str) -> None:
    """End a run as failed from outside a step (a task that gave up)."""
    with transaction.atomic():
        run = AgentRun.unscoped.select_for_update(of=("self",)).select_related("definition").get(pk=run_id)
        if run.is_terminal:
            return
        add_step(run, kind=StepKind.ERROR, status=StepStatus.FAILED, payload={"code": code, "message": message})
        run_finish(run, status=RunStatus.FAILED, error_code=code, error=message)
        run.lease_owner = ""
        run.lease_expires_at = None
        run.updated_at = timezone.now()
        run.save()


# --- authority --------------------------------------------------------------------------------------------


def lease_release(run_id: int, worker: str) -> None:
    AgentRun.unscoped.filter(pk=run_id, lease_owner=worker).update(lease_owner="", lease_expires_at=None)


def fail_in_step(run_id: int, worker: str, *, code: str, message: str) -> None:
    try:
        with checkpoint_commit(run_id, worker) as run:
            if run.is_terminal:
                return
            add_step(run, kind=StepKind.ERROR, status=StepStatus.FAILED, payload={"code": code, "message": message})
            run_finish(run, status=RunStatus.FAILED, error_code=code, error=message)
    except Abandon:
        pass


def settle_run_usage(run_id: int, worker: str, tokens_in: int, tokens_out: int, cost: Any, backend: str) -> None:
    """Record usage of model calls whose turn did not complete (cancelled, budget) on the run."""
    if not (tokens_in or tokens_out):
        return
    with transaction.atomic():
        run = AgentRun.unscoped.select_for_update(of=("self",)).get(pk=run_id)
        run.tokens_in += tokens_in
        run.tokens_out += tokens_out
        run.cost += cost
        run.inflight_tokens = 0
        if backend:
            run.backend = backend
        run.save(update_fields=["tokens_in", "tokens_out", "cost", "inflight_tokens", "backend"])


def run_end(run_id: int, worker: str, status: str, code: str, message: str) -> Outcome:
    with checkpoint_commit(run_id, worker) as run:
        if run.is_terminal:
            return Outcome("finished", run.checkpoint)
        add_step(run, kind=StepKind.ERROR, status=StepStatus.FAILED, payload={"code": code, "message": message})
        run_finish(run, status=status, error_code=code, error=message)
        return Outcome("finished", run.checkpoint)
