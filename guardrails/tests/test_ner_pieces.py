"""The NER reads only the sentences that may hold a name or a place (with their neighbours), and finds the same."""

from __future__ import annotations

from typing import Any

import pytest

from guardrails.pii import may_hold_names, ner_pieces

PROSE = (
    "The quarterly planning meeting covered the roadmap for the coming months. The team agreed that the most "
    "important goal is to make the product faster. Several ideas were discussed, including a simpler settings page. "
    "Summarise the notes above in two sentences. I think we should ship it, and I'm sure it helps. "
)


@pytest.fixture(scope="module")
def starters(analyzer: Any) -> Any:
    return analyzer.nlp_engine._starters


def counting_pipe(analyzer: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    nlp = analyzer.nlp_engine.nlp["en"]
    read: list[str] = []
    original = type(nlp).pipe

    def pipe(self: Any, docs: Any, **kwargs: Any) -> Any:
        docs = list(docs)
        read.extend(doc.text for doc in docs)
        return original(self, docs, **kwargs)

    monkeypatch.setattr(type(nlp), "pipe", pipe)
    return read


def test_everyday_sentence_openers_are_not_names_but_given_names_surnames_and_places_are(starters: Any) -> None:
    for word in ("Summarise", "Several", "Finally", "The", "Discussed", "Using", "Please"):
        assert word in starters, word
    for word in ("Mark", "Maria", "Will", "London", "Smith", "Kowalczyk"):
        assert word not in starters, word
    assert not may_hold_names("Summarise the notes above.", starters)
    assert not may_hold_names("I think I'm right, and I'll say so.", starters)
    assert may_hold_names("Mark called about the invoice.", starters)  # a given name that is also a verb
    assert may_hold_names("Lisbon is warm in May.", starters)
    assert may_hold_names("the report went to anna Berg.", starters)
    assert may_hold_names("请联系王伟。", starters)  # a script without case
    assert may_hold_names("Send it to ACME GmbH today.", starters)


def test_pieces_are_the_sentences_with_candidates_and_their_neighbours_at_their_offsets(starters: Any) -> None:
    text = PROSE + " Yesterday Peter Miller flew to Lisbon. " + PROSE
    pieces = ner_pieces(text, starters)
    assert len(pieces) == 1
    offset, piece = pieces[0]
    assert text[offset : offset + len(piece)] == piece
    assert piece == "I think we should ship it, and I'm sure it helps.  Yesterday Peter Miller flew to Lisbon. The " + (
        "quarterly planning meeting covered the roadmap for the coming months."
    )
    assert ner_pieces(PROSE * 3, starters) == []


def test_prose_without_names_costs_the_ner_nothing(analyzer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    read = counting_pipe(analyzer, monkeypatch)
    assert analyzer.analyze(PROSE * 4, entities=["PERSON", "LOCATION"]) == []
    assert read == []


def test_the_ner_still_finds_names_in_one_sentence_of_long_prose(
    analyzer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = counting_pipe(analyzer, monkeypatch)
    text = PROSE * 3 + " Yesterday Peter Miller flew to Lisbon. " + PROSE * 3
    found = {(text[f.start : f.end], f.entity_type) for f in analyzer.analyze(text, entities=["PERSON", "LOCATION"])}
    assert found == {("Peter Miller", "PERSON"), ("Lisbon", "LOCATION")}
    assert sum(len(t) for t in read) < len(text) / 3


@pytest.mark.parametrize(
    ("text", "name"),
    [
        # read without the question before it, the NER loses "Park"
        ("Is there a better crafted pop song on this list? Park and Mann were precision engineers.", "Park"),
        ("Is there a better crafted pop song on this list? Dale and White were precision engineers.", "Dale"),
        ("we spoke yesterday. maria schmidt will send the contract.", "maria schmidt"),
    ],
)
def test_names_read_with_their_neighbouring_sentence(analyzer: Any, text: str, name: str) -> None:
    found = {text[f.start : f.end] for f in analyzer.analyze(text, entities=["PERSON"])}
    assert any(name in span for span in found), found
