"""The in-process caches of keys, memberships and prices: a hit costs no query, and every change (here, or in
another process, which only moves the shared generation) is seen by the very next lookup."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from core.errors import NotAuthenticated, NotFound, TenantSuspended
from tenants.models import ApiKey, Membership, ModelPrice, Role
from tenants.quota import usage_cost
from tenants.selectors import API_KEY_CACHE, api_key_authenticate, membership_get, membership_require
from tenants.services import api_key_create, api_key_revoke, membership_remove, tenant_set_status

pytestmark = pytest.mark.django_db


def _another_process_changed(local_cache) -> None:  # type: ignore[no-untyped-def]
    """What a change in another web process does here: only the shared generation moves."""
    cache.set(local_cache._key, timezone.now().timestamp(), timeout=None)


def test_a_cached_key_costs_no_query(world, django_assert_num_queries):
    _, secret = api_key_create(tenant=world.tenant, name="ci", created_by=world.admin)
    api_key_authenticate(raw_key=secret)
    with django_assert_num_queries(0):
        key = api_key_authenticate(raw_key=secret)
        assert key.tenant == world.tenant and key.created_by == world.admin


def test_revoking_a_key_refuses_the_next_request_at_once(world, django_capture_on_commit_callbacks):
    key, secret = api_key_create(tenant=world.tenant, name="ci")
    assert api_key_authenticate(raw_key=secret).pk == key.pk  # cached now
    with django_capture_on_commit_callbacks(execute=True):
        api_key_revoke(tenant=world.tenant, key_id=key.pk, actor=world.admin)
    with pytest.raises(NotAuthenticated, match="revoked"):
        api_key_authenticate(raw_key=secret)


def test_a_revocation_in_another_process_is_seen_at_once(world):
    key, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_authenticate(raw_key=secret)
    # another process revokes: the row changes and the shared generation moves; this process's entry stays
    ApiKey.unscoped.filter(pk=key.pk).update(revoked_at=timezone.now())
    _another_process_changed(API_KEY_CACHE)
    with pytest.raises(NotAuthenticated, match="revoked"):
        api_key_authenticate(raw_key=secret)


def test_without_the_generation_moving_a_stale_entry_would_be_served(world):
    """The control of the test above: the generation is what makes the other process's change visible."""
    key, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_authenticate(raw_key=secret)
    ApiKey.unscoped.filter(pk=key.pk).update(revoked_at=timezone.now())
    assert api_key_authenticate(raw_key=secret).pk == key.pk


def test_a_suspended_department_is_refused_at_once(world, django_capture_on_commit_callbacks):
    _, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_authenticate(raw_key=secret)
    with django_capture_on_commit_callbacks(execute=True):
        tenant_set_status(tenant=world.tenant, status="suspended")
    with pytest.raises(TenantSuspended):
        api_key_authenticate(raw_key=secret)


def test_a_key_cached_as_unknown_works_once_created(world):
    with pytest.raises(NotAuthenticated):
        api_key_authenticate(raw_key="ep_000000000000_nothing-here")
    _, secret = api_key_create(tenant=world.tenant, name="ci")
    assert api_key_authenticate(raw_key=secret).tenant == world.tenant


def test_a_removed_member_is_refused_at_once(world, django_capture_on_commit_callbacks):
    assert membership_get(user=world.member, tenant=world.tenant) is not None
    with django_capture_on_commit_callbacks(execute=True):
        membership_remove(tenant=world.tenant, user_id=world.member.pk)
    assert membership_get(user=world.member, tenant=world.tenant) is None
    with pytest.raises(NotFound):
        membership_require(user=world.member, tenant=world.tenant)


def test_membership_is_per_tenant(world):
    assert membership_get(user=world.member, tenant=world.other_tenant) is None
    assert membership_get(user=world.member, tenant=world.tenant).role == Role.MEMBER
    Membership.objects.for_tenant(world.other_tenant).create(
        tenant=world.other_tenant, user=world.member, role=Role.VIEWER
    )
    assert membership_get(user=world.member, tenant=world.other_tenant).role == Role.VIEWER


