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
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.crypto import decrypt
from agents.models import AgentEvent, WebhookEndpoint
from core.egress import EgressRefused, egress_client

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Portal-Signature"
DELIVERY_TIMEOUT_S = 10.0


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
    from agents.models import AgentRun

    definition_id = AgentRun.unscoped.filter(pk=event.run_id).values_list("definition_id", flat=True).first()
    endpoints = [
        e
        for e in WebhookEndpoint.objects.for_tenant(event.tenant_id).filter(is_active=True)
        if (e.definition_id is None or e.definition_id == definition_id)
        and (not e.event_types or event.type in e.event_types)
    ]
    if not endpoints:
        return 0
    from agents.dispatch import enqueue_webhook

    for endpoint in endpoints:
        enqueue_webhook(endpoint_id=endpoint.pk, event_id=event.pk)
    return len(endpoints)


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


def webhook_deliver(*, endpoint_id: int, event_id: int) -> int:
    """POST one event to one endpoint; raises DeliveryFailed (the task retries) on a network error or non-2xx."""
    import httpx

    endpoint = WebhookEndpoint.unscoped.filter(pk=endpoint_id, is_active=True).first()
    event = AgentEvent.unscoped.filter(pk=event_id).first()
    if endpoint is None or event is None or endpoint.tenant_id != event.tenant_id:
        return 0
    body = webhook_body(event)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "enterprise-portal-webhooks/1",
        "X-Portal-Event": event.type,
        "X-Portal-Delivery": f"{event.run_id}:{event.seq}",
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
            from django.db.models import F

            WebhookEndpoint.unscoped.filter(pk=endpoint.pk).update(failures=F("failures") + 1)
    if refused:
        logger.warning("webhook %s refused by the egress guard", endpoint.pk)
        return 0  # retrying cannot help: the destination is internal
    if not ok:
        raise DeliveryFailed(f"webhook {endpoint.pk}: {status_text}")
    return 1
