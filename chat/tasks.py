"""Celery tasks of the chat app: release quota reservations left behind by crashed processes, and free the
generation lease of conversations whose answer was never finished (scheduled by beat)."""

from __future__ import annotations

from celery import shared_task

from chat.services import chat_sweep_abandoned


@shared_task(name="chat.quota_sweep", ignore_result=True, acks_late=False, time_limit=60)
def quota_sweep() -> int:
    """See ``chat.services.chat_sweep_abandoned``. Returns the number of reservations released."""
    return chat_sweep_abandoned()
