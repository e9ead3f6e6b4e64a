"""The offline Presidio analyzer: recognizers, overlaps, no network, patterns-only mode."""

from __future__ import annotations

import socket

import pytest

from guardrails.pii import OFFLINE_TLD_EXTRACT, get_analyzer
from guardrails.policy import BUILTIN_ENTITIES, PATTERN_ENTITIES

TEXT = (
    "Hi, I am Laura Becker. Mail laura.becker@example.co.uk or call +49 30 901820 / (212) 555-0199. "
    "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, SSN 536-90-4399, server 10.20.30.40, "
    "see https://intranet.example.com on 2024-03-01. Order 20240301-7781."
)


def _found(findings):
    return [(f.entity_type, TEXT[f.start : f.end]) for f in findings]


def test_recognizers_and_overlap_resolution(analyzer):
    found = _found(analyzer.analyze(TEXT, entities=list(BUILTIN_ENTITIES)))
    assert found == [
        ("PERSON", "Laura Becker"),
        ("EMAIL_ADDRESS", "laura.becker@example.co.uk"),  # its domain is not also a URL
        ("PHONE_NUMBER", "+49 30 901820"),
        ("PHONE_NUMBER", "(212) 555-0199"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),  # its digits are not also a date or a phone number
        ("IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("US_SSN", "536-90-4399"),
        ("IP_ADDRESS", "10.20.30.40"),
        ("URL", "https://intranet.example.com"),
        ("DATE_TIME", "2024-03-01"),
    ]


def test_no_network_is_used(analyzer, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert OFFLINE_TLD_EXTRACT("mail.example.co.uk").suffix == "co.uk"
    found = _found(analyzer.analyze(TEXT, entities=["EMAIL_ADDRESS", "URL", "PERSON"]))
    assert ("EMAIL_ADDRESS", "laura.becker@example.co.uk") in found
    import tldextract

    assert tldextract.extract("www.example.org").domain == "example"


def test_patterns_only_mode_skips_spacy(analyzer, monkeypatch):
    def no_spacy(*args, **kwargs):
        raise AssertionError("spaCy was run")

    monkeypatch.setattr(analyzer.nlp_engine, "process_text", no_spacy)
    found = _found(analyzer.analyze(TEXT, entities=list(PATTERN_ENTITIES)))
    assert ("EMAIL_ADDRESS", "laura.becker@example.co.uk") in found
    assert ("CREDIT_CARD", "4111 1111 1111 1111") in found
    assert all(t != "PERSON" for t, _ in found)


def test_spacy_pipeline_is_trimmed_to_ner(analyzer):
    nlp = analyzer.nlp_engine.nlp["en"]
    assert "ner" in nlp.pipe_names
    assert not {"parser", "tagger", "lemmatizer", "attribute_ruler"} & set(nlp.pipe_names)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("The meeting is at 704 1436 Redbud Drive.", [], id="house-number-not-phone"),
        pytest.param("Born 1998-06-28 14:48:14 in Riga.", [], id="datetime-not-phone"),
        pytest.param("Reach me at 60-56-85-91 tomorrow.", [("PHONE_NUMBER", "60-56-85-91")], id="dk-phone"),
        pytest.param("The Davis, Reynolds and Hall Orchestra plays.", [], id="organisation-not-person"),
        pytest.param("Dear Mr. Okonkwo, thank you.", [("PERSON", "Okonkwo")], id="honorific"),
        pytest.param(
            "my iban is de89370400440532013000, thanks", [("IBAN_CODE", "de89370400440532013000")], id="lowercase-iban"
        ),
    ],
)
def test_known_confusions(analyzer, text, expected):
    found = [
        (f.entity_type, text[f.start : f.end])
        for f in analyzer.analyze(text, entities=["PHONE_NUMBER", "PERSON", "IBAN_CODE"])
    ]
    assert found == expected


def test_the_analyzer_is_a_singleton(analyzer):
    assert get_analyzer() is analyzer


def test_placeholders_are_never_taken_for_entities(analyzer):
    text = "Dear <PERSON_1>, call <PHONE_NUMBER_12> about <CREDIT_CARD_2>. Regards, <PERSON_3> and Maria Lopez"
    found = [(f.entity_type, text[f.start : f.end]) for f in analyzer.analyze(text, entities=list(BUILTIN_ENTITIES))]
    assert found == [("PERSON", "Maria Lopez")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Visit https://portal.example.com/a/b?x=1#top, then www.example.org.",
            [("URL", "https://portal.example.com/a/b?x=1#top"), ("URL", "www.example.org")],
            id="urls-without-trailing-punctuation",
        ),
        pytest.param("Open http://localhost:8000/chat now", [("URL", "http://localhost:8000/chat")], id="any-host"),
        pytest.param(
            "Mail first.last+tag@sub.example.co.uk now",
            [("EMAIL_ADDRESS", "first.last+tag@sub.example.co.uk")],
            id="email",
        ),
        pytest.param("x@y.zz and e.g. this", [], id="no-public-suffix"),
    ],
)
def test_links_and_addresses(analyzer, text, expected):
    found = [(f.entity_type, text[f.start : f.end]) for f in analyzer.analyze(text, entities=["URL", "EMAIL_ADDRESS"])]
    assert found == expected


# Inputs that made a pattern backtrack: Presidio's URL and email patterns on runs of dots ("a.a.a."), unbounded
# look-behinds on runs of blanks, name repetition on a run-on span. Each took one to four seconds on 2 KB (longer
# inputs grow faster than linearly); all of them together now take well under a second.
ADVERSARIAL = [
    prefix + (unit * 4000)[:4000] + "!"
    for prefix, unit in [
        ("", "."),
        ("www.", "."),
        ("x@", "a."),
        ("", "a."),
        ("", "1."),
        ("", " "),
        ("My name is", "\t"),
        ("Mr. ", "A"),
        ("Mr. ", "a"),
        ("Mr. ", "-"),
        ("x@", "/"),
        ("www.", "x@"),
        ("", "a_"),
        ("Peter Smith ", "Ab, "),
        ("", "Ab Cd\n"),
        ("http://", "%"),
    ]
]


def test_adversarial_text_cannot_stall_the_analyzer(analyzer):
    import time

    from guardrails import injection

    started = time.monotonic()
    for text in ADVERSARIAL:
        analyzer.analyze(text, entities=list(BUILTIN_ENTITIES))
        injection.verdicts([text], strictness="high")
    # A guard against super-linear blow-up, not a speed target: the slowest of these took 4 s on 2 KB before.
    assert time.monotonic() - started < 20
