"""The console's budget banner (the department's admins and platform staff, never another department's admin) and
the budget settings on the quota form."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from tenants.models import ModelPrice, Quota
from tenants.quota import quota_reserve, quota_settle

HX = {"HTTP_HX_REQUEST": "true"}


def _spend(tenant: Any, tokens_in: int) -> None:
    r = quota_reserve(tenant=tenant, max_tokens=tokens_in)
    quota_settle(reservation=r, tokens_in=tokens_in, tokens_out=0, model="banner-model")


def _banner(client: Any, user: Any) -> str:
    client.force_login(user)
    page = client.get(reverse("console:overview")).content.decode()
    return page if 'data-testid="budget-banner"' in page else ""


@pytest.fixture
def priced(world: Any) -> None:
    ModelPrice.objects.create(model="banner-model", input_per_1k=Decimal("1.00"), output_per_1k=Decimal("0"))
    Quota.objects.filter(tenant=world.tenant).update(monthly_budget=Decimal("1.00"), budget_alert_percent=50)


def test_budget_banner_appears_at_the_alert_share_for_the_right_people(world, client, priced):
    _spend(world.tenant, 400)
    assert _banner(client, world.admin) == ""
    _spend(world.tenant, 200)  # 0.60 of 1.00, past 50 %
    page = _banner(client, world.admin)
    assert "Alpha has used 60% of its monthly budget" in page and "0.60 of 1.00" in page
    assert "Alpha has used 60%" in _banner(client, world.staff)
    assert _banner(client, world.outsider) == ""  # another department's admin

    _spend(world.tenant, 500)  # spent
    page = _banner(client, world.owner)
    assert "Alpha has spent its monthly budget" in page and "New requests are refused" in page
    Quota.objects.filter(tenant=world.tenant).update(budget_enforcement="alert")
    assert "the department is set to alert only" in _banner(client, world.admin)


def test_budget_settings_on_the_quota_form(world, client):
    client.force_login(world.staff)
    url = reverse("console:tenant_quota", kwargs={"tenant_id": world.tenant.pk})
    form = {
        "tokens_per_day": 1000,
        "tokens_per_month": 20000,
        "requests_per_minute": 7,
        "max_upload_mb": 5,
        "max_documents": 50,
        "monthly_budget": "250.00",
        "budget_alert_percent": 90,
        "budget_enforcement": "alert",
    }
    assert client.post(url, form, **HX).status_code == 200
    quota = Quota.objects.get(tenant=world.tenant)
    assert (quota.monthly_budget, quota.budget_alert_percent, quota.budget_enforcement) == (Decimal("250"), 90, "alert")
    bad = client.post(url, {**form, "budget_alert_percent": 150}, **HX)
    assert bad.status_code == 400 and "between 0 and 100" in bad.content.decode()
    assert client.post(url, {**form, "budget_enforcement": "never"}, **HX).status_code == 400
    assert Quota.objects.get(tenant=world.tenant).budget_alert_percent == 90
