"""Usage and cost: the dashboard's aggregates, CSV export and budgets equal the sums of the recorded usage (settled
through the real quota path, priced by ModelPrice); department admins see only their own department."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from console.selectors import (
    UsageFilters,
    budget_list,
    usage_breakdown,
    usage_filters_parse,
    usage_queryset,
    usage_totals,
)
from tenants.models import ModelPrice, Quota, UsageRecord
from tenants.quota import quota_reserve, quota_settle

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def recorded(world):
    """Twelve settled answers over three days, two departments, three users, two adapters and the base model."""
    ModelPrice.objects.create(model=MODEL, input_per_1k=Decimal("0.001"), output_per_1k=Decimal("0.002"))
    ModelPrice.objects.create(model="legal", input_per_1k=Decimal("0.010"), output_per_1k=Decimal("0.030"))
    Quota.objects.filter(tenant=world.tenant).update(monthly_budget=Decimal("5.00"))
    now = timezone.now()
    plan = [
        # tenant, user, adapter, tokens in, tokens out, days ago
        (world.tenant, world.member, "", 120, 40, 0),
        (world.tenant, world.member, "legal", 300, 90, 0),
        (world.tenant, world.admin, "legal", 50, 10, 1),
        (world.tenant, world.admin, "", 800, 200, 1),
        (world.tenant, world.viewer, "tone", 70, 33, 2),
        (world.tenant, None, "", 400, 100, 2),  # an API key call without a user
        (world.tenant, world.member, "legal", 1000, 500, 2),
        (world.other_tenant, world.outsider, "", 900, 300, 0),
        (world.other_tenant, world.outsider, "legal", 20, 5, 1),
        (world.other_tenant, world.outsider, "", 60, 60, 1),
        (world.tenant, world.member, "", 5, 1, 0),
        (world.other_tenant, world.outsider, "tone", 11, 7, 2),
    ]
    records = []
    for tenant, user, adapter, tokens_in, tokens_out, days_ago in plan:
        reservation = quota_reserve(tenant=tenant, max_tokens=tokens_in + tokens_out + 10)
        record = quota_settle(
            reservation=reservation,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            user=user,
            model=MODEL,
            adapter=adapter,
            backend="cpu-1",
        )
        if days_ago:
            UsageRecord.objects.for_tenant(tenant).filter(pk=record.pk).update(
                created_at=now - timedelta(days=days_ago)
            )
        records.append(UsageRecord.objects.for_tenant(tenant).get(pk=record.pk))
    return records


def expected(records, key):
    sums = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    for r in records:
        row = sums[key(r)]
        row[0] += 1
        row[1] += r.tokens_in
        row[2] += r.tokens_out
        row[3] += r.cost
    return {k: tuple(v) for k, v in sums.items()}


def window(days: int = 7) -> UsageFilters:
    today = timezone.localdate()
    return usage_filters_parse(params={"since": (today - timedelta(days=days)).isoformat(), "until": today.isoformat()})


KEYS = {
    "tenant": lambda r: r.tenant_id,
    "user": lambda r: r.user_id,
    "adapter": lambda r: r.adapter,
    "model": lambda r: r.model,
    "day": lambda r: timezone.localtime(r.created_at).date(),
}


@pytest.mark.parametrize("by", list(KEYS))
def test_aggregates_equal_the_sum_of_recorded_usage(recorded, by):
    rows = usage_breakdown(qs=usage_queryset(tenant=None, filters=window()), by=by)
    got = {r.key: (r.requests, r.tokens_in, r.tokens_out, r.cost) for r in rows}
    assert got == expected(recorded, KEYS[by])
    # costs really come from the prices: 1,000 in + 500 out on "legal" = 0.010 + 0.015
    big = next(r for r in recorded if r.tokens_in == 1000)
    assert big.cost == Decimal("0.025000")


def test_a_department_admin_only_aggregates_their_department(recorded, world):
    mine = [r for r in recorded if r.tenant_id == world.tenant.pk]
    qs = usage_queryset(tenant=world.tenant, filters=window())
    total = usage_totals(qs=qs)
    assert (total.requests, total.tokens_in, total.tokens_out, total.cost) == expected(mine, lambda r: 0)[0]
    # a staff filter to one department gives the same
    staff_qs = usage_queryset(tenant=None, filters=UsageFilters(window().since, window().until, world.tenant.pk))
    assert usage_totals(qs=staff_qs) == total


def test_budgets_subtract_this_months_cost(recorded, world):
    month_start = timezone.localtime().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    spent = sum(
        (r.cost for r in recorded if r.tenant_id == world.tenant.pk and r.created_at >= month_start), Decimal(0)
    )
    (budget,) = budget_list(tenants=[world.tenant])
    assert budget.spent == spent and budget.remaining == Decimal("5.00") - spent


def test_dashboard_csv_and_charts(recorded, world, client):
    client.force_login(world.staff)
    response = client.get(reverse("console:usage"), {"by": "adapter"})
    page = response.content.decode()
    assert response.status_code == 200
    assert page.count("<svg") == 3 and "Tokens per day" in page
    total = expected(recorded, lambda r: 0)[0]
    assert f"<strong>{total[0]}</strong> requests" in page
    assert f"<strong>{total[1]}</strong> tokens in" in page

    export = client.get(reverse("console:usage_csv"))
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert sum(int(r["requests"]) for r in rows) == total[0]
    assert sum(int(r["tokens_in"]) for r in rows) == total[1]
    assert sum(int(r["tokens_out"]) for r in rows) == total[2]
    assert sum(Decimal(r["cost"]) for r in rows) == total[3]
    assert {r["department"] for r in rows} == {"alpha", "beta"}

    # the department admin's export holds only their department
    client.force_login(world.admin)
    rows = list(
        csv.DictReader(io.StringIO(b"".join(client.get(reverse("console:usage_csv")).streaming_content).decode()))
    )
    assert {r["department"] for r in rows} == {"alpha"}
    assert sum(int(r["requests"]) for r in rows) == sum(1 for r in recorded if r.tenant_id == world.tenant.pk)
    assert client.get(reverse("console:usage"), {"tenant": world.other_tenant.pk}).status_code == 404


def test_chart_labels_are_escaped(world, client):
    quota_settle(
        reservation=quota_reserve(tenant=world.tenant, max_tokens=20),
        tokens_in=5,
        tokens_out=5,
        model=MODEL,
        adapter='<script>alert("x")</script>',
    )
    client.force_login(world.staff)
    page = client.get(reverse("console:usage"), {"by": "adapter"}).content.decode()
    assert '<script>alert("x")</script>' not in page
    assert "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "YYYY-MM-DD"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "before the start"),
        ({"since": "2020-01-01", "until": "2026-01-01"}, "one year"),
        ({"by": "colour"}, "Unknown grouping"),
    ],
)
def test_bad_filters_are_explained(world, client, params, message):
    client.force_login(world.staff)
    response = client.get(reverse("console:usage"), params)
    assert response.status_code == 400 and message in response.content.decode()


def test_prices_are_editable_by_staff_and_apply_to_new_usage(world, client):
    client.force_login(world.staff)
    client.post(reverse("console:price_set"), {"model": MODEL, "input_per_1k": "0.5", "output_per_1k": "1.5"})
    record = quota_settle(
        reservation=quota_reserve(tenant=world.tenant, max_tokens=3000), tokens_in=1000, tokens_out=2000, model=MODEL
    )
    assert record.cost == Decimal("3.500000")
    bad = client.post(reverse("console:price_set"), {"model": MODEL, "input_per_1k": "-1", "output_per_1k": "1"})
    assert bad.status_code == 400 and "zero or more" in bad.content.decode()
    assert ModelPrice.objects.get(model=MODEL).input_per_1k == Decimal("0.5")
