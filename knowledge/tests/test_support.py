"""The support signals of a search and the support score the chat pipeline abstains on."""

from __future__ import annotations

import pytest
from django.conf import settings

from knowledge.embeddings import LocalEmbedder
from knowledge.selectors import SearchSupport, chunk_search_result
from knowledge.support import support_score
from knowledge.tests.conftest import ingest, upload

pytestmark = pytest.mark.django_db

TRAVEL = b"""# Travel policy

## Daily allowances

The per diem in London is 75 EUR per day and the hotel cap per night is 220 EUR.

## Private car

Employees who use their own car for a business trip receive 0.32 EUR per kilometre.
"""
RULES = b"""# Security handbook

## Devices

Company laptops are encrypted before they are handed out. Private USB storage devices may not be connected to company
laptops; encrypted USB drives can be requested from the IT service desk.

## Office rules

The office opens at 8:00. Visitors sign in at the reception and wear a badge while they are in the building.
"""
OFFICES = b"office_code,city,address,desks\nAMS-1,Amsterdam,Keizersgracht 221,140\nBER-1,Berlin,Torstrasse 88,95\n"


@pytest.fixture
def indexed(kb):
    ingest(upload(kb, "travel.md", TRAVEL))
    ingest(upload(kb, "offices.csv", OFFICES))
    return kb


@pytest.fixture
def with_rules(indexed):
    ingest(upload(indexed, "security.md", RULES))
    return indexed


def _search(world, kb, query, k=4):
    return chunk_search_result(tenant=world.tenant, knowledge_base_ids=[kb.pk], query=query, k=k, role="viewer")


def test_an_answerable_question_has_more_support_than_an_unrelated_one(world, indexed):
    answerable = _search(world, indexed, "How much is paid per kilometre when I use my own car?")
    unrelated = _search(world, indexed, "What is the stock ticker symbol of the company?")
    assert answerable.hits and unrelated.hits  # search always returns passages ...
    a, u = answerable.support, unrelated.support
    assert a.dense > u.dense and a.bm25 > u.bm25 and a.coverage > u.coverage  # ... the signals tell them apart
    assert support_score(a) >= settings.CHAT_ABSTAIN_BELOW > support_score(u)


def test_a_csv_row_lookup_is_supported(world, indexed):
    result = _search(world, indexed, "What is the address of the Berlin office?")
    assert result.hits[0].document_name == "offices.csv"
    assert result.support.coverage == 1.0  # every query term is in the row's chunk
    assert support_score(result.support) >= settings.CHAT_ABSTAIN_BELOW


def test_a_query_term_no_chunk_holds_lowers_coverage(world, indexed):
    known = _search(world, indexed, "per diem London").support
    unknown = _search(world, indexed, "per diem Tokyo").support
    assert known.coverage == 1.0 and unknown.coverage < 0.6 and unknown.terms == known.terms


def test_a_request_for_a_form_of_answer_is_supported_as_its_topic(world, indexed):
    topic = _search(world, indexed, "the per diem in London").support
    request = _search(world, indexed, "Write a long story about the per diem in London").support
    assert request.terms == topic.terms and request.coverage == topic.coverage == 1.0
    assert support_score(request) >= settings.CHAT_ABSTAIN_BELOW


def test_no_passages_means_no_support(world, kb):
    result = _search(world, kb, "anything at all")
    assert result.hits == [] and result.support == SearchSupport()
    assert support_score(result.support) == 0.0


def test_a_paraphrase_is_supported_and_a_near_miss_is_not(world, with_rules):
    # both lack one word of the passage on office rules ("visitors"), so their lexical coverage is the same; in the
    # model's reading "guests" is close to "visitors" and "dogs" to nothing there
    paraphrase = _search(world, with_rules, "Are guests allowed in the office?").support
    near_miss = _search(world, with_rules, "Are dogs allowed in the office?").support
    assert paraphrase.coverage == near_miss.coverage
    assert paraphrase.soft_coverage > near_miss.soft_coverage + 0.1
    assert near_miss.soft_coverage >= near_miss.coverage  # a lacking term's credit is never negative
    assert support_score(paraphrase) >= settings.CHAT_ABSTAIN_BELOW > support_score(near_miss)


def test_a_passage_holding_every_term_is_full_support_without_token_vectors(world, with_rules, monkeypatch):
    def unused(self, texts):
        raise AssertionError("no term is lacking: nothing to embed")

    monkeypatch.setattr(LocalEmbedder, "token_vectors", unused)
    assert _search(world, with_rules, "What is the address of the Berlin office?").support.soft_coverage == 1.0


def test_without_token_vectors_a_lacking_term_counts_nothing(world, with_rules, monkeypatch):
    # a TEI deployment: soft coverage falls back to the lexical coverage of the 3 best passages
    monkeypatch.setattr(LocalEmbedder, "token_vectors", lambda self, texts: None)
    support = _search(world, with_rules, "Are guests allowed in the office?", k=3).support
    assert 0.0 < support.soft_coverage == pytest.approx(support.coverage)
