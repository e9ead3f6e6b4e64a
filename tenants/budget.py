"""Monthly budgets that act: a department's cost this month against ``Quota.monthly_budget``.

The month's cost is kept on the month's ``QuotaCounter`` row (``cost``), added by the same statement that settles a
request (``tenants.quota.quota_settle``), and checked by the same statement that reserves one
(``tenants.quota.quota_reserve``): once the cost reaches the budget, a department set to ``block`` is refused with
``core.errors.BudgetExceeded`` (429, ``retry_after`` until the next UTC month); one set to ``alert`` goes on.
Requests admitted before the budget was reached still finish, so the month may end above the budget by what was in
flight at that moment.

Alerts: when a settlement takes the month's cost past the alert share (``Quota.budget_alert_percent``) or past the
whole budget, a ``BudgetAlert`` row is inserted (unique per department, month, level and budget amount, so the
admins hear of each level once however many requests cross it together), with an audit event
(``budget.threshold`` / ``budget.exhausted``) and ``portal_budget_alerts_total``; after the commit
``budget_alert_raised`` is sent (the agents app delivers it to the department's webhooks). The console shows a
banner while the month's cost is past the alert share (:func:`budget_status`).

A budget of 0 means no budget: nothing is refused or alerted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from core.errors import BudgetExceeded
from core.localcache import LocalCache
from core.metrics import BUDGET_ALERTS
from tenants.errors import QuotaReason
from tenants.models import BudgetAlert, BudgetEnforcement, Quota, QuotaCounter, Tenant
from tenants.services import audit_record

logger = logging.getLogger(__name__)

#: Sent after the commit of a settlement that raised an alert: ``alert`` is the ``BudgetAlert``.
budget_alert_raised = Signal()

# (tenant, month, level, budget) already alerted, as seen by this process: a settlement past a level that it did not
# cross itself checks the table once (a lowered budget, an alert share changed mid-month), then never again.
_ALERTED: LocalCache[bool] = LocalCache("tenants.budget_alerts", ttl=3600.0, strict=False)


def month_start_utc(now: datetime | None = None) -> datetime:
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,}"


# --- refusal ----------------------------------------------------------------------------------------------


def budget_refuses(*, quota: Quota, spent: Decimal) -> bool:
    """Whether a request is refused now: a budget is set, the department blocks past it, and it is spent."""
    return (
        quota.monthly_budget > 0
        and quota.budget_enforcement == BudgetEnforcement.BLOCK
        and Decimal(spent) >= quota.monthly_budget
    )


def budget_exceeded(*, quota: Quota, spent: Decimal, resets: datetime, now: datetime) -> BudgetExceeded:
    """The refusal: how much was spent of what, and when the budget resets."""
    wait = max(1, math.ceil((resets - now).total_seconds()))
    return BudgetExceeded(
        f"Your department has spent its monthly budget ({_money(Decimal(spent))} of "
        f"{_money(quota.monthly_budget)}), so new requests are refused until the budget resets on "
        f"{resets:%B} 1 (UTC). An administrator can raise the budget or set it to alert only.",
        retry_after=wait,
        details={
            "reason": QuotaReason.MONTHLY_BUDGET,
            "retry_after": wait,
            "budget": str(quota.monthly_budget),
            "spent": str(Decimal(spent).quantize(Decimal("0.01"))),
        },
    )


# --- alerts -----------------------------------------------------------------------------------------------


def _levels(alert_percent: int) -> list[tuple[str, int]]:
    levels = [(BudgetAlert.Level.THRESHOLD.value, alert_percent)] if 0 < alert_percent < 100 else []
    return [*levels, (BudgetAlert.Level.EXHAUSTED.value, 100)]


def _alert_insert(
    *,
    tenant_id: int,
    month_start: datetime,
    level: str,
    budget: Decimal,
    spent: Decimal,
    percent: int,
    enforcement: str,
) -> int | None:
    """The alert's id when this call inserted it; None when it was there already (one statement, no race)."""
    table = connection.ops.quote_name(BudgetAlert._meta.db_table)
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (tenant_id, month_start, level, budget, spent, percent, enforcement, created_at) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, month_start, level, budget) DO NOTHING RETURNING id",
            [tenant_id, month_start, level, budget, spent, percent, enforcement, timezone.now()],
        )
        row = cur.fetchone()
    return int(row[0]) if row else None


