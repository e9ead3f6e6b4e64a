"""Handing work to the broker (the ``agents`` queue). Always called after a commit (``transaction.on_commit``)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

QUEUE = "agents"


def enqueue_step(*, run_id: int, checkpoint: int, countdown: float = 0.0) -> None:
    from agents.tasks import run_step

    try:
        run_step.apply_async(args=[run_id, checkpoint], queue=QUEUE, countdown=countdown or None)
    except Exception:
        # the periodic sweep (agents.tasks.resume_stalled) picks the run up once the broker is back
        logger.exception("could not queue agent run %s", run_id)


def enqueue_webhook(*, endpoint_id: int, event_id: int) -> None:
    from agents.tasks import deliver_webhook

    try:
        deliver_webhook.apply_async(args=[endpoint_id, event_id], queue=QUEUE)
    except Exception:
        logger.exception("could not queue webhook delivery %s/%s", endpoint_id, event_id)
