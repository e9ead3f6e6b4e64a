"""Webhook deliveries survive a lost broker message (the sweep sends them again, once), and an agent run's task
and answer are encrypted at rest."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from agents.models import AgentEvent, AgentRun, WebhookDelivery
from agents.services import webhook_endpoint_create
from agents.tests.conftest import make_definition, start_run
from agents.tests.test_events import emit
from agents.webhooks import webhook_deliver, webhook_fanout, webhook_sweep

pytestmark = pytest.mark.django_db


def test_the_beat_schedule_runs_the_webhook_sweep() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["agents.webhook_sweep"]
    assert entry["task"] == "agents.webhook_sweep" and entry["options"]["queue"] == "agents"
    from agents.tasks import webhook_sweep as task

    assert task.name == "agents.webhook_sweep"


def test_a_delivery_whose_message_was_lost_is_sent_by_the_sweep(world: Any, http_server: Any, dispatched: Any) -> None:
    http_server.json("/hook", {"ok": True})
    endpoint, _ = webhook_endpoint_create(tenant=world.tenant, url=f"{http_server.base}/hook", actor=world.admin)
    run = start_run(world, make_definition(world), "hook me")
    emit(run, 1)
    event = AgentEvent.objects.for_tenant(world.tenant).filter(run=run).order_by("seq").first()
    assert event is not None
    assert webhook_fanout(event=event) == 1  # what the commit hook does (not run inside this test's transaction)
    delivery = WebhookDelivery.objects.for_tenant(world.tenant).get(endpoint=endpoint, event=event)
    assert delivery.state == WebhookDelivery.State.PENDING
    dispatched.webhooks.clear()  # the broker lost the message: nothing will deliver it

    assert webhook_sweep() == 0  # not stale yet: its retries may still be under way
    WebhookDelivery.unscoped.filter(pk=delivery.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert webhook_sweep() == 1
    assert (endpoint.pk, event.pk) in dispatched.webhooks
    assert webhook_sweep() == 0  # touched: not sent again on the next sweep

    assert webhook_deliver(endpoint_id=endpoint.pk, event_id=event.pk) == 1
    assert len(http_server.calls("/hook")) == 1
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == (WebhookDelivery.State.DELIVERED, 1)
    # a duplicate message (the original one after all) does not deliver twice
    assert webhook_deliver(endpoint_id=endpoint.pk, event_id=event.pk) == 0
    assert len(http_server.calls("/hook")) == 1


def test_a_delivery_is_given_up_after_its_attempts(world: Any, http_server: Any) -> None:
    http_server.routes["/down"] = (503, "{}")
    endpoint, _ = webhook_endpoint_create(tenant=world.tenant, url=f"{http_server.base}/down", actor=world.admin)
    run = start_run(world, make_definition(world), "hook me")
    emit(run, 1)
    event = AgentEvent.objects.for_tenant(world.tenant).filter(run=run).order_by("seq").first()
    assert event is not None
    webhook_fanout(event=event)
    WebhookDelivery.unscoped.filter(endpoint=endpoint, event=event).update(attempts=8)
    assert webhook_deliver(endpoint_id=endpoint.pk, event_id=event.pk) == 0  # the 9th attempt: no more retries
    delivery = WebhookDelivery.unscoped.get(endpoint=endpoint, event=event)
    assert (delivery.state, delivery.last_status) == (WebhookDelivery.State.FAILED, "HTTP 503")
    WebhookDelivery.unscoped.filter(pk=delivery.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert webhook_sweep() == 0


def test_run_input_and_result_are_encrypted_at_rest(world: Any) -> None:
    run = start_run(world, make_definition(world), "Refund card 4111 1111 1111 1111 for Alice Example")
    AgentRun.unscoped.filter(pk=run.pk).update(result="Refunded Alice Example")  # update() encrypts too
    with connection.cursor() as cur:
        cur.execute("SELECT input, result FROM agents_agentrun WHERE id = %s", [run.pk])
        raw_input, raw_result = cur.fetchone()
    assert raw_input.startswith("enc:v1:") and "4111" not in raw_input and "Alice" not in raw_input
    assert raw_result.startswith("enc:v1:") and "Alice" not in raw_result
    reloaded = AgentRun.objects.for_tenant(world.tenant).get(pk=run.pk)
    assert reloaded.input == "Refund card 4111 1111 1111 1111 for Alice Example"
    assert reloaded.result == "Refunded Alice Example"
