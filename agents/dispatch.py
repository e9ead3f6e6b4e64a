"""Handing work to the broker (the ``agents`` queue). Always called after a commit (``transaction.on_commit``).

Tasks are looked up by name in the Celery app's registry (``agents.tasks`` declares them), so this module imports
nothing of the app: the runner, the services and the webhooks queue work without an import cycle through the tasks
module.
"""

from __future__ import annotations

import logging

from celery import current_app

logger = logging.getLogger(__name__)

QUEUE = "agents"


def enqueue_step(*, run_id: int, checkpoint: int, countdown: float = 0.0) -> None:
    try:
        task = current_app.tasks["agents.run_step"]
        task.apply_async(args=[run_id, checkpoint], queue=QUEUE, countdown=countdown or None)
    except Exception:
        # the periodic sweep (agents.tasks.resume_stalled) picks the run up once the broker is back
        logger.exception("could not queue agent run %s", run_id)


def enqueue_webhook(*, endpoint_id: int, event_id: int) -> None:
    try:
        current_app.tasks["agents.deliver_webhook"].apply_async(args=[endpoint_id, event_id], queue=QUEUE)
    except Exception:
        logger.exception("could not queue webhook delivery %s/%s", endpoint_id, event_id)


def enqueue_budget_webhook(*, endpoint_id: int, alert_id: int) -> None:
    try:
        current_app.tasks["agents.deliver_budget_webhook"].apply_async(args=[endpoint_id, alert_id], queue=QUEUE)
    except Exception:
        logger.exception("could not queue budget webhook delivery %s/%s", endpoint_id, alert_id)
