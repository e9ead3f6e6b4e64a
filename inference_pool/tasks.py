"""Celery tasks of the pool: the active health probe, scheduled by beat every ``POOL_PROBE_INTERVAL`` seconds."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from inference_pool.health import backend_probe_all
from portal.celery import app

PROBE_SCHEDULE_NAME = "inference-pool-probe-backends"


@shared_task(name="inference_pool.probe_backends", ignore_result=True, acks_late=False, time_limit=30)
def probe_backends() -> int:
    """Probe every enabled backend once; returns how many were up."""
    return sum(1 for r in backend_probe_all() if r.health == "up")


def probe_interval() -> float:
    return float(getattr(settings, "POOL_PROBE_INTERVAL", 5.0))


# Beat schedule: registered when Celery imports this module (autodiscovery runs before beat reads the schedule).
# Probes older than one interval are dropped instead of piling up behind a busy worker.
app.add_periodic_task(
    probe_interval(),
    probe_backends.s(),
    name=PROBE_SCHEDULE_NAME,
    expires=probe_interval(),
)
