"""Quota accounting against the real PostgreSQL: reservations, settlement, windows and concurrency."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from core.errors import QuotaExceeded
from core.metrics import QUOTA_REJECTIONS
from tenants.models import ModelPrice, QuotaCounter, QuotaReservation, UsageRecord
from tenants.quota import (
    quota_extend,
    quota_release,
    quota_release_stale,
    quota_reserve,
    quota_settle,
    quota_status,
)
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _tenant(**quota: int):  # type: ignore[no-untyped-def]
    tenant = TenantFactory()
    for k, v in quota.items():
        setattr(tenant.quota, k, v)
    tenant.quota.save()
    return tenant


def test_reserve_then_settle_keeps_only_real_usage():
    tenant = _tenant(tokens_per_day=1000, tokens_per_month=5000)
    r = quota_reserve(tenant=tenant, max_tokens=300)
    status = quota_status(tenant=tenant)
    assert (status.day_used, status.day_reserved, status.day_left) == (0, 300, 700)
    record = quota_settle(reservation=r, tokens_in=40, tokens_out=60, model="m", request_id="abc")
    status = quota_status(tenant=tenant)
    assert (status.day_used, status.day_reserved, status.month_used, status.month_reserved) == (100, 0, 100, 0)
    assert (record.tokens_in, record.tokens_out, record.request_id, record.tenant_id) == (40, 60, "abc", tenant.pk)
    assert not QuotaReservation.objects.for_tenant(tenant).exists()


def test_settling_twice_does_not_release_twice():
    tenant = _tenant(tokens_per_day=1000)
    a = quota_reserve(tenant=tenant, max_tokens=300)
    quota_reserve(tenant=tenant, max_tokens=200)
    quota_release(reservation=a)
    quota_release(reservation=a)
    assert quota_status(tenant=tenant).day_reserved == 200


def test_day_limit_refuses_with_a_clear_message_and_retry_after():
    tenant = _tenant(tokens_per_day=500)
    quota_reserve(tenant=tenant, max_tokens=400)
    before = QUOTA_REJECTIONS.labels(tenant=tenant.slug, reason="tokens_per_day")._value.get()
    with pytest.raises(QuotaExceeded) as exc:
        quota_reserve(tenant=tenant, max_tokens=101)
    assert exc.value.status == 429
    assert "daily quota of 500 tokens" in exc.value.message
    now = datetime.now(UTC)
    to_midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    assert 0 < exc.value.retry_after <= to_midnight + 2
    assert QUOTA_REJECTIONS.labels(tenant=tenant.slug, reason="tokens_per_day")._value.get() == before + 1
    # a refusal holds nothing and does not count as a request
    status = quota_status(tenant=tenant)
    assert (status.day_reserved, status.requests_this_minute) == (400, 1)
    assert quota_reserve(tenant=tenant, max_tokens=100).tokens == 100


def test_month_limit_applies_across_days():
    tenant = _tenant(tokens_per_day=1000, tokens_per_month=1500)
    yesterday = datetime.now(UTC).replace(hour=12) - timedelta(days=1)
    if yesterday.month != datetime.now(UTC).month:
        pytest.skip("first day of the month: no earlier day in this month")
    r = quota_reserve(tenant=tenant, max_tokens=900, now=yesterday)
    quota_settle(reservation=r, tokens_in=900, tokens_out=0)
    quota_reserve(tenant=tenant, max_tokens=600)
    with pytest.raises(QuotaExceeded, match="monthly quota of 1,500 tokens"):
        quota_reserve(tenant=tenant, max_tokens=1)


def test_requests_per_minute():
    tenant = _tenant(requests_per_minute=3)
    at = datetime.now(UTC).replace(second=5)
    for _ in range(3):
        quota_reserve(tenant=tenant, max_tokens=1, now=at)
    with pytest.raises(QuotaExceeded, match="3 requests this minute") as exc:
        quota_reserve(tenant=tenant, max_tokens=1, now=at)
    assert exc.value.retry_after == 55
    quota_reserve(tenant=tenant, max_tokens=1, now=at + timedelta(minutes=1))


def test_a_request_larger_than_the_quota_is_explained():
    tenant = _tenant(tokens_per_day=100)
    with pytest.raises(QuotaExceeded, match="may need up to 1,000 tokens"):
        quota_reserve(tenant=tenant, max_tokens=1000)


def test_extend_and_refusal_keeps_the_original_hold():
    tenant = _tenant(tokens_per_day=1000)
    r = quota_reserve(tenant=tenant, max_tokens=100)
    r = quota_extend(reservation=r, tokens=600, tenant=tenant)
    assert r.tokens == 600 and quota_status(tenant=tenant).day_reserved == 600
    with pytest.raises(QuotaExceeded):
        quota_extend(reservation=r, tokens=1200, tenant=tenant)
    assert quota_status(tenant=tenant).day_reserved == 600
    quota_settle(reservation=r, tokens_in=10, tokens_out=10)
    assert quota_status(tenant=tenant).day_reserved == 0


def test_cost_uses_the_adapter_price_before_the_model_price():
    tenant = _tenant()
    ModelPrice.objects.create(model="base", input_per_1k=Decimal("0.5"), output_per_1k=Decimal("1.5"))
    ModelPrice.objects.create(model="legal-lora", input_per_1k=Decimal("1"), output_per_1k=Decimal("2"))
    r = quota_reserve(tenant=tenant, max_tokens=5000)
    rec = quota_settle(reservation=r, tokens_in=1000, tokens_out=2000, model="base")
    assert rec.cost == Decimal("3.5")
    r = quota_reserve(tenant=tenant, max_tokens=5000)
    rec = quota_settle(reservation=r, tokens_in=1000, tokens_out=2000, model="base", adapter="legal-lora")
    assert rec.cost == Decimal("5")
    r = quota_reserve(tenant=tenant, max_tokens=5000)
    assert quota_settle(reservation=r, tokens_in=1000, tokens_out=1000, model="unpriced").cost == 0


def test_stale_reservations_are_released():
    tenant = _tenant(tokens_per_day=1000)
    r = quota_reserve(tenant=tenant, max_tokens=700)
    QuotaReservation.objects.for_tenant(tenant).filter(pk=r.id).update(
        created_at=datetime.now(UTC) - timedelta(hours=2)
    )
    fresh = quota_reserve(tenant=tenant, max_tokens=200)
    assert quota_release_stale(older_than=timedelta(hours=1)) == 1
    assert quota_status(tenant=tenant).day_reserved == 200
    # settling the swept reservation later records usage but releases nothing twice
    quota_settle(reservation=r, tokens_in=5, tokens_out=5)
    status = quota_status(tenant=tenant)
    assert (status.day_used, status.day_reserved) == (10, 200)
    quota_release(reservation=fresh)


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_exceed_the_budget():
    """50 threads, each its own PostgreSQL connection, race for a budget that fits 10 of them."""
    tenant = _tenant(tokens_per_day=1000, tokens_per_month=10_000, requests_per_minute=1000)
    barrier = threading.Barrier(50)

    def attempt(_: int) -> bool:
        try:
            barrier.wait(timeout=30)
            r = quota_reserve(tenant=tenant, max_tokens=100)
            quota_settle(reservation=r, tokens_in=30, tokens_out=70)
            return True
        except QuotaExceeded:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, range(50)))
    settled = sum(u.tokens_in + u.tokens_out for u in UsageRecord.objects.for_tenant(tenant))
    # settlement releases nothing here (each used its full 100), so exactly ten fit
    assert sum(results) == 10
    assert settled == 1000
    day = QuotaCounter.objects.for_tenant(tenant).get(period="day")
    assert (day.used, day.reserved) == (1000, 0)
