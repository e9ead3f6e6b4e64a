"""Monthly budgets that act, against the real PostgreSQL: refusal at 100 %, alert-only departments, alerts raised
once per level (also under concurrency), and the month's cost kept exactly."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from core.errors import BudgetExceeded, QuotaExceeded
from core.metrics import BUDGET_ALERTS, QUOTA_REJECTIONS, metrics_refresh_state
from tenants.budget import budget_alert_raised, budget_status
from tenants.models import AuditEvent, BudgetAlert, ModelPrice, QuotaCounter, QuotaReservation, UsageRecord
from tenants.quota import quota_reserve, quota_settle, quota_status
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

MODEL = "priced-model"


@pytest.fixture
def priced() -> None:
    # 1.00 per 1,000 input tokens: 100 tokens in cost 0.10
    ModelPrice.objects.create(model=MODEL, input_per_1k=Decimal("1.00"), output_per_1k=Decimal("0"))


def _tenant(budget: str, *, percent: int = 80, enforcement: str = "block") -> Any:
    tenant = TenantFactory()
    quota = tenant.quota
    quota.monthly_budget = Decimal(budget)
    quota.budget_alert_percent = percent
    quota.budget_enforcement = enforcement
    quota.tokens_per_day = quota.tokens_per_month = 10_000_000
    quota.requests_per_minute = 100_000
    quota.save()
    return tenant


def _spend(tenant: Any, tokens_in: int) -> UsageRecord:
    r = quota_reserve(tenant=tenant, max_tokens=tokens_in)
    return quota_settle(reservation=r, tokens_in=tokens_in, tokens_out=0, model=MODEL)


def _month_cost(tenant: Any) -> Decimal:
    return QuotaCounter.objects.for_tenant(tenant).get(period="month").cost


def test_budget_refuses_once_spent_with_a_clear_message(priced):
    tenant = _tenant("1.00")
    for _ in range(9):
        _spend(tenant, 100)  # 0.90: still under the budget
    assert _month_cost(tenant) == Decimal("0.9")
    _spend(tenant, 200)  # admitted at 0.90, settles at 1.10: requests in flight finish
    assert _month_cost(tenant) == Decimal("1.1")
    before = QUOTA_REJECTIONS.labels(tenant=tenant.slug, reason="monthly_budget")._value.get()
    with pytest.raises(BudgetExceeded) as exc:
        quota_reserve(tenant=tenant, max_tokens=10)
    error = exc.value
    assert isinstance(error, QuotaExceeded) and error.status == 429 and error.code == "budget_exceeded"
    assert "spent its monthly budget (1.10 of 1.00)" in error.message
    assert "raise the budget or set it to alert only" in error.message
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    resets = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    assert 0 < error.retry_after <= (resets - now).total_seconds() + 2
    assert error.details["reason"] == "monthly_budget" and error.details["spent"] == "1.10"
    assert QUOTA_REJECTIONS.labels(tenant=tenant.slug, reason="monthly_budget")._value.get() == before + 1
    # a refusal holds nothing
    status = quota_status(tenant=tenant)
    assert (status.day_reserved, status.month_reserved) == (0, 0)
    assert not QuotaReservation.objects.for_tenant(tenant).exists()


def test_budget_alert_only_lets_requests_through_and_still_alerts(priced, django_capture_on_commit_callbacks):
    tenant = _tenant("0.50", enforcement="alert")
    received: list[BudgetAlert] = []

    def listener(sender: Any, alert: BudgetAlert, **_: Any) -> None:
        received.append(alert)

    budget_alert_raised.connect(listener, dispatch_uid="test-budget-listener")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            for _ in range(8):
                _spend(tenant, 100)  # 0.80: well past the budget
    finally:
        budget_alert_raised.disconnect(dispatch_uid="test-budget-listener")
    quota_reserve(tenant=tenant, max_tokens=10)  # still admitted
    levels = sorted(BudgetAlert.objects.for_tenant(tenant).values_list("level", flat=True))
    assert levels == ["exhausted", "threshold"]
    assert sorted(a.level for a in received) == ["exhausted", "threshold"]
    exhausted = BudgetAlert.objects.for_tenant(tenant).get(level="exhausted")
    assert (exhausted.percent, exhausted.enforcement, exhausted.spent) == (100, "alert", Decimal("0.5"))
    event = AuditEvent.objects.get(tenant=tenant, action="budget.exhausted")
    assert event.details["refusing"] is False and event.details["enforcement"] == "alert"
    assert budget_status(tenant=tenant).alerting and not budget_status(tenant=tenant).refusing


def test_budget_alerts_each_level_once_and_the_audit_log_says_so(priced):
    tenant = _tenant("1.00", percent=50)
    before = BUDGET_ALERTS.labels(tenant=tenant.slug, level="threshold")._value.get()
    for _ in range(4):
        _spend(tenant, 100)
    assert not BudgetAlert.objects.for_tenant(tenant).exists()
    assert not budget_status(tenant=tenant).alerting
    _spend(tenant, 100)  # 0.50: the alert share
    alert = BudgetAlert.objects.for_tenant(tenant).get()
    assert (alert.level, alert.percent, alert.spent, alert.budget) == ("threshold", 50, Decimal("0.5"), Decimal("1"))
    for _ in range(4):
        _spend(tenant, 100)  # 0.90: past the share again and again, no second alert
    assert BudgetAlert.objects.for_tenant(tenant).count() == 1
    assert BUDGET_ALERTS.labels(tenant=tenant.slug, level="threshold")._value.get() == before + 1
    status = budget_status(tenant=tenant)
    assert status.alerting and status.used_percent == 90 and not status.exhausted
    event = AuditEvent.objects.get(tenant=tenant, action="budget.threshold")
    assert event.details == {
        "month": f"{alert.month_start:%Y-%m}",
        "percent": 50,
        "budget": "1.00",
        "spent": "0.50",
        "enforcement": "block",
        "refusing": False,
    }
    _spend(tenant, 100)  # 1.00: spent
    assert AuditEvent.objects.get(tenant=tenant, action="budget.exhausted").details["refusing"] is True
    assert budget_status(tenant=tenant).refusing


def test_a_raised_budget_alerts_again_at_its_own_levels(priced):
    tenant = _tenant("0.30", percent=0)  # 0: alert only when all of it is spent
    for _ in range(3):
        _spend(tenant, 100)
    assert list(BudgetAlert.objects.for_tenant(tenant).values_list("level", "budget")) == [
        ("exhausted", Decimal("0.30"))
    ]
    with pytest.raises(BudgetExceeded):
        quota_reserve(tenant=tenant, max_tokens=1)
    tenant.quota.monthly_budget = Decimal("0.50")
    tenant.quota.save()
    _spend(tenant, 100)  # admitted again: 0.40 of 0.50
    _spend(tenant, 100)
    assert sorted(BudgetAlert.objects.for_tenant(tenant).values_list("budget", flat=True)) == [
        Decimal("0.30"),
        Decimal("0.50"),
    ]


@pytest.mark.parametrize("enforcement", ["block", "alert"])
def test_a_lowered_budget_alerts_at_the_next_request(priced, enforcement):
    tenant = _tenant("5.00", enforcement=enforcement)
    for _ in range(3):
        _spend(tenant, 100)
    tenant.quota.monthly_budget = Decimal("0.20")  # already past it: no settlement will cross it
    tenant.quota.save()
    if enforcement == "block":
        for _ in range(2):
            with pytest.raises(BudgetExceeded):
                quota_reserve(tenant=tenant, max_tokens=10)
    else:
        _spend(tenant, 10)
    assert sorted(BudgetAlert.objects.for_tenant(tenant).values_list("level", flat=True)) == [
        "exhausted",
        "threshold",
    ]


def test_budget_zero_means_no_budget(priced):
    tenant = _tenant("0")
    for _ in range(5):
        _spend(tenant, 1000)
    quota_reserve(tenant=tenant, max_tokens=10)
    assert not BudgetAlert.objects.for_tenant(tenant).exists()
    assert not budget_status(tenant=tenant).alerting


def test_budget_gauge_at_scrape_time(priced):
    tenant = _tenant("2.00")
    _spend(tenant, 500)
    from core.metrics import BUDGET_USED

    metrics_refresh_state()
    assert BUDGET_USED.labels(tenant=tenant.slug)._value.get() == pytest.approx(0.25)


# --- concurrency: each thread its own PostgreSQL connection ------------------------------------------------


def _race(n: int, work: Any) -> list[Any]:
    barrier = threading.Barrier(n)

    def attempt(i: int) -> Any:
        try:
            barrier.wait(timeout=30)
            return work(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(attempt, range(n)))


@pytest.mark.django_db(transaction=True)
def test_budget_concurrent_settlements_alert_once_and_count_every_cost(priced):
    """40 requests race past the alert share and the whole budget: each level is announced exactly once, and the
    month's counter holds exactly the cost of the usage records (no lost update)."""
    tenant = _tenant("1.00", percent=50)

    def work(_: int) -> str:
        try:
            _spend(tenant, 100)
            return "spent"
        except BudgetExceeded:
            return "refused"

    results = _race(40, work)
    records = list(UsageRecord.objects.for_tenant(tenant))
    assert results.count("spent") == len(records) >= 10  # at least the budget's worth got through
    assert _month_cost(tenant) == sum((r.cost for r in records), Decimal(0))
    assert sorted(BudgetAlert.objects.for_tenant(tenant).values_list("level", flat=True)) == [
        "exhausted",
        "threshold",
    ]
    assert AuditEvent.objects.filter(tenant=tenant, action__startswith="budget.").count() == 2
    # once spent, the next request is refused
    with pytest.raises(BudgetExceeded):
        quota_reserve(tenant=tenant, max_tokens=1)


@pytest.mark.django_db(transaction=True)
def test_budget_concurrent_requests_past_the_budget_are_all_refused(priced):
    tenant = _tenant("0.20")
    _spend(tenant, 200)

    def work(_: int) -> str:
        try:
            quota_reserve(tenant=tenant, max_tokens=50)
            return "admitted"
        except BudgetExceeded as exc:
            return exc.code

    assert set(_race(30, work)) == {"budget_exceeded"}
    status = quota_status(tenant=tenant)
    assert (status.day_reserved, status.month_reserved) == (0, 0)
    assert not QuotaReservation.objects.for_tenant(tenant).exists()
    assert BudgetAlert.objects.for_tenant(tenant).filter(level="exhausted").count() == 1


@pytest.mark.django_db(transaction=True)
def test_budget_alert_only_concurrent_requests_all_go_through(priced):
    tenant = _tenant("0.20", enforcement="alert")
    _spend(tenant, 200)

    def work(_: int) -> str:
        _spend(tenant, 10)
        return "spent"

    assert _race(30, work).count("spent") == 30
    assert _month_cost(tenant) == Decimal("0.5")
    assert BudgetAlert.objects.for_tenant(tenant).filter(level="exhausted").count() == 1
