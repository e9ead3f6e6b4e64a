"""Console reads: usage and cost aggregates, monthly budgets, member and key lists.

Usage comes from ``tenants.UsageRecord`` (one row per settled request, written by the chat pipeline and the API).
Department admins read through ``for_tenant``; platform staff read across departments through the explicit
``UsageRecord.unscoped`` hatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal

from django.contrib.auth.models import User
from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay
from django.utils import timezone

from adapters.selectors import adapter_names
from chat.selectors import FeedbackFilters, LatencyStats, backend_latency_stats
from core.errors import InvalidInput
from inference_pool.selectors import backend_inflight_counts, backend_list, base_model_list
from knowledge.selectors import drift_report_list, knowledge_base_list_readable
from tenants.budget import BudgetStatus, budget_status_list
from tenants.models import ApiKey, Membership, ModelPrice, Quota, Tenant, UsageRecord
from tenants.selectors import model_price_list

GroupBy = Literal["tenant", "user", "adapter", "model", "day"]
GROUPS: tuple[GroupBy, ...] = ("day", "tenant", "user", "model", "adapter")
_GROUP_FIELD = {
    "tenant": "tenant_id",
    "user": "user_id",
    "adapter": "adapter",
    "model": "model",
}
ZERO = Decimal("0")


@dataclass(frozen=True)
class UsageFilters:
    since: datetime
    until: datetime
    tenant_id: int | None = None  # staff only: narrow to one department

    @property
    def days(self) -> int:
        return max(1, (self.until - self.since).days)


@dataclass
class UsageRow:
    key: Any
    label: str
    requests: int
    tokens_in: int
    tokens_out: int
    cost: Decimal

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


@dataclass
class Budget:
    tenant: Tenant
    budget: Decimal
    spent: Decimal
    month_start: date

    @property
    def remaining(self) -> Decimal:
        return self.budget - self.spent

    @property
    def used_percent(self) -> int:
        if self.budget <= 0:
            return 100 if self.spent > 0 else 0
        return min(100, int(self.spent * 100 / self.budget))


def _local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def usage_filters_parse(*, params: dict[str, str], default_days: int = 30) -> UsageFilters:
    """Dates from a form (YYYY-MM-DD, inclusive); a clear message when they do not parse or are reversed."""
    today = timezone.localdate()

    def parse(name: str, fallback: date) -> date:
        raw = (params.get(name) or "").strip()
        if not raw:
            return fallback
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(f"'{raw}' is not a date; use YYYY-MM-DD.") from None

    start = parse("since", today - timedelta(days=default_days - 1))
    end = parse("until", today)
    if end < start:
        raise InvalidInput("The end date is before the start date.")
    if (end - start).days > 366:
        raise InvalidInput("Choose at most one year at a time.")
    tenant_id = None
    raw_tenant = (params.get("tenant") or "").strip()
    if raw_tenant:
        try:
            tenant_id = int(raw_tenant)
        except ValueError:
            raise InvalidInput("Choose a department from the list.") from None
    return UsageFilters(
        since=_local_midnight(start), until=_local_midnight(end + timedelta(days=1)), tenant_id=tenant_id
    )


def audit_filters_parse(*, params: dict[str, str]) -> dict[str, Any]:
    """Audit log filters from a form: actor and action (prefix) as text, ``since``/``until`` as a date (a whole
    day) or a local date and time."""
    filters: dict[str, Any] = {
        "action": (params.get("action") or "").strip(),
        "actor": (params.get("actor") or "").strip(),
    }
    for name in ("since", "until"):
        raw = (params.get(name) or "").strip()
        if not raw:
            continue
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidInput(f"'{raw}' is not a time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM.") from None
        if timezone.is_naive(value):
            value = timezone.make_aware(value)
        if name == "until" and len(raw) == 10:
            value += timedelta(days=1)  # a plain end date includes that whole day
        filters[name] = value
    return filters


def usage_queryset(*, tenant: Tenant | None, filters: UsageFilters) -> QuerySet[UsageRecord]:
    """``tenant`` is the caller's department (None: platform staff, every department unless filtered)."""
    if tenant is not None:
        qs: QuerySet[UsageRecord] = UsageRecord.objects.for_tenant(tenant)
    else:
        qs = UsageRecord.unscoped.all()
        if filters.tenant_id is not None:
            qs = qs.filter(tenant_id=filters.tenant_id)
    return qs.filter(created_at__gte=filters.since, created_at__lt=filters.until)


def _sums() -> dict[str, Any]:
    return {
        "n_requests": Count("id"),
        "sum_in": Coalesce(Sum("tokens_in"), 0),
        "sum_out": Coalesce(Sum("tokens_out"), 0),
        "sum_cost": Coalesce(Sum("cost"), ZERO),
    }


