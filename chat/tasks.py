"""Celery tasks of the chat app: release quota reservations left behind by crashed processes, and free the
generation lease of conversations whose answer was never finished (scheduled by beat)."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task


@shared_task(name="chat.quota_sweep", ignore_result=True, acks_late=False, time_limit=60)
def quota_sweep() -> int:
    """Release reservations older than an hour (no chat request lives that long) and mark answers that were left
    ``streaming`` by a dead process as stopped. Returns the number of reservations released."""
    from django.utils import timezone

    from chat.models import Conversation, Message
    from chat.services import GENERATION_LEASE
    from tenants.quota import quota_release_stale

    released = quota_release_stale(older_than=timedelta(hours=1))
    cutoff = timezone.now() - GENERATION_LEASE
    Message.unscoped.filter(status=Message.Status.STREAMING, updated_at__lt=cutoff).update(
        status=Message.Status.STOPPED, error_code="abandoned"
    )
    Conversation.unscoped.filter(generating_since__lt=cutoff).update(generating_since=None)
    return released
