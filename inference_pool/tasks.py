"""Celery tasks of the pool: the active health probe, scheduled by beat every ``POOL_PROBE_INTERVAL`` seconds."""

from __future__ import annotations

from celery import shared_task

from inference_pool.health import backend_probe_all

PROBE_SCHEDULE_NAME = "inference_pool.probe_backends"


@shared_task(name="inference_pool.probe_backends", ignore_result=True, acks_late=False, time_limit=30)
def probe_backends() -> int:
    """Probe every enabled backend once; returns how many were up."""
    return sum(1 for r in backend_probe_all() if r.health == "up")