def usage_totals(*, qs: QuerySet[UsageRecord]) -> UsageRow:
    agg = qs.aggregate(**_sums())
    return UsageRow(
        key=None,
        label="Total",
        requests=agg["n_requests"],
        tokens_in=agg["sum_in"],
        tokens_out=agg["sum_out"],
        cost=Decimal(agg["sum_cost"]),
    )


def usage_breakdown(*, qs: QuerySet[UsageRecord], by: str) -> list[UsageRow]:
    """Requests, tokens in/out and cost grouped by department, user, adapter, model or day (days in order, the
    other groupings by cost, highest first)."""
    if by not in GROUPS:
        raise InvalidInput(f"Unknown grouping '{by}'. Choose one of: {', '.join(GROUPS)}.")
    if by == "day":
        rows: Any = (
            qs.annotate(day=TruncDay("created_at", tzinfo=timezone.get_current_timezone()))
            .values("day")
            .annotate(**_sums())
            .order_by("day")
        )
        return [
            UsageRow(
                key=r["day"].date(),
                label=r["day"].date().isoformat(),
                requests=r["n_requests"],
                tokens_in=r["sum_in"],
                tokens_out=r["sum_out"],
                cost=Decimal(r["sum_cost"]),
            )
            for r in rows
        ]
    field = _GROUP_FIELD[by]
    rows = qs.values(field).annotate(**_sums()).order_by("-sum_cost", "-sum_out", field)
    keys = [r[field] for r in rows]
    labels = _labels(by=by, keys=keys)
    return [
        UsageRow(
            key=r[field],
            label=labels.get(r[field], ""),
            requests=r["n_requests"],
            tokens_in=r["sum_in"],
            tokens_out=r["sum_out"],
            cost=Decimal(r["sum_cost"]),
        )
        for r in rows
    ]


def _labels(*, by: str, keys: list[Any]) -> dict[Any, str]:
    if by == "tenant":
        return {t.pk: t.name for t in Tenant.objects.filter(pk__in=[k for k in keys if k is not None])}
    if by == "user":
        names = dict(User.objects.filter(pk__in=[k for k in keys if k is not None]).values_list("pk", "username"))
        return {k: names.get(k, "(deleted user)") if k is not None else "(API key / system)" for k in keys}
    if by == "adapter":
        return {k: k or "(base model)" for k in keys}
    return {k: k or "(unknown)" for k in keys}


def usage_daily_series(*, qs: QuerySet[UsageRecord], filters: UsageFilters) -> list[UsageRow]:
    """One row per day of the window, zero-filled, for the charts."""
    by_day = {row.key: row for row in usage_breakdown(qs=qs, by="day")}
    start = timezone.localtime(filters.since).date()
    out = []
    for i in range(filters.days):
        day = start + timedelta(days=i)
        out.append(by_day.get(day) or UsageRow(day, day.isoformat(), 0, 0, 0, ZERO))
    return out


CSV_HEADER = ["day", "department", "user", "model", "adapter", "requests", "tokens_in", "tokens_out", "cost"]


