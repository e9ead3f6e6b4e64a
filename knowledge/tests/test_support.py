"""The support signals of a search and the support score the chat pipeline abstains on."""

from __future__ import annotations

import pytest

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
OFFICES = b"office_code,city,address,desks\nAMS-1,Amsterdam,Keizersgracht 221,140\nBER-1,Berlin,Torstrasse 88,95\n"


@pytest.fixture
def indexed(kb):
    ingest(upload(kb, "travel.md", TRAVEL))
    ingest(upload(kb, "offices.csv", OFFICES))
    return kb


def _search(world, kb, query):
    return chunk_search_result(tenant=world.tenant, knowledge_base_ids=[kb.pk], query=query, k=4, role="viewer")


def test_an_answerable_question_has_more_support_than_an_unrelated_one(world, indexed):
    answerable = _search(world, indexed, "How much is paid per kilometre when I use my own car?")
    unrelated = _search(world, indexed, "What is the stock ticker symbol of the company?")
    assert answerable.hits and unrelated.hits  # search always returns passages ...
    a, u = answerable.support, unrelated.support
    assert a.dense > u.dense and a.bm25 > u.bm25 and a.coverage > u.coverage  # ... the signals tell them apart
    assert support_score(a) >= 0.2 > support_score(u)


def test_a_csv_row_lookup_is_supported(world, indexed):
    result = _search(world, indexed, "What is the address of the Berlin office?")
    assert result.hits[0].document_name == "offices.csv"
    assert result.support.coverage == 1.0  # every query term is in the row's chunk
    assert support_score(result.support) >= 0.2


def test_a_query_term_no_chunk_holds_lowers_coverage(world, indexed):
    known = _search(world, indexed, "per diem London").support
    unknown = _search(world, indexed, "per diem Tokyo").support
    assert known.coverage == 1.0 and unknown.coverage < 0.6 and unknown.terms == known.terms


def test_no_passages_means_no_support(world, kb):
    result = _search(world, kb, "anything at all")
    assert result.hits == [] and result.support == SearchSupport()
    assert support_score(result.support) == 0.0
