from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.errors import NotAuthenticated, NotFound, TenantSuspended
from tenants.apikeys import hash_key
from tenants.models import ApiKey, AuditEvent
from tenants.selectors import api_key_authenticate
from tenants.services import api_key_create, api_key_revoke, tenant_set_status


def test_key_is_stored_hashed_and_shown_once(world):
    key, secret = api_key_create(tenant=world.tenant, name="ci", created_by=world.admin)
    stored = ApiKey.unscoped.get(pk=key.pk)
    assert secret.startswith(f"ep_{stored.prefix}_")
    assert stored.hashed_secret == hash_key(secret)
    assert secret not in stored.hashed_secret
    # the secret is in no column of the table
    with connection.cursor() as cur:
        cur.execute("SELECT row_to_json(t)::text FROM tenants_apikey t")
        assert all(secret.split("_", 2)[2] not in row[0] for row in cur.fetchall())
    event = AuditEvent.objects.get(action="api_key.create")
    assert secret not in str(event.details)
    assert event.details["prefix"] == stored.prefix


def test_valid_key_resolves_its_tenant(world):
    _, secret = api_key_create(tenant=world.tenant, name="ci")
    assert api_key_authenticate(raw_key=secret).tenant == world.tenant


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), id="wrong-secret"),
        pytest.param(lambda s: "ep_000000000000_" + s.split("_", 2)[2], id="unknown-prefix"),
        pytest.param(lambda s: "not-a-key", id="malformed"),
        pytest.param(lambda s: "", id="empty"),
    ],
)
def test_bad_keys_are_refused(world, mangle):
    _, secret = api_key_create(tenant=world.tenant, name="ci")
    with pytest.raises(NotAuthenticated):
        api_key_authenticate(raw_key=mangle(secret))


def test_revoked_key_is_refused(world):
    key, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_revoke(tenant=world.tenant, key_id=key.pk, actor=world.admin)
    with pytest.raises(NotAuthenticated, match="revoked"):
        api_key_authenticate(raw_key=secret)
    assert AuditEvent.objects.filter(action="api_key.revoke", tenant=world.tenant).count() == 1


def test_other_tenant_cannot_revoke_a_key(world):
    key, secret = api_key_create(tenant=world.tenant, name="ci")
    with pytest.raises(NotFound):
        api_key_revoke(tenant=world.other_tenant, key_id=key.pk)
    assert api_key_authenticate(raw_key=secret).pk == key.pk


def test_expired_key_is_refused(world):
    _, secret = api_key_create(tenant=world.tenant, name="ci", expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(NotAuthenticated, match="expired"):
        api_key_authenticate(raw_key=secret)


def test_key_of_suspended_tenant_is_refused(world):
    _, secret = api_key_create(tenant=world.tenant, name="ci")
    tenant_set_status(tenant=world.tenant, status="suspended")
    with pytest.raises(TenantSuspended):
        api_key_authenticate(raw_key=secret)
