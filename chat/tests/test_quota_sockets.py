"""Quota exhaustion under concurrency, through the real socket, pipeline, PostgreSQL and llama-server."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from chat.models import Conversation, Message
from chat.tests.conftest import ask_together
from tenants.models import QuotaCounter, QuotaReservation, UsageRecord

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

PARALLEL = 50
BUDGET = 1500
MAX_TOKENS = 16


async def test_fifty_parallel_sends_never_overspend_a_small_budget(engine_backend, world):
    def setup() -> list[Conversation]:
        quota = world.tenant.quota
        quota.tokens_per_day = BUDGET
        quota.requests_per_minute = 1000
        quota.save()
        return [Conversation.objects.create(tenant=world.tenant, user=world.member) for _ in range(PARALLEL)]

    conversations = await database_sync_to_async(setup)()
    finals = await ask_together(
        world.member, world.tenant, conversations, text="Say hello to the team.", max_tokens=MAX_TOKENS
    )

    answered = [f for f in finals if f["type"] == "done"]
    refused = [f for f in finals if f["type"] == "error"]
    assert len(answered) + len(refused) == PARALLEL
    assert answered and refused, "the budget should let some through and refuse others"
    assert {f["code"] for f in refused} == {"quota_exceeded"}
    assert all("quota" in f["message"] and f["retry_after"] > 0 for f in refused)

    def accounting() -> tuple[int, int, QuotaCounter, int, int]:
        settled = sum(u.tokens_in + u.tokens_out for u in UsageRecord.objects.for_tenant(world.tenant))
        records = UsageRecord.objects.for_tenant(world.tenant).count()
        day = QuotaCounter.objects.for_tenant(world.tenant).get(period="day")
        held = QuotaReservation.objects.for_tenant(world.tenant).count()
        answers = Message.objects.for_tenant(world.tenant).filter(role="assistant", status="complete").count()
        return settled, records, day, held, answers

    settled, records, day, held, answers = await database_sync_to_async(accounting)()
    one_request_max = max(f["usage"]["total_tokens"] for f in answered) + MAX_TOKENS
    assert settled <= BUDGET + one_request_max
    assert settled <= BUDGET  # in fact never over: each request reserved an upper bound of what it used
    assert day.used == settled and day.reserved == 0 and held == 0  # nothing left held
    assert records == answers == len(answered)  # refused requests settle nothing
