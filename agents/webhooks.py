"""Signed webhooks: each run event is POSTed as JSON to the department's registered endpoints.

Headers: ``X-Portal-Event`` (the event type), ``X-Portal-Delivery`` (``<run id>:<seq>``, stable across retries so
receivers can drop duplicates) and ``X-Portal-Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
HMAC-SHA256(secret, ``"<t>.<body>"``). Receivers recompute it over the raw body and reject stale timestamps.
Deliveries run on the ``agents`` queue and retry with backoff; they go through the egress guard (``core.egress``:
internal destinations are refused, the checked address is the one connected to) and redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents import dispatch
from agents.crypto import decrypt
from agents.models import AgentEvent, AgentRun, WebhookDelivery, WebhookEndpoint
from core.egress import EgressRefused, egress_client
from tenants.budget import budget_alert_get

if TYPE_CHECKING:
    from tenants.models import BudgetAlert

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portal-Signature"
DELIVERY_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 9  # the first try and the task's 8 retries (sweeps re-queue, they do not add attempts beyond this)
BUDGET_EVENT_TYPE = "budget"  # what an endpoint lists in ``event_types`` to hear of budget alerts


def sign(*, secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(*, secret: str, body: bytes, header: str, tolerance_s: int = 300, now: float | None = None) -> bool:
    """What a receiver does (used by the tests and documented for integrators)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance_s:
        return False
    expected = sign(secret=secret, body=body, timestamp=timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def webhook_fanout(*, event: AgentEvent) -> int:
    """Queue one delivery per matching active endpoint. Returns how many."""
    definition_id = AgentRun.unscoped.filter(pk=event.run_id).values_list("definition_id", flat=True).first()
    endpoints = [
        e
        for e in WebhookEndpoint.objects.for_tenant(event.tenant_id).filter(is_active=True)
        if (e.definition_id is None or e.definition_id == definition_id)
        and (not e.event_types or event.type in e.event_types)
    ]
    if not endpoints:
        return 0
    WebhookDelivery.unscoped.bulk_create(
        [WebhookDelivery(tenant_id=event.tenant_id, endpoint=e, event=event) for e in endpoints],
        ignore_conflicts=True,
    )
    for endpoint in endpoints:
        dispatch.enqueue_webhook(endpoint_id=endpoint.pk, event_id=event.pk)
    return len(endpoints)


def webhook_sweep(*, stale_after: timedelta | None = None, limit: int = 500) -> int:
    """Safety net for lost broker messages: deliveries still pending and untouched for ``WEBHOOK_STALE_SECONDS``
    (longer than the longest retry backoff) are queued again. Returns how many."""
    from agents.dispatch import enqueue_webhook

    stale_after = stale_after or timedelta(seconds=int(getattr(settings, "WEBHOOK_STALE_SECONDS", 900)))
    cutoff = timezone.now() - stale_after
    stale = list(
        WebhookDelivery.unscoped.filter(state=WebhookDelivery.State.PENDING, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", "endpoint_id", "event_id")[:limit]
    )
    if not stale:
        return 0
    WebhookDelivery.unscoped.filter(pk__in=[pk for pk, _, _ in stale]).update(updated_at=timezone.now())
    for _, endpoint_id, event_id in stale:
        enqueue_webhook(endpoint_id=endpoint_id, event_id=event_id)
    logger.info("webhook sweep re-queued %s deliveries", len(stale))
    return len(stale)


def webhook_body(event: AgentEvent) -> bytes:
    payload: dict[str, Any] = {
        "run_id": event.run_id,
        "seq": event.seq,
        "type": event.type,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


class DeliveryFailed(Exception):
    pass


def _post(*, endpoint: WebhookEndpoint, body: bytes, event_type: str, delivery_id: str) -> tuple[bool, bool, str]:
    """POST a signed body through the egress guard and record the outcome on the endpoint. Returns (delivered,
    refused by the guard, status text)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "enterprise-portal-webhooks/1",
        "X-Portal-Event": event_type,
        "X-Portal-Delivery": delivery_id,
        SIGNATURE_HEADER: sign(secret=decrypt(endpoint.encrypted_secret), body=body, timestamp=int(time.time())),
    }
    status_text = ""
    ok = False
    refused = False
    try:
        with egress_client(timeout=DELIVERY_TIMEOUT_S) as client:
            response = client.post(endpoint.url, content=body, headers=headers)
        status_text = f"HTTP {response.status_code}"
        ok = 200 <= response.status_code < 300
    except EgressRefused as exc:
        status_text, refused = f"refused: {exc.message}", True
    except httpx.InvalidURL:
        status_text, refused = "refused: the URL is not valid", True
    except httpx.HTTPError as exc:
        status_text = type(exc).__name__
    with transaction.atomic():
        fields: dict[str, Any] = {"last_delivery_at": timezone.now(), "last_status": status_text[:80]}
        if ok:
            fields["failures"] = 0
        WebhookEndpoint.unscoped.filter(pk=endpoint.pk).update(**fields)
        if not ok:
            WebhookEndpoint.unscoped.filter(pk=endpoint.pk).update(failures=F("failures") + 1)
    return ok, refused, status_text


def webhook_deliver(*, endpoint_id: int, event_id: int) -> int:
    """POST one event to one endpoint; raises DeliveryFailed (the task retries) on a network error or non-2xx."""
    endpoint = WebhookEndpoint.unscoped.filter(pk=endpoint_id, is_active=True).first()
    event = AgentEvent.unscoped.filter(pk=event_id).first()
    if endpoint is None or event is None or endpoint.tenant_id != event.tenant_id:
        return 0
    delivery, _ = WebhookDelivery.unscoped.get_or_create(
        endpoint=endpoint, event=event, defaults={"tenant_id": event.tenant_id}
    )
    if delivery.state != WebhookDelivery.State.PENDING:
        return 0  # a duplicate message (e.g. re-queued by the sweep after all): delivered or given up already
    ok, refused, status_text = _post(
        endpoint=endpoint, body=webhook_body(event), event_type=event.type, delivery_id=f"{event.run_id}:{event.seq}"
    )
    attempts = delivery.attempts + 1
    given_up = not ok and (refused or attempts >= MAX_ATTEMPTS)
    state = (
        WebhookDelivery.State.DELIVERED
        if ok
        else WebhookDelivery.State.FAILED
        if given_up
        else WebhookDelivery.State.PENDING
    )
    WebhookDelivery.unscoped.filter(pk=delivery.pk).update(
        state=state, attempts=attempts, last_status=status_text[:80], updated_at=timezone.now()
    )
    if refused:
        logger.warning("webhook %s refused by the egress guard", endpoint.pk)
        return 0  # retrying cannot help: the destination is internal
    if given_up:
        logger.warning("webhook delivery %s given up after %s attempts", delivery.pk, attempts)
        return 0
    if not ok:
        raise DeliveryFailed(f"webhook {endpoint.pk}: {status_text}")
    return 1


# --- budget alerts ---------------------------------------------------------------------------------------
# A department's budget alerts (``tenants.budget``) go to its endpoints that are not tied to one agent and listen to
# every event type or to ``budget``. Headers as above, with ``X-Portal-Event: budget.threshold|budget.exhausted`` and
# ``X-Portal-Delivery: budget:<alert id>``; retried by the task (``agents.deliver_budget_webhook``) with backoff.


def budget_alert_fanout(*, alert: BudgetAlert) -> int:
    """Queue one delivery of a budget alert per listening endpoint (after the alert's commit). Returns how many."""
    endpoints = [
        e
        for e in WebhookEndpoint.objects.for_tenant(alert.tenant_id).filter(is_active=True, definition__isnull=True)
        if not e.event_types or BUDGET_EVENT_TYPE in e.event_types
    ]
    for endpoint in endpoints:
        dispatch.enqueue_budget_webhook(endpoint_id=endpoint.pk, alert_id=alert.pk)
    return len(endpoints)


def budget_webhook_body(alert: BudgetAlert) -> bytes:
    payload: dict[str, Any] = {
        "type": f"budget.{alert.level}",
        "alert_id": alert.pk,
        "month": f"{alert.month_start:%Y-%m}",
        "percent": alert.percent,
        "budget": str(alert.budget),
        "spent": str(alert.spent.quantize(Decimal("0.01"))),
        "enforcement": alert.enforcement,
        "refusing": alert.level == "exhausted" and alert.enforcement == "block",
        "created_at": alert.created_at.isoformat(),
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def budget_webhook_deliver(*, endpoint_id: int, alert_id: int, attempt: int = 1) -> int:
    """POST one budget alert to one endpoint; raises DeliveryFailed (the task retries) until ``MAX_ATTEMPTS``."""
    endpoint = WebhookEndpoint.unscoped.filter(pk=endpoint_id, is_active=True).first()
    if endpoint is None:
        return 0
    alert = budget_alert_get(tenant_id=endpoint.tenant_id, alert_id=alert_id)
    if alert is None:
        return 0
    ok, refused, status_text = _post(
        endpoint=endpoint,
        body=budget_webhook_body(alert),
        event_type=f"budget.{alert.level}",
        delivery_id=f"budget:{alert.pk}",
    )
    if ok:
        return 1
    if refused or attempt >= MAX_ATTEMPTS:
        logger.warning("budget webhook %s to endpoint %s given up: %s", alert.pk, endpoint.pk, status_text)
        return 0
    raise DeliveryFailed(f"webhook {endpoint.pk}: {status_text}")
