"""An API key never outlives, nor exceeds, the access of the person who issued it."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from core.errors import NotAuthenticated
from tenants.models import ApiKey, AuditEvent, Membership, Role
from tenants.selectors import api_key_authenticate
from tenants.services import api_key_create, membership_assign, membership_revoke

pytestmark = pytest.mark.django_db


def _client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _admin_key(world: Any) -> tuple[ApiKey, str]:
    return api_key_create(
        tenant=world.tenant, name="ops", role=Role.ADMIN, scopes=list(ApiKey.Scope.values), created_by=world.admin
    )


def test_removing_the_issuer_revokes_the_key(world: Any) -> None:
    key, secret = _admin_key(world)
    client = _client(secret)
    assert client.get("/api/v1/members/").status_code == 200
    membership_revoke(tenant=world.tenant, user_id=world.admin.pk, actor_role=Role.OWNER, actor=world.owner)
    assert client.get("/api/v1/members/").status_code == 401
    created = client.post("/api/v1/api-keys/", {"name": "backdoor", "role": "admin"}, format="json")
    assert created.status_code == 401
    assert ApiKey.unscoped.filter(tenant=world.tenant, name="backdoor").count() == 0
    key.refresh_from_db()
    assert key.revoked_at is not None
    event = AuditEvent.objects.get(action="api_key.revoke", target_id=str(key.pk))
    assert event.details["reason"] == "issuer_removed" and event.actor_id == world.owner.pk


def test_demoting_the_issuer_caps_the_key(world: Any) -> None:
    key, secret = _admin_key(world)
    membership_assign(tenant=world.tenant, user=world.admin, role=Role.VIEWER, actor_role=Role.OWNER, actor=world.owner)
    key.refresh_from_db()
    assert key.role == Role.VIEWER and key.revoked_at is None
    client = _client(secret)
    assert client.get("/api/v1/members/").status_code == 403  # admins only: the key is a viewer's now
    event = AuditEvent.objects.get(action="api_key.role_capped", target_id=str(key.pk))
    assert event.details == {"prefix": key.prefix, "from": "admin", "to": "viewer", "user_id": world.admin.pk}
    # promoting the person again does not raise the key back: a new key is issued for that
    membership_assign(tenant=world.tenant, user=world.admin, role=Role.ADMIN, actor_role=Role.OWNER, actor=world.owner)
    assert ApiKey.unscoped.get(pk=key.pk).role == Role.VIEWER


def test_authentication_checks_the_issuers_current_membership(world: Any) -> None:
    """Access changed behind the services' back (a database edit, an older release): checked at every use."""
    key, secret = _admin_key(world)
    Membership.objects.for_tenant(world.tenant).filter(user=world.admin).update(role=Role.MEMBER)
    assert api_key_authenticate(raw_key=secret).role == Role.MEMBER
    assert _client(secret).get("/api/v1/members/").status_code == 403
    Membership.objects.for_tenant(world.tenant).filter(user=world.admin).delete()
    with pytest.raises(NotAuthenticated, match="issued it left the department"):
        api_key_authenticate(raw_key=secret)
    assert ApiKey.unscoped.get(pk=key.pk).revoked_at is not None
    event = AuditEvent.objects.get(action="api_key.revoke", target_id=str(key.pk))
    assert event.details["reason"] == "issuer_not_a_member"


def test_other_peoples_keys_are_untouched(world: Any) -> None:
    mine, _ = _admin_key(world)
    theirs, secret = api_key_create(tenant=world.tenant, name="owner's", role=Role.ADMIN, created_by=world.owner)
    membership_revoke(tenant=world.tenant, user_id=world.admin.pk, actor_role=Role.OWNER, actor=world.owner)
    assert ApiKey.unscoped.get(pk=theirs.pk).revoked_at is None
    assert ApiKey.unscoped.get(pk=mine.pk).revoked_at is not None
    assert api_key_authenticate(raw_key=secret).role == Role.ADMIN
