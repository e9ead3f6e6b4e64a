"""Monthly budgets through both doors, the real pipeline, PostgreSQL and llama-server: parallel requests spend the
budget, the admins are alerted once per level, then every request is refused with a clear message (WebSocket error
frame, /v1 429 ``insufficient_quota``); a department set to "alert only" goes on."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import AsyncClient

from chat.models import Conversation
from chat.tests.conftest import ask_together
from tenants.models import AuditEvent, BudgetAlert, ModelPrice, QuotaReservation, UsageRecord
from tenants.services import api_key_create

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

PARALLEL = 6
MAX_TOKENS = 8


def _setup(world: Any, *, enforcement: str) -> tuple[list[Conversation], str]:
    # 2.00 per 1,000 tokens either way: one short answer (~100 tokens) costs about 0.20, far past the budget
    ModelPrice.objects.create(model=settings.LLAMA_MODEL_NAME, input_per_1k=Decimal("2"), output_per_1k=Decimal("2"))
    quota = world.tenant.quota
    quota.monthly_budget, quota.budget_alert_percent, quota.budget_enforcement = Decimal("0.05"), 50, enforcement
    quota.requests_per_minute = 1000
    quota.save()
    _, key = api_key_create(tenant=world.tenant, name="budget-door")
    conversations = [Conversation.objects.create(tenant=world.tenant, user=world.member) for _ in range(2 * PARALLEL)]
    return conversations, key


async def _ask_sockets(world: Any, conversations: list[Conversation]) -> list[dict[str, Any]]:
    return await ask_together(
        world.member, world.tenant, conversations, text="Say hello to the team.", max_tokens=MAX_TOKENS
    )


async def _ask_v1(key: str, n: int) -> list[Any]:
    client = AsyncClient()
    body = {
        "model": settings.LLAMA_MODEL_NAME,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": MAX_TOKENS,
    }
    return list(
        await asyncio.gather(
            *(
                client.post(
                    "/v1/chat/completions",
                    data=body,
                    content_type="application/json",
                    headers={"Authorization": f"Bearer {key}"},
                )
                for _ in range(n)
            )
        )
    )


def _alerts(world: Any) -> tuple[list[str], list[str]]:
    levels = sorted(BudgetAlert.objects.for_tenant(world.tenant).values_list("level", flat=True))
    actions = sorted(
        AuditEvent.objects.filter(tenant=world.tenant, action__startswith="budget.").values_list("action", flat=True)
    )
    return levels, actions


async def test_budget_spent_refuses_both_doors_after_one_alert_per_level(engine_backend, world):
    conversations, key = await database_sync_to_async(_setup)(world, enforcement="block")

    first = await _ask_sockets(world, conversations[:PARALLEL])  # admitted while nothing is spent yet
    answered = [f for f in first if f["type"] == "done"]
    assert answered, first
    assert all(f["code"] == "budget_exceeded" for f in first if f["type"] == "error"), first
    assert await database_sync_to_async(_alerts)(world) == (
        ["exhausted", "threshold"],
        ["budget.exhausted", "budget.threshold"],
    )

    # spent: every request through either door is refused, with a message a person understands
    later = await _ask_sockets(world, conversations[PARALLEL:])
    assert {f["type"] for f in later} == {"error"}, later
    assert {f["code"] for f in later} == {"budget_exceeded"}
    assert all("spent its monthly budget" in f["message"] and f["retry_after"] > 0 for f in later)
    responses = await _ask_v1(key, PARALLEL)
    for response in responses:
        assert response.status_code == 429, response.content
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        assert "spent its monthly budget" in error["message"]
        assert int(response["Retry-After"]) > 0

    def accounting() -> tuple[int, int, tuple[list[str], list[str]]]:
        return (
            UsageRecord.objects.for_tenant(world.tenant).count(),
            QuotaReservation.objects.for_tenant(world.tenant).count(),
            _alerts(world),
        )

    records, held, alerts = await database_sync_to_async(accounting)()
    assert records == len(answered) and held == 0  # refused requests settle and hold nothing
    assert alerts == (["exhausted", "threshold"], ["budget.exhausted", "budget.threshold"])  # still once each


async def test_budget_alert_only_department_keeps_answering(engine_backend, world):
    conversations, key = await database_sync_to_async(_setup)(world, enforcement="alert")
    first = await _ask_sockets(world, conversations[:2])
    later = await _ask_sockets(world, conversations[2:4])
    assert {f["type"] for f in first + later} == {"done"}, first + later
    [response] = await _ask_v1(key, 1)
    assert response.status_code == 200, response.content
    levels, actions = await database_sync_to_async(_alerts)(world)
    assert levels == ["exhausted", "threshold"] and actions == ["budget.exhausted", "budget.threshold"]
    exhausted = await BudgetAlert.objects.for_tenant(world.tenant).aget(level="exhausted")
    assert exhausted.enforcement == "alert"