def test_a_price_change_applies_to_the_next_settlement():
    assert usage_cost(model="m", adapter="", tokens_in=1000, tokens_out=0) == 0
    price = ModelPrice.objects.create(model="m", input_per_1k=Decimal("2"), output_per_1k=Decimal("0"))
    assert usage_cost(model="m", adapter="", tokens_in=1000, tokens_out=0) == Decimal("2")
    price.input_per_1k = Decimal("3")
    price.save()
    assert usage_cost(model="m", adapter="", tokens_in=1000, tokens_out=0) == Decimal("3")


class _CacheCalls:
    """Counts the shared cache's reads (one ``get`` or one ``get_many`` is one round trip)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gets: list[str] = []
        self.many = 0
        inside_many = [False]  # the local-memory backend's get_many calls get per key: one round trip still
        real_get, real_many = cache.get, cache.get_many

        def get(key, *args, **kwargs):  # type: ignore[no-untyped-def]
            if not inside_many[0]:
                self.gets.append(key)
            return real_get(key, *args, **kwargs)

        def get_many(keys, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.many += 1
            inside_many[0] = True
            try:
                return real_many(keys, *args, **kwargs)
            finally:
                inside_many[0] = False

        monkeypatch.setattr(cache, "get", get)
        monkeypatch.setattr(cache, "get_many", get_many)

    def generation_reads(self) -> int:
        return self.many + sum(k.startswith("localcache:gen:") for k in self.gets)


def test_one_request_reads_every_cache_generation_in_one_round_trip(world, monkeypatch):
    from core.localcache import generations_per_request

    _, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_authenticate(raw_key=secret)
    membership_get(user=world.member, tenant=world.tenant)  # both cached, both generations exist
    calls = _CacheCalls(monkeypatch)
    with generations_per_request():
        for _ in range(3):
            api_key_authenticate(raw_key=secret)
            membership_get(user=world.member, tenant=world.tenant)
        with generations_per_request():  # a stage's own block inside the request's: the same snapshot
            api_key_authenticate(raw_key=secret)
    assert calls.generation_reads() == 1 and calls.many == 1
    api_key_authenticate(raw_key=secret)  # outside a request: one read per lookup, as before
    assert calls.generation_reads() == 2


def test_a_change_before_the_request_applies_to_it_one_during_it_from_the_next(world):
    from core.localcache import generations_per_request

    key, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_authenticate(raw_key=secret)
    ApiKey.unscoped.filter(pk=key.pk).update(revoked_at=timezone.now())
    _another_process_changed(API_KEY_CACHE)
    with generations_per_request(), pytest.raises(NotAuthenticated, match="revoked"):
        api_key_authenticate(raw_key=secret)

    other, other_secret = api_key_create(tenant=world.tenant, name="ci-2")
    with generations_per_request():
        assert api_key_authenticate(raw_key=other_secret).pk == other.pk
        ApiKey.unscoped.filter(pk=other.pk).update(revoked_at=timezone.now())
        _another_process_changed(API_KEY_CACHE)
        assert api_key_authenticate(raw_key=other_secret).pk == other.pk  # the request began before the change
    with generations_per_request(), pytest.raises(NotAuthenticated, match="revoked"):
        api_key_authenticate(raw_key=other_secret)


def test_with_the_shared_cache_down_a_request_serves_nothing_from_memory(world, monkeypatch, django_assert_num_queries):
    from core.localcache import generations_per_request

    _, secret = api_key_create(tenant=world.tenant, name="ci")
    api_key_authenticate(raw_key=secret)

    def down(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("redis is down")

    monkeypatch.setattr(cache, "get_many", down)
    monkeypatch.setattr(cache, "get", down)
    with generations_per_request(), django_assert_num_queries(1):
        api_key_authenticate(raw_key=secret)  # read from the database again (fail closed)


def test_every_http_request_and_chat_turn_takes_one_snapshot(world, client, monkeypatch):
    """The request middleware opens the block for every HTTP request (the chat socket opens one per turn)."""
    from core import localcache

    seen: list[object] = []
    real = localcache._read_generations

    def spy():  # type: ignore[no-untyped-def]
        seen.append(localcache._request_generations.get())
        return real()

    monkeypatch.setattr(localcache, "_read_generations", spy)
    _, secret = api_key_create(tenant=world.tenant, name="ci")
    for _ in range(2):
        response = client.get("/api/v1/guardrail-policy/", HTTP_AUTHORIZATION=f"Bearer {secret}")
        assert response.status_code == 200, response.content
    assert len(seen) == 2  # one snapshot per request, whatever the number of cached lookups in it
