"""Metrics, logs and traces for Celery processes (connected by ``portal/celery.py``).

- every task: ``portal_celery_tasks_total{task,state}`` and ``portal_celery_task_seconds{task}``; its logs carry the
  task id as ``request_id`` (a task that knows its department sets ``core.logging.tenant_id_var`` itself);
- a prefork child that exits has its live gauges dropped from the multiprocess directory;
- with ``PORTAL_METRICS_PORT`` set (containers), the worker's main process serves its merged samples on that port
  (``core.metrics_views.worker_metrics_serve``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals

from core.logging import request_id_var, tenant_id_var, user_id_var
from core.metrics import CELERY_TASK_SECONDS, CELERY_TASKS, label_value, metrics_mark_process_dead
from core.metrics_views import worker_metrics_serve

logger = logging.getLogger(__name__)
_started: dict[str, float] = {}


def _task_name(task: Any) -> str:
    return label_value(getattr(task, "name", None), default="unknown")


def on_task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()
        request_id_var.set(task_id)
    tenant_id_var.set(None)
    user_id_var.set(None)


def on_task_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    started = _started.pop(task_id, None) if task_id else None
    name = _task_name(task)
    if started is not None:
        CELERY_TASK_SECONDS.labels(task=name).observe(time.perf_counter() - started)
    CELERY_TASKS.labels(task=name, state=(state or "unknown").lower()).inc()
    request_id_var.set("")
    tenant_id_var.set(None)
    user_id_var.set(None)


def on_worker_process_shutdown(pid: int | None = None, **_: Any) -> None:
    metrics_mark_process_dead(pid or os.getpid())


def on_worker_ready(**_: Any) -> None:
    port = os.environ.get("PORTAL_METRICS_PORT", "")
    if not port:
        return

    try:
        worker_metrics_serve(host=os.environ.get("PORTAL_METRICS_HOST", "0.0.0.0"), port=int(port))  # noqa: S104
    except (OSError, ValueError) as exc:
        logger.error("worker metrics exporter did not start", extra={"port": port, "error": type(exc).__name__})


def celery_observability_connect() -> None:
    """Connect the handlers above to Celery's signals (idempotent: Celery keeps one connection per receiver)."""
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="portal-metrics-prerun")
    signals.task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="portal-metrics-postrun")
    signals.worker_process_shutdown.connect(
        on_worker_process_shutdown, weak=False, dispatch_uid="portal-metrics-child-exit"
    )
    signals.worker_ready.connect(on_worker_ready, weak=False, dispatch_uid="portal-metrics-exporter")
