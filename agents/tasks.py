"""Celery tasks of the agents app, all on the ``agents`` queue (``make run``'s worker listens on it).

- ``agents.run_step(run_id, checkpoint)``: one step of a run (``agents.runner``); queues the next on commit.
  ``acks_late`` + ``reject_on_worker_lost``: a message whose worker died is redelivered where the broker does so
  (RabbitMQ at once, Redis after its visibility timeout); either way the lease and the checkpoint make a duplicate
  harmless, and the sweep below resumes runs whose worker died without waiting for the broker.
- ``agents.resume_stalled``: finds runs whose lease expired (their worker died) or that were never picked up, and
  queues them again; scheduled by beat every ``AGENT_SWEEP_INTERVAL`` seconds and run once when a worker starts
  (for runs whose lease is still live then, the step is queued for the moment the lease expires).
- ``agents.deliver_webhook(endpoint_id, event_id)``: one signed POST, retried with backoff.
- ``agents.webhook_sweep``: beat; re-queues deliveries a lost broker message left pending.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone

from agents import webhooks
from agents.dispatch import QUEUE, enqueue_step
from agents.models import AgentRun, RunStatus
from agents.runner import agent_run_fail, agent_run_step
from agents.webhooks import DeliveryFailed, webhook_deliver
from core.logging import tenant_id_var

logger = logging.getLogger(__name__)

TRANSIENT_RETRIES = 6


def _worker_id() -> str:
    return f"{socket.gethostname()[:20]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@shared_task(
    bind=True,
    name="agents.run_step",
    queue=QUEUE,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=TRANSIENT_RETRIES,
    soft_time_limit=int(getattr(settings, "AGENT_STEP_TIME_LIMIT", 900)),
    time_limit=int(getattr(settings, "AGENT_STEP_TIME_LIMIT", 900)) + 60,
)
def run_step(self: Task, run_id: int, checkpoint: int) -> str:
    close_old_connections()
    tenant_id_var.set(AgentRun.unscoped.filter(pk=run_id).values_list("tenant_id", flat=True).first())
    outcome = agent_run_step(run_id=int(run_id), checkpoint=int(checkpoint), worker=_worker_id())
    if outcome.state == "busy":
        # another worker holds the run (or held it and died): look again when its lease runs out
        enqueue_step(run_id=run_id, checkpoint=checkpoint, countdown=max(outcome.delay, 1.0))
    elif outcome.state == "retry":
        if self.request.retries >= TRANSIENT_RETRIES:
            agent_run_fail(
                run_id=run_id,
                code="upstream_unavailable",
                message="The model servers or safety checks stayed unavailable; the run was stopped. Start it again.",
            )
            return "failed"
        raise self.retry(countdown=min(outcome.delay * (2**self.request.retries), 120))
    return outcome.state


def agent_run_resume_stalled(*, include_live: bool = False, grace_s: float | None = None) -> int:
    """Queue again the runs that no worker is advancing. Returns how many were queued."""
    now = timezone.now()
    grace = timedelta(seconds=grace_s if grace_s is not None else float(getattr(settings, "AGENT_STALL_GRACE", 300)))
    active = AgentRun.unscoped.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
    stalled = Q(lease_owner="", updated_at__lt=now - grace) | (~Q(lease_owner="") & Q(lease_expires_at__lt=now))
    if include_live:
        stalled |= ~Q(lease_owner="") & Q(lease_expires_at__gte=now)
    queued = 0
    for run_id, checkpoint, owner, expires in active.filter(stalled).values_list(
        "id", "checkpoint", "lease_owner", "lease_expires_at"
    )[:1000]:
        delay = (expires - now).total_seconds() + 1.0 if owner and expires and expires > now else 0.0
        enqueue_step(run_id=run_id, checkpoint=checkpoint, countdown=delay)
        queued += 1
    if queued:
        logger.info("agent runs queued again", extra={"runs": queued})
    return queued


@shared_task(name="agents.resume_stalled", queue=QUEUE, ignore_result=True, acks_late=False, time_limit=60)
def resume_stalled(include_live: bool = False) -> int:
    close_old_connections()
    return agent_run_resume_stalled(include_live=include_live)


# Webhook deliveries (an event's, a budget alert's): retried with backoff for about an hour, a lost worker's redone.
_DELIVERY: dict[str, Any] = {
    "queue": QUEUE,
    "ignore_result": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DeliveryFailed,),
    "retry_backoff": 5,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 8,
    "time_limit": 60,
}


@shared_task(name="agents.deliver_webhook", **_DELIVERY)
def deliver_webhook(endpoint_id: int, event_id: int) -> int:
    close_old_connections()
    return webhook_deliver(endpoint_id=int(endpoint_id), event_id=int(event_id))


@shared_task(name="agents.deliver_budget_webhook", bind=True, **_DELIVERY)
def deliver_budget_webhook(self: Task, endpoint_id: int, alert_id: int) -> int:
    close_old_connections()
    return webhooks.budget_webhook_deliver(
        endpoint_id=int(endpoint_id), alert_id=int(alert_id), attempt=self.request.retries + 1
    )


@shared_task(name="agents.webhook_sweep", queue=QUEUE, ignore_result=True, acks_late=False, time_limit=60)
def webhook_sweep() -> int:
    """Beat: re-queue webhook deliveries a lost broker message left pending."""
    close_old_connections()
    return webhooks.webhook_sweep()


@worker_ready.connect
def _resume_when_a_worker_starts(sender: Any = None, **_: Any) -> None:
    """A (re)started worker takes over the runs of a worker that died, as soon as their leases run out."""
    try:
        resume_stalled.apply_async(kwargs={"include_live": True}, queue=QUEUE)
    except Exception:
        logger.warning("could not queue the agents' resume sweep", exc_info=True)
