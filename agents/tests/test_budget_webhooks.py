"""A department's budget alerts reach its webhooks: signed, once per level, only endpoints that listen to them."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from celery import current_app

from agents.crypto import decrypt
from agents.models import WebhookEndpoint
from agents.services import webhook_endpoint_create
from agents.tasks import deliver_budget_webhook
from agents.webhooks import SIGNATURE_HEADER, DeliveryFailed, budget_webhook_deliver, verify
from tenants.models import BudgetAlert, ModelPrice
from tenants.quota import quota_reserve, quota_settle

pytestmark = pytest.mark.django_db


def _spend(tenant: Any, tokens_in: int) -> None:
    r = quota_reserve(tenant=tenant, max_tokens=tokens_in)
    quota_settle(reservation=r, tokens_in=tokens_in, tokens_out=0, model="hooked-model")


def test_budget_alerts_are_delivered_signed_to_the_listening_webhooks(
    world: Any, http_server: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    ModelPrice.objects.create(model="hooked-model", input_per_1k=Decimal("1.00"), output_per_1k=Decimal("0"))
    quota = world.tenant.quota
    quota.monthly_budget, quota.budget_alert_percent = Decimal("0.50"), 60
    quota.save()
    queued: list[tuple[int, int]] = []
    monkeypatch.setattr(
        "agents.dispatch.enqueue_budget_webhook",
        lambda *, endpoint_id, alert_id: queued.append((endpoint_id, alert_id)),
    )
    http_server.json("/budget", {"ok": True})
    listening, secret = webhook_endpoint_create(
        tenant=world.tenant, url=f"{http_server.base}/budget", event_types=["budget"], actor=world.admin
    )
    every, _ = webhook_endpoint_create(tenant=world.tenant, url=f"{http_server.base}/every", actor=world.admin)
    webhook_endpoint_create(
        tenant=world.tenant, url=f"{http_server.base}/runs", event_types=["status"], actor=world.admin
    )
    webhook_endpoint_create(tenant=world.other_tenant, url=f"{http_server.base}/other", actor=world.outsider)
    assert decrypt(WebhookEndpoint.unscoped.get(pk=listening.pk).encrypted_secret) == secret

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(4):
            _spend(world.tenant, 100)  # 0.40: past 60 %
    threshold = BudgetAlert.objects.for_tenant(world.tenant).get(level="threshold")
    assert sorted(queued) == sorted([(listening.pk, threshold.pk), (every.pk, threshold.pk)])

    with django_capture_on_commit_callbacks(execute=True):
        _spend(world.tenant, 100)  # 0.50: spent
    exhausted = BudgetAlert.objects.for_tenant(world.tenant).get(level="exhausted")
    assert len(queued) == 4 and {a for _, a in queued} == {threshold.pk, exhausted.pk}

    assert deliver_budget_webhook.name in current_app.tasks  # what agents.dispatch queues by name
    assert budget_webhook_deliver(endpoint_id=listening.pk, alert_id=exhausted.pk) == 1
    [request] = http_server.calls("/budget")
    assert request.headers["x-portal-event"] == "budget.exhausted"
    assert request.headers["x-portal-delivery"] == f"budget:{exhausted.pk}"
    assert verify(secret=secret, body=request.body, header=request.headers[SIGNATURE_HEADER.lower()])
    payload = json.loads(request.body)
    assert payload["type"] == "budget.exhausted" and payload["percent"] == 100
    assert payload["budget"] == "0.50" and payload["refusing"] is True and payload["enforcement"] == "block"

    # another department's alert is not this endpoint's to hear; a failing receiver is retried
    assert budget_webhook_deliver(endpoint_id=listening.pk, alert_id=exhausted.pk + 10_000) == 0
    http_server.routes["/every"] = (500, "{}")
    with pytest.raises(DeliveryFailed):
        budget_webhook_deliver(endpoint_id=every.pk, alert_id=threshold.pk)
    assert budget_webhook_deliver(endpoint_id=every.pk, alert_id=threshold.pk, attempt=9) == 0  # given up
    assert WebhookEndpoint.unscoped.get(pk=every.pk).failures == 2
