"""The settlement journal on Redis (the production topology's backend; the file backend is driven end to end by
tests/test_v1_settlement.py): a promise is kept exactly once by the replay, and the entry is then gone."""

from __future__ import annotations

from typing import Any

import pytest

from tenants.models import QuotaReservation, UsageRecord
from tenants.quota import quota_reserve
from tenants.settlements import REDIS_KEY, PendingSettlement, RedisJournal, journal, settlement_replay

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
def redis_journal(settings: Any) -> Any:
    settings.REDIS_URL = REDIS_URL
    j = journal()
    assert isinstance(j, RedisJournal)
    j.redis.delete(REDIS_KEY)
    yield j
    j.redis.delete(REDIS_KEY)


def test_a_promise_on_redis_is_kept_once(db: Any, world: Any, redis_journal: RedisJournal) -> None:
    reservation = quota_reserve(tenant=world.tenant, max_tokens=100, request_id="r-1")
    entry = PendingSettlement.of(
        reservation=reservation,
        request_id="r-1",
        tokens_in=11,
        tokens_out=7,
        source=UsageRecord.Source.API,
        user_id=world.member.pk,
        api_key_id=None,
        model="m",
        adapter="",
        backend="b",
        outcome="complete",
    )
    redis_journal.put(entry)
    assert [e.key for e in redis_journal.entries()] == [entry.key]
    assert settlement_replay(older_than_s=0) == 1
    [record] = UsageRecord.objects.for_tenant(world.tenant)
    assert (record.tokens_in, record.tokens_out, record.user_id) == (11, 7, world.member.pk)
    assert not QuotaReservation.objects.for_tenant(world.tenant).exists()
    assert list(redis_journal.entries()) == []
    redis_journal.put(entry)  # replayed again (two sweeps racing): nothing changes
    assert settlement_replay(older_than_s=0) == 0
    assert UsageRecord.objects.for_tenant(world.tenant).count() == 1
