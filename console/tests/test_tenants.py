"""Departments in the console: create, quotas, members (add, one-time password, roles, remove), API keys (shown
once, revoke, last use), the audit trail of every change and its filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tenants.models import ApiKey, AuditEvent, Membership, Quota, Tenant
from tenants.selectors import api_key_authenticate
from tenants.services import api_key_touch

HX = {"HTTP_HX_REQUEST": "true"}


def url(name: str, **kw: object) -> str:
    return reverse(f"console:{name}", kwargs=kw)


def test_staff_creates_a_department_with_default_quotas(cw, client):
    client.force_login(cw.world.staff)
    response = client.post(url("tenant_create"), {"name": "Legal Affairs"}, **HX)
    tenant = Tenant.objects.get(slug="legal-affairs")
    assert response.status_code == 204
    assert response["HX-Redirect"] == url("tenant_detail", tenant_id=tenant.pk)
    assert Quota.objects.filter(tenant=tenant).exists()
    assert AuditEvent.objects.filter(action="tenant.create", tenant=tenant, actor=cw.world.staff).exists()
    duplicate = client.post(url("tenant_create"), {"name": "Legal Affairs"}, **HX)
    assert duplicate.status_code == 409 and "already exists" in duplicate.content.decode()


def test_quota_form_saves_and_rejects_bad_input(cw, client):
    client.force_login(cw.world.staff)
    tenant = cw.world.tenant
    good = {
        "tokens_per_day": 1000,
        "tokens_per_month": 20000,
        "requests_per_minute": 7,
        "max_upload_mb": 5,
        "max_documents": 50,
        "monthly_budget": "12.50",
    }
    assert client.post(url("tenant_quota", tenant_id=tenant.pk), good, **HX).status_code == 200
    quota = Quota.objects.get(tenant=tenant)
    assert (quota.tokens_per_day, quota.requests_per_minute, str(quota.monthly_budget)) == (1000, 7, "12.50")
    event = AuditEvent.objects.get(action="quota.update")
    assert set(event.details) == {
        "tokens_per_day",
        "tokens_per_month",
        "requests_per_minute",
        "max_upload_mb",
        "max_documents",
        "monthly_budget",
    }
    bad = client.post(url("tenant_quota", tenant_id=tenant.pk), {**good, "tokens_per_day": -5}, **HX)
    assert bad.status_code == 400 and "Tokens per day" in bad.content.decode()
    assert Quota.objects.get(tenant=tenant).tokens_per_day == 1000


def test_members_add_by_email_role_change_and_remove(cw, client):
    admin, tenant = cw.world.admin, cw.world.tenant
    client.force_login(admin)
    client.post(url("member_add", tenant_id=tenant.pk), {"identifier": "LONER@example.com", "role": "viewer"}, **HX)
    membership = Membership.objects.for_tenant(tenant).get(user=cw.loner)
    assert membership.role == "viewer"
    client.post(url("member_role", tenant_id=tenant.pk, user_id=cw.loner.pk), {"role": "member"}, **HX)
    membership.refresh_from_db()
    assert membership.role == "member"
    client.post(url("member_remove", tenant_id=tenant.pk, user_id=cw.loner.pk), **HX)
    assert not Membership.objects.for_tenant(tenant).filter(user=cw.loner).exists()
    actions = AuditEvent.objects.filter(tenant=tenant, actor=admin, action__startswith="membership.")
    assert list(actions.order_by("id").values_list("action", flat=True)) == [
        "membership.add",
        "membership.role",
        "membership.remove",
    ]
    unknown = client.post(url("member_add", tenant_id=tenant.pk), {"identifier": "nobody", "role": "member"}, **HX)
    assert unknown.status_code == 400 and "Create the user instead" in unknown.content.decode()


def test_admins_cannot_grant_or_touch_the_owner_role_but_owners_and_staff_can(cw, client):
    tenant = cw.world.tenant
    client.force_login(cw.world.admin)
    refused = client.post(url("member_role", tenant_id=tenant.pk, user_id=cw.world.member.pk), {"role": "owner"}, **HX)
    assert refused.status_code == 403
    refused = client.post(url("member_remove", tenant_id=tenant.pk, user_id=cw.world.owner.pk), **HX)
    assert refused.status_code == 403
    assert Membership.objects.for_tenant(tenant).get(user=cw.world.owner).role == "owner"
    # the last owner stays an owner, even for platform staff
    client.force_login(cw.world.staff)
    last = client.post(url("member_role", tenant_id=tenant.pk, user_id=cw.world.owner.pk), {"role": "admin"}, **HX)
    assert last.status_code == 409 and "at least one owner" in last.content.decode()
    client.force_login(cw.world.owner)
    ok = client.post(url("member_role", tenant_id=tenant.pk, user_id=cw.world.admin.pk), {"role": "owner"}, **HX)
    assert ok.status_code == 200
    assert Membership.objects.for_tenant(tenant).get(user=cw.world.admin).role == "owner"


def test_new_user_gets_a_one_time_password_shown_once(cw, client):
    tenant = cw.world.tenant
    client.force_login(cw.world.admin)
    response = client.post(
        url("member_create", tenant_id=tenant.pk),
        {"username": "newhire", "email": "n@example.com", "role": "member"},
        **HX,
    )
    body = response.content.decode()
    assert 'data-testid="one-time-password"' in body
    password = body.split('data-testid="one-time-password"')[1].split('<p class="mono">')[1].split("</p>")[0].strip()
    user = User.objects.get(username="newhire")
    assert user.check_password(password) and len(password) >= 16
    assert Membership.objects.for_tenant(tenant).get(user=user).role == "member"
    login = Client().post("/accounts/login/", {"username": "newhire", "password": password})
    assert login.status_code == 302  # signed in (axes needs the request, so through the login page)
    # never again: not on the page, not in the audit log
    assert password not in client.get(url("tenant_detail", tenant_id=tenant.pk)).content.decode()
    assert all(password not in str(e.details) for e in AuditEvent.objects.all())
    assert AuditEvent.objects.filter(action="user.create", details__user_id=user.pk).exists()
    taken = client.post(url("member_create", tenant_id=tenant.pk), {"username": "NewHire", "role": "member"}, **HX)
    assert taken.status_code == 409


def test_api_key_secret_shown_once_works_and_revocation_is_immediate(cw, client):
    tenant = cw.world.tenant
    client.force_login(cw.world.admin)
    response = client.post(
        url("key_create", tenant_id=tenant.pk),
        {"name": "crm", "role": "member", "scopes": ["chat"], "expires_in_days": 30},
        **HX,
    )
    body = response.content.decode()
    secret = body.split('data-testid="new-key-secret"')[1].split('<p class="mono">')[1].split("</p>")[0].strip()
    key = api_key_authenticate(raw_key=secret)
    assert (key.name, key.scopes, key.tenant_id) == ("crm", ["chat"], tenant.pk)
    assert timedelta(days=29) < key.expires_at - timezone.now() <= timedelta(days=30)
    assert secret not in client.get(url("tenant_detail", tenant_id=tenant.pk)).content.decode()
    assert ApiKey.objects.for_tenant(tenant).get(pk=key.pk).hashed_secret != secret
    # last use shows on the page
    api_key_touch(key=key)
    page = client.get(url("tenant_detail", tenant_id=tenant.pk)).content.decode()
    assert (
        timezone.localtime(ApiKey.objects.for_tenant(tenant).get(pk=key.pk).last_used_at).strftime("%Y-%m-%d %H:%M")
        in page
    )
    # an admin cannot mint a key above their own role
    owner_key = client.post(url("key_create", tenant_id=tenant.pk), {"name": "x", "role": "owner"}, **HX)
    assert owner_key.status_code == 403
    client.post(url("key_revoke", tenant_id=tenant.pk, key_id=key.pk), **HX)
    from core.errors import NotAuthenticated

    with pytest.raises(NotAuthenticated):
        api_key_authenticate(raw_key=secret)
    assert list(
        AuditEvent.objects.filter(action__startswith="api_key.", details__prefix=key.prefix)
        .values_list("action", flat=True)
        .order_by("id")
    ) == ["api_key.create", "api_key.revoke"]


def test_a_department_admin_sees_only_their_department(cw, client):
    client.force_login(cw.world.admin)
    response = client.get(url("tenant_list"))
    assert response.status_code == 302 and response["Location"] == url("tenant_detail", tenant_id=cw.world.tenant.pk)
    page = client.get(url("overview")).content.decode()
    assert "Alpha" in page and "Beta" not in page
    assert client.get(url("tenant_detail", tenant_id=cw.world.other_tenant.pk)).status_code == 404
    # the staff list shows every department
    client.force_login(cw.world.staff)
    page = client.get(url("tenant_list")).content.decode()
    assert "Alpha" in page and "Beta" in page


def test_audit_log_filters(cw, client):
    world = cw.world
    client.force_login(world.staff)
    client.post(url("tenant_status", tenant_id=world.other_tenant.pk), {"status": "suspended"})
    client.force_login(world.admin)
    client.post(url("key_create", tenant_id=world.tenant.pk), {"name": "k1", "role": "viewer"})
    AuditEvent.objects.create(action="tenant.suspended", tenant=world.tenant, actor_label="old-timer")

    def actions(c: Client, **params: str) -> list[str]:
        page = c.get(url("audit"), params).content.decode()
        body = page.split('data-testid="audit-events"')[1]
        return [a for a in ("api_key.create", "tenant.suspended", "membership.add") if a in body]

    # the department admin: only their department (not Beta's suspension by staff)
    assert actions(client, actor="alpha-admin") == ["api_key.create"]
    assert "platform-staff" not in client.get(url("audit")).content.decode()
    assert client.get(url("audit"), {"tenant": world.other_tenant.pk}).status_code == 404
    staff = Client()
    staff.force_login(world.staff)
    assert actions(staff, tenant=str(world.other_tenant.pk)) == ["tenant.suspended"]
    assert actions(staff, action="api_key") == ["api_key.create"]
    assert actions(staff, actor="old-timer") == ["tenant.suspended"]
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert actions(staff, since=tomorrow) == []
    assert actions(staff, until=timezone.localdate().isoformat(), action="api_key") == ["api_key.create"]
    bad = staff.get(url("audit"), {"since": "last tuesday"})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.content.decode()