def _announce(alert: BudgetAlert, tenant_slug: str) -> None:
    refusing = alert.level == BudgetAlert.Level.EXHAUSTED and alert.enforcement == BudgetEnforcement.BLOCK
    audit_record(
        action=f"budget.{alert.level}",
        tenant=Tenant(pk=alert.tenant_id),
        actor_label="system",
        target=alert,
        details={
            "month": f"{alert.month_start:%Y-%m}",
            "percent": alert.percent,
            "budget": str(alert.budget),
            "spent": str(alert.spent.quantize(Decimal("0.01"))),
            "enforcement": alert.enforcement,
            "refusing": refusing,
        },
    )
    BUDGET_ALERTS.labels(tenant=tenant_slug or str(alert.tenant_id), level=alert.level).inc()
    logger.warning(
        "budget alert",
        extra={"budget_tenant_id": alert.tenant_id, "budget_level": alert.level, "budget_percent": alert.percent},
    )
    transaction.on_commit(lambda: budget_alert_raised.send(sender=BudgetAlert, alert=alert))


def budget_crossings(
    *,
    tenant_id: int,
    tenant_slug: str,
    month_start: datetime,
    before: Decimal,
    after: Decimal,
    budget: Decimal,
    alert_percent: int,
    enforcement: str,
) -> list[BudgetAlert]:
    """Called by the settlement that took the month's cost from ``before`` to ``after``: raise the alerts of the
    levels it reached (each once per department, month and budget). Returns the alerts raised by this call."""
    if budget <= 0:
        return []
    raised: list[BudgetAlert] = []
    for level, percent in _levels(alert_percent):
        amount = budget * percent / 100
        if after < amount:
            continue
        key = (tenant_id, month_start, level, budget)

        def insert(level: str = level, percent: int = percent) -> bool:
            alert_id = _alert_insert(
                tenant_id=tenant_id,
                month_start=month_start,
                level=level,
                budget=budget,
                spent=after,
                percent=percent,
                enforcement=enforcement,
            )
            if alert_id is not None:
                raised.append(
                    BudgetAlert(
                        pk=alert_id,
                        tenant_id=tenant_id,
                        month_start=month_start,
                        level=level,
                        budget=budget,
                        spent=after,
                        percent=percent,
                        enforcement=enforcement,
                    )
                )
            return True

        if before < amount:  # this settlement crossed the level (the counter's row lock orders settlements)
            insert()
            _ALERTED.get_or_load(key, lambda: True)
        else:
            _ALERTED.get_or_load(key, insert)
    for alert in raised:
        _announce(alert, tenant_slug)
    return raised


# --- status (console banner, metrics) ---------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetStatus:
    tenant: Tenant
    budget: Decimal
    spent: Decimal
    alert_percent: int
    enforcement: str
    resets_at: datetime

    @property
    def has_budget(self) -> bool:
        return self.budget > 0

    @property
    def used_ratio(self) -> float:
        return float(self.spent / self.budget) if self.has_budget else 0.0

    @property
    def used_percent(self) -> int:
        return math.floor(self.used_ratio * 100)

    @property
    def exhausted(self) -> bool:
        return self.has_budget and self.spent >= self.budget

    @property
    def refusing(self) -> bool:
        return self.exhausted and self.enforcement == BudgetEnforcement.BLOCK

    @property
    def alerting(self) -> bool:
        """Past the alert share (or spent): the console shows a banner."""
        if not self.has_budget:
            return False
        share = self.alert_percent if 0 < self.alert_percent < 100 else 100
        return self.spent * 100 >= self.budget * share


def budget_status_list(*, tenants: Iterable[Tenant], now: datetime | None = None) -> list[BudgetStatus]:
    """Each department's budget and this month's settled cost (from the month's quota counter)."""
    chosen = list(tenants)
    month = month_start_utc(now)
    ids = [t.pk for t in chosen]
    spent = dict(
        QuotaCounter.unscoped.filter(tenant_id__in=ids, period=QuotaCounter.Period.MONTH, window_start=month)
        .values_list("tenant_id", "cost")
        .order_by()
    )
    quotas = {q.tenant_id: q for q in Quota.objects.filter(tenant_id__in=ids)}
    out = []
    for tenant in chosen:
        quota = quotas.get(tenant.pk) or Quota(tenant=tenant)
        out.append(
            BudgetStatus(
                tenant=tenant,
                budget=Decimal(quota.monthly_budget),
                spent=Decimal(spent.get(tenant.pk, 0)),
                alert_percent=quota.budget_alert_percent,
                enforcement=quota.budget_enforcement,
                resets_at=_next_month(month),
            )
        )
    return out


def budget_status(*, tenant: Tenant, now: datetime | None = None) -> BudgetStatus:
    return budget_status_list(tenants=[tenant], now=now)[0]


def budget_alert_list(*, tenant: Tenant, since: datetime | None = None) -> list[BudgetAlert]:
    qs = BudgetAlert.objects.for_tenant(tenant)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    return list(qs)


def budget_alert_get(*, tenant_id: int, alert_id: int) -> BudgetAlert | None:
    return BudgetAlert.objects.for_tenant(tenant_id).filter(pk=alert_id).first()
