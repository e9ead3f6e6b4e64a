import pytest

from tenants.models import ApiKey, Membership
from tenants.scoping import TenantContextMissing, tenant_context
from tenants.services import api_key_create


@pytest.fixture
def keys(world):
    a, _ = api_key_create(tenant=world.tenant, name="alpha key")
    b, _ = api_key_create(tenant=world.other_tenant, name="beta key")
    return a, b


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda: list(ApiKey.objects.all()), id="list"),
        pytest.param(lambda: ApiKey.objects.count(), id="count"),
        pytest.param(lambda: ApiKey.objects.exists(), id="exists"),
        pytest.param(lambda: ApiKey.objects.filter(name__contains="key").first(), id="first"),
        pytest.param(lambda: ApiKey.objects.get(name="beta key"), id="get"),
        pytest.param(lambda: ApiKey.objects.update(name="x"), id="update"),
        pytest.param(lambda: ApiKey.objects.all().delete(), id="delete"),
        pytest.param(lambda: list(ApiKey.objects.iterator()), id="iterator"),
        pytest.param(lambda: ApiKey.objects.values_list("name", flat=True)[0], id="values"),
    ],
)
def test_unscoped_queries_fail_closed(keys, operation):
    with pytest.raises(TenantContextMissing):
        operation()
    # nothing was changed by the refused write operations
    assert sorted(ApiKey.unscoped.values_list("name", flat=True)) == ["alpha key", "beta key"]


def test_for_tenant_returns_only_that_tenants_rows(world, keys):
    assert [k.name for k in ApiKey.objects.for_tenant(world.tenant)] == ["alpha key"]
    assert [k.name for k in ApiKey.objects.for_tenant(world.other_tenant)] == ["beta key"]


def test_tenant_context_scopes_the_default_manager(world, keys):
    with tenant_context(world.other_tenant):
        assert [k.name for k in ApiKey.objects.all()] == ["beta key"]
        # a row of tenant A is not reachable even by its primary key
        assert ApiKey.objects.filter(pk=keys[0].pk).first() is None
    with pytest.raises(TenantContextMissing):
        ApiKey.objects.count()


def test_for_tenant_none_is_refused(world):
    with pytest.raises(TenantContextMissing):
        Membership.objects.for_tenant(None)


def test_access_through_a_parent_object_is_scoped_by_the_parent(world):
    memberships = list(world.member.memberships.all())
    assert [m.tenant_id for m in memberships] == [world.tenant.pk]


def test_create_is_allowed_and_lands_in_the_given_tenant(world):
    key = ApiKey.objects.create(tenant=world.tenant, name="direct", prefix="p" * 12, hashed_secret="h")
    assert ApiKey.objects.for_tenant(world.tenant).filter(pk=key.pk).exists()
    assert not ApiKey.objects.for_tenant(world.other_tenant).filter(pk=key.pk).exists()