def usage_csv_rows(*, qs: QuerySet[UsageRecord]) -> Iterator[list[str]]:
    """One row per day, department, user, model and adapter, for spreadsheets."""
    rows: Any = (
        qs.annotate(day=TruncDay("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "tenant_id", "user_id", "model", "adapter")
        .annotate(**_sums())
        .order_by("day", "tenant_id", "user_id", "model", "adapter")
    )
    tenants = dict(Tenant.objects.values_list("pk", "slug"))
    users: dict[int, str] = {}
    yield CSV_HEADER
    for r in rows.iterator(chunk_size=2000):
        uid = r["user_id"]
        if uid is not None and uid not in users:
            users[uid] = User.objects.filter(pk=uid).values_list("username", flat=True).first() or ""
        yield [
            r["day"].date().isoformat(),
            tenants.get(r["tenant_id"], ""),
            users.get(uid, "") if uid is not None else "",
            r["model"],
            r["adapter"],
            str(r["n_requests"]),
            str(r["sum_in"]),
            str(r["sum_out"]),
            f"{Decimal(r['sum_cost']):.6f}",
        ]


def month_start(*, now: datetime | None = None) -> datetime:
    local = timezone.localtime(now or timezone.now())
    return _local_midnight(local.date().replace(day=1))


def budget_list(*, tenants: list[Tenant], now: datetime | None = None) -> list[Budget]:
    """Each department's monthly budget, this month's cost so far and what remains."""
    start = month_start(now=now)
    ids = [t.pk for t in tenants]
    spent = dict(
        UsageRecord.unscoped.filter(tenant_id__in=ids, created_at__gte=start)
        .values("tenant_id")
        .annotate(total=Coalesce(Sum("cost"), ZERO))
        .values_list("tenant_id", "total")
    )
    budgets = dict(Quota.objects.filter(tenant_id__in=ids).values_list("tenant_id", "monthly_budget"))
    return [
        Budget(
            tenant=t,
            budget=Decimal(budgets.get(t.pk, ZERO)),
            spent=Decimal(spent.get(t.pk, ZERO)),
            month_start=start.date(),
        )
        for t in tenants
    ]


def budget_banners(*, tenants: list[Tenant]) -> list[BudgetStatus]:
    """Departments whose cost this month passed their alert share, the most spent first."""
    alerting = [s for s in budget_status_list(tenants=tenants) if s.alerting]
    return sorted(alerting, key=lambda s: (-s.used_ratio, s.tenant.name))


def member_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.for_tenant(tenant).select_related("user").order_by("user__username")


def api_key_list_with_users(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.for_tenant(tenant).select_related("created_by").order_by("revoked_at", "-created_at")


# -------------------------------------------------------------------------------------------------------- prices
@dataclass
class PriceOverview:
    prices: list[ModelPrice]
    unpriced: list[str]  # base models and adapters without a price, by name


def price_overview() -> PriceOverview:
    prices = list(model_price_list())
    priced = {p.model for p in prices}
    names = sorted(set(base_model_list().values_list("name", flat=True)) | adapter_names())
    return PriceOverview(prices=prices, unpriced=[n for n in names if n not in priced])


# ---------------------------------------------------------------------------------------------------------- the pool
@dataclass
class BackendRow:
    backend: Any
    inflight: int | None
    running: float | None
    waiting: float | None
    kv_usage: float | None
    latency: LatencyStats | None
    adapters: list[Any]

    @property
    def kv_percent(self) -> int | None:
        return None if self.kv_usage is None else round(self.kv_usage * 100)


def pool_overview() -> list[BackendRow]:
    backends = list(backend_list())
    inflight = backend_inflight_counts(backend_ids=[b.pk for b in backends])
    latency = backend_latency_stats()
    rows = []
    for b in backends:
        load = b.load if isinstance(b.load, dict) else {}
        rows.append(
            BackendRow(
                backend=b,
                inflight=inflight.get(b.pk) if inflight is not None else None,
                running=load.get("running"),
                waiting=load.get("waiting"),
                kv_usage=load.get("kv_usage"),
                latency=latency.get(b.name),
                adapters=list(b.adapters.all()),
            )
        )
    return rows


# ------------------------------------------------------------------------------------------------- feedback review
def feedback_filters_parse(*, params: dict[str, str]) -> tuple[FeedbackFilters, int | None]:
    """The review's filters from a form (dates as on the usage page, model, knowledge base, commented only) and the
    department a staff member narrowed to."""
    window = usage_filters_parse(params=params, default_days=30)
    raw_kb = (params.get("knowledge_base") or "").strip()
    try:
        kb_id = int(raw_kb) if raw_kb else None
    except ValueError:
        raise InvalidInput("Choose a knowledge base from the list.") from None
    filters = FeedbackFilters(
        since=window.since,
        until=window.until,
        model=(params.get("model") or "").strip()[:200],
        knowledge_base_id=kb_id,
        commented=(params.get("commented") or "") in ("1", "on", "true"),
    )
    return filters, window.tenant_id


def feedback_knowledge_bases(*, tenant: Tenant | None) -> list[Any]:
    """A department's knowledge bases for the filter (none for staff across departments)."""
    if tenant is None:
        return []
    return list(knowledge_base_list_readable(tenant=tenant, role="admin"))


# ----------------------------------------------------------------------------------------------- embedding drift
@dataclass
class DriftPanel:
    tenant: Tenant
    knowledge_base_id: int
    knowledge_base_name: str
    latest: Any  # knowledge's DriftReport
    history: list[Any]  # oldest first


def drift_overview(*, tenants: list[Tenant]) -> list[DriftPanel]:
    """Per knowledge base of the departments in reach: its latest drift check and the ones before (for the charts),
    drifted ones first."""
    panels: list[DriftPanel] = []
    for tenant in tenants:
        by_kb: dict[int, list[Any]] = {}
        for report in drift_report_list(tenant=tenant):
            by_kb.setdefault(report.knowledge_base_id, []).append(report)
        for kb_id, reports in by_kb.items():
            panels.append(
                DriftPanel(
                    tenant=tenant,
                    knowledge_base_id=kb_id,
                    knowledge_base_name=reports[0].knowledge_base.name,
                    latest=reports[0],
                    history=list(reversed(reports)),
                )
            )
    return sorted(panels, key=lambda p: (not p.latest.drifted, -p.latest.psi, p.knowledge_base_name))
