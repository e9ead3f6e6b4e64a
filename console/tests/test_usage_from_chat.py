"""End to end with a real llama-server: answers go through the chat pipeline; the console's usage aggregates equal
the token counts on the recorded messages, and the pool page's TTFT/TPOT percentiles are those of the messages."""

from __future__ import annotations

import asyncio
import statistics

import pytest
from django.conf import settings
from django.urls import reverse

from chat.models import Conversation, Message
from chat.pipeline import ChatInput, chat_stream
from chat.selectors import backend_latency_stats
from console.selectors import usage_breakdown, usage_filters_parse, usage_queryset, usage_totals
from inference_pool.models import Backend
from inference_pool.services import backend_register
from tenants.models import Role

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]


def percentile(values: list[float], p: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    values = sorted(values)
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def turn(inp: ChatInput) -> None:
    async for _ in chat_stream(inp=inp):
        pass


def test_usage_and_latency_come_from_the_recorded_answers(world, llama_server, client):
    spec = llama_server.spec
    backend = backend_register(
        name="shared-engine",
        kind="llamacpp",
        base_url=spec.base_url,
        model=settings.LLAMA_MODEL_NAME,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=8,
        context_length=spec.context // spec.slots,
    )
    Backend.objects.filter(pk=backend.pk).update(health="up")
    users = [world.member, world.admin, world.member]
    for i, user in enumerate(users):
        conversation = Conversation.objects.create(tenant=world.tenant, user=user)
        asyncio.run(
            turn(
                ChatInput(
                    tenant=world.tenant,
                    role=Role.MEMBER,
                    user=user,
                    conversation=conversation,
                    text=f"Name a colour. ({i})",
                    max_tokens=8,
                    temperature=0,
                )
            )
        )
    answers = list(Message.objects.for_tenant(world.tenant).filter(role="assistant"))
    assert len(answers) == 3 and all(a.tokens_out > 0 and a.ttft_ms is not None for a in answers)

    qs = usage_queryset(tenant=world.tenant, filters=usage_filters_parse(params={}))
    totals = usage_totals(qs=qs)
    assert (totals.requests, totals.tokens_in, totals.tokens_out) == (
        len(answers),
        sum(a.tokens_in for a in answers),
        sum(a.tokens_out for a in answers),
    )
    by_user = {r.key: (r.requests, r.tokens_in + r.tokens_out) for r in usage_breakdown(qs=qs, by="user")}
    for user in (world.member, world.admin):
        mine = [a for a in answers if a.conversation.user_id == user.pk]
        assert by_user[user.pk] == (len(mine), sum(a.tokens_in + a.tokens_out for a in mine))

    stats = backend_latency_stats()["shared-engine"]
    ttfts = [a.ttft_ms for a in answers]
    tpots = [a.tpot_ms for a in answers if a.tpot_ms is not None]
    assert stats.requests == 3
    assert stats.ttft_p50_ms == pytest.approx(statistics.median(ttfts))
    assert stats.ttft_p95_ms == pytest.approx(percentile(ttfts, 0.95))
    if tpots:
        assert stats.tpot_p95_ms == pytest.approx(percentile(tpots, 0.95))

    client.force_login(world.staff)
    page = client.get(reverse("console:pool")).content.decode()
    assert f"{stats.ttft_p50_ms:.0f} / {stats.ttft_p95_ms:.0f} ms" in page
    assert "3 answers" in page
