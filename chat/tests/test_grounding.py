"""Grounded answers: the pipeline abstains when the knowledge bases do not support an answer (and cites nothing),
and shows only the passages an answer used. Every stage but the engine is real (retrieval on a real index, the
guards, persistence); the engine is the fake pool of ``test_pipeline_fast``, since what is tested here is what the
pipeline does with the engine's words, not the words."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat.models import Conversation, Message
from chat.pipeline import ChatInput, ChatRun, Citations, Done, Token
from chat.pipeline.text import ABSTAIN_TEXT, attribute_sentences, citations_used, is_abstention
from chat.tests.conftest import indexed_document
from chat.tests.test_pipeline_fast import FakePool
from knowledge.services import knowledge_base_create
from tenants.models import UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)

TRAVEL = """# Travel policy

## Daily allowances

The per diem covers meals and local transport. The per diem in London is 75 EUR per day.
The hotel cap per night in London is 220 EUR.

## Private car

Employees who use their own car for a business trip receive 0.32 EUR per kilometre.
"""
SECURITY = """# Security handbook

## Passwords

Passwords for company accounts must be at least 14 characters long and are stored in the password manager.
"""


def _world_kb(world: Any) -> tuple[Any, Any]:
    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Handbook")
    indexed_document(kb=kb, name="travel.md", text=TRAVEL, actor=world.admin)
    indexed_document(kb=kb, name="security.md", text=SECURITY, actor=world.admin)
    conv = Conversation.objects.create(tenant=world.tenant, user=world.member)
    conv.knowledge_bases.add(kb)
    return kb, conv


async def _ask(world: Any, conv: Any, text: str, pool: FakePool) -> list[Any]:
    run = ChatRun(
        ChatInput(tenant=world.tenant, role="member", user=world.member, conversation=conv, text=text), pool=pool
    )
    return [event async for event in run.stream()]


async def test_an_unsupported_question_is_answered_not_in_the_documents_without_the_engine(world):
    _, conv = await database_sync_to_async(_world_kb)(world)
    pool = FakePool(["Bob ", "is ", "the ", "CEO."])
    events = await _ask(world, conv, "Who is the chief executive officer of the company?", pool)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.text == ABSTAIN_TEXT and done.citations == []
    # streamed through the output guard like any answer (it may arrive in more than one piece)
    assert "".join(e.text for e in events if isinstance(e, Token)) == ABSTAIN_TEXT
    assert not any(isinstance(e, Citations) for e in events)
    assert pool.requests == []  # the engine was never asked
    retrieval = done.guardrails["retrieval"]
    assert retrieval["abstain"] is True and retrieval["score"] < 0.2

    def stored() -> tuple[Message, int]:
        return (
            Message.objects.for_tenant(world.tenant).get(pk=done.message_id),
            UsageRecord.objects.for_tenant(world.tenant).count(),
        )

    answer, usage_records = await database_sync_to_async(stored)()
    assert (answer.status, answer.text, answer.citations) == ("complete", ABSTAIN_TEXT, [])
    assert answer.guardrails["retrieval"]["abstain"] is True
    assert usage_records == 0  # no tokens were used, so none are billed


async def test_a_supported_question_reaches_the_engine_and_cites_only_the_passage_used(world):
    _, conv = await database_sync_to_async(_world_kb)(world)
    pool = FakePool(["The per diem ", "in London is 75 EUR ", "per day."])
    events = await _ask(world, conv, "What is the per diem in London?", pool)
    done = events[-1]
    assert isinstance(done, Done) and done.guardrails["retrieval"]["abstain"] is False
    [request] = pool.requests
    prompt = request.messages[-1]["content"]
    assert "Source: travel.md — Travel policy › Daily allowances" in prompt  # the heading goes with the passage
    offered = next(e for e in events if isinstance(e, Citations)).citations
    assert len(offered) >= 2  # the engine saw several passages ...
    assert [c["document_name"] for c in done.citations] == ["travel.md"]  # ... the answer used one
    assert done.citations[0]["heading"] == "Travel policy › Daily allowances"

    def stored() -> Message:
        return Message.objects.for_tenant(world.tenant).get(pk=done.message_id)

    answer = await database_sync_to_async(stored)()
    assert answer.citations == done.citations


async def test_the_models_own_markers_choose_the_citations(world):
    _, conv = await database_sync_to_async(_world_kb)(world)
    events = await _ask(world, conv, "What is the per diem in London?", FakePool(["Seventy-five a day [1]."]))
    offered = next(e for e in events if isinstance(e, Citations)).citations
    done = events[-1]
    assert [c["n"] for c in done.citations] == [1] and done.citations[0] == offered[0]


async def test_the_models_own_abstention_cites_nothing(world):
    _, conv = await database_sync_to_async(_world_kb)(world)
    events = await _ask(world, conv, "What is the hotel cap per night in London?", FakePool([ABSTAIN_TEXT]))
    done = events[-1]
    assert done.guardrails["retrieval"]["abstain"] is False and done.citations == []


async def test_abstention_can_be_switched_off(world, settings):
    settings.CHAT_ABSTAIN_BELOW = 0.0
    _, conv = await database_sync_to_async(_world_kb)(world)
    pool = FakePool(["I do not know."])
    events = await _ask(world, conv, "Who is the chief executive officer of the company?", pool)
    assert len(pool.requests) == 1 and events[-1].guardrails["retrieval"]["abstain"] is False


def test_attribution_picks_the_passage_holding_the_sentence():
    sources = [
        "The per diem in London is 75 EUR per day. The hotel cap is 220 EUR.",
        "Passwords must be at least 14 characters long.",
        "Employees who use their own car receive 0.32 EUR per kilometre.",
    ]
    assert attribute_sentences("Passwords need at least 14 characters.", sources) == {1}
    assert attribute_sentences("In London you get 75 EUR a day. Your car earns 0.32 EUR per kilometre.", sources) == {
        0,
        2,
    }
    assert attribute_sentences("The weather is nice today, I think.", sources) == set()
    # a sentence that shares only a generic word with a passage is not attributed to it
    assert attribute_sentences("Employees are great.", sources) == set()
    # a bare answer shared by two passages goes to the one about what was asked
    two = ["Flights are booked 14 days before departure.", "Passwords are at least 14 characters long."]
    assert attribute_sentences("The answer is 14.", two, question="How long must a password be?") == {1}
    assert attribute_sentences("The answer is 14.", two, question="When must flights be booked?") == {0}
    # an answer taken from a passage about something else than the question is not cited
    assert (
        attribute_sentences("Passwords need at least 14 characters.", sources, question="How much is the per diem?")
        == set()
    )
    # numbers weigh most: the right number picks the passage even in other words
    assert attribute_sentences("It is 1,200 euros.", ["The budget is 1200 EUR.", "It is sunny."]) == {0}


def test_citations_used_prefers_markers_and_drops_everything_on_abstention():
    citations = [{"n": 1}, {"n": 2}, {"n": 3}]
    sources = ["London 75 EUR per diem.", "14 characters passwords.", "0.32 EUR per kilometre car."]
    assert citations_used("See [2] and [9].", citations, sources) == [{"n": 2}]
    assert citations_used("The per diem in London is 75 EUR.", citations, sources) == [{"n": 1}]
    assert citations_used(ABSTAIN_TEXT, citations, sources) == []
    assert citations_used("Nothing relevant here at all.", citations, sources) == []
    assert is_abstention("Sorry, the documents don\u2019t contain that.")
    assert not is_abstention("The per diem is 75 EUR.")


def test_a_marker_on_the_wrong_passage_cites_the_passage_that_says_it():
    """A 1.5B model often writes [2] after a fact from passage 1: the passage that holds the sentence is cited."""
    citations = [{"n": 1}, {"n": 2}, {"n": 3}]
    sources = ["The per diem in London is 75 EUR.", "Passwords have at least 14 characters.", "Cars: 0.32 EUR per km."]
    assert citations_used("The per diem in London is 75 EUR [2].", citations, sources) == [{"n": 1}]
    assert citations_used("The per diem in London is 75 EUR [1].", citations, sources) == [{"n": 1}]
    # two facts, two markers, one of them wrong: the right passages of both
    answer = "London pays 75 EUR a day [1]. A password needs 14 characters [3]."
    assert citations_used(answer, citations, sources) == [{"n": 1}, {"n": 2}]
    # a marked sentence that no passage supports cites nothing
    assert citations_used("Dogs are welcome on Fridays [2].", citations, sources) == []
