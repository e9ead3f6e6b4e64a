import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction

from core.errors import NotAuthenticated, NotFound, PermissionDenied, TenantSuspended
from tenants.models import AuditEvent
from tenants.selectors import membership_require
from tenants.services import audit_record, tenant_set_status

MATRIX = {
    # min_role → the users that pass
    "viewer": {"owner", "admin", "member", "viewer"},
    "member": {"owner", "admin", "member"},
    "admin": {"owner", "admin"},
    "owner": {"owner"},
}


@pytest.mark.parametrize("min_role", list(MATRIX))
@pytest.mark.parametrize("who", ["anonymous", "other_tenant", "viewer", "member", "admin", "owner"])
def test_membership_require_matrix(world, who, min_role):
    user = world.user(who) or AnonymousUser()
    if who == "anonymous":
        with pytest.raises(NotAuthenticated):
            membership_require(user=user, tenant=world.tenant, min_role=min_role)
    elif who == "other_tenant":
        with pytest.raises(NotFound):  # not "forbidden": the tenant's existence is not revealed
            membership_require(user=user, tenant=world.tenant, min_role=min_role)
    elif who in MATRIX[min_role]:
        assert membership_require(user=user, tenant=world.tenant, min_role=min_role).role == who
    else:
        with pytest.raises(PermissionDenied):
            membership_require(user=user, tenant=world.tenant, min_role=min_role)


def test_suspended_tenant_refuses_even_its_owner(world):
    tenant_set_status(tenant=world.tenant, status="suspended")
    with pytest.raises(TenantSuspended):
        membership_require(user=world.owner, tenant=world.tenant)


def test_audit_events_are_append_only(world):
    event = audit_record(action="test.event", tenant=world.tenant, actor=world.admin, details={"n": 1})
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


def test_audit_details_drop_secret_and_pii_keys(world):
    event = audit_record(action="x", tenant=world.tenant, details={"secret": "s3", "email": "a@b.c", "count": 2})
    assert event.details == {"count": 2}


def test_membership_is_unique_per_tenant_and_user(world):
    from tenants.models import Membership

    with pytest.raises(IntegrityError), transaction.atomic():
        Membership.objects.create(tenant=world.tenant, user=world.member, role="viewer")
