"""Names in chats, mails, HR notes and invoices; document numbers; IBANs in print format.

Hand-written texts in the style of enterprise input (none taken from the evaluation sets), with Nordic, German,
Polish, Spanish and English names. The leak check is the one the evaluation uses: after masking, no word of a
gold value may be left in clear.
"""

from __future__ import annotations

import pytest

from guardrails import names
from guardrails.evaluation import leaked_parts
from guardrails.streaming import StreamRedactor, span_redactor

MASKED = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"]


def _found(analyzer, text, entities=None):
    return [(f.start, f.end, f.entity_type) for f in analyzer.analyze(text, entities=entities or MASKED)]


def _gold(text, values):
    spans = []
    for value in values:
        start = text.find(value)
        assert start != -1, value
        while start != -1:
            spans.append((start, start + len(value), "X"))
            start = text.find(value, start + len(value))
    return spans


LEAK_CASES = [
    pytest.param(
        "[09:14] Freja: can someone look at the failed payment run?\n"
        "[09:15] Lukas Berg: on it, give me ten minutes\n"
        "[09:31] Freja: thanks Lukas!",
        ["Freja", "Lukas Berg", "Lukas"],
        id="chat-handles",
    ),
    pytest.param(
        "Hi Agnieszka,\n\nthe contract for the Gdansk warehouse is attached; Nowak signs on Friday.\n\n"
        "Best regards,\nSøren Kjærgaard\nHead of Procurement",
        ["Agnieszka", "Nowak", "Søren Kjærgaard"],
        id="mail-greeting-signature",
    ),
    pytest.param(
        "Attendees: Freja Nilsson, Lukas Berg and Jürgen\nCC: María García\n\nMinutes: budget approved.",
        ["Freja Nilsson", "Lukas Berg", "Jürgen", "María García"],
        id="people-list",
    ),
    pytest.param(
        "HR note: Małgorzata Wiśniewska asked for parental leave from May. Wiśniewska's manager, Ingrid Solberg, "
        "agreed. Contact: malgorzata.w@example.pl, +48 601 234 567.",
        ["Wiśniewska", "Ingrid Solberg", "malgorzata.w@example.pl", "+48 601 234 567"],
        id="hr-note",
    ),
    pytest.param(
        "Hej Sven,\nkan du ringa Björn Lindqvist? Nummer 070-123 45 67.\nMvh\nAstrid",
        ["Sven", "Björn Lindqvist", "070-123 45 67", "Astrid"],
        id="swedish-mail",
    ),
    pytest.param(
        "Hallo Jürgen,\nbitte die Rechnung an Frau Schneider schicken.\nViele Grüße\nKatharina",
        ["Jürgen", "Schneider", "Katharina"],
        id="german-mail",
    ),
    pytest.param(
        "Hola Alejandro, el pedido ya salió. Un saludo,\nLucía Fernández",
        ["Alejandro", "Lucía Fernández"],
        id="spanish-mail",
    ),
    pytest.param(
        "Ticket escalated by Oskar Lindgren. Oskar says the customer was charged twice.",
        ["Oskar Lindgren", "Oskar"],
        id="name-repeated-alone",
    ),
]


@pytest.mark.parametrize(("text", "values"), LEAK_CASES)
def test_no_part_of_a_name_or_number_is_left_in_clear(analyzer, text, values):
    assert leaked_parts(text, _gold(text, values), _found(analyzer, text)) == []


def test_a_surname_found_alone_takes_the_given_name_before_it(analyzer):
    text = "The refund was approved by Freja Nilsson yesterday."
    assert (text.index("Freja"), text.index(" yesterday"), "PERSON") in _found(analyzer, text)
    assert names.extend(text, text.index("Nilsson"), text.index(" yesterday")) == (
        text.index("Freja"),
        text.index(" yesterday"),
    )


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Invoice INV-2026-12345 is overdue.", id="invoice"),
        pytest.param("Sales order SO-2026-004512 shipped; RMA-55821-2026 opened.", id="order-rma"),
        pytest.param("Lot 2024-118-0042 failed inspection; batch no. 123-45-6789 too.", id="lot"),
        pytest.param("Please quote PO#4410-2231 on the delivery note.", id="po"),
    ],
)
def test_document_numbers_are_not_phones_or_ssns(analyzer, text):
    assert [t for *_, t in _found(analyzer, text) if t in {"PHONE_NUMBER", "US_SSN"}] == []


def test_phones_and_ssns_beside_documents_are_still_found(analyzer):
    text = "Invoice INV-2026-12345: call Lukas on +49 151 2345 6789 or 030 1234567. SSN 219-09-9999."
    found = {text[s:e]: t for s, e, t in _found(analyzer, text)}
    assert found.get("+49 151 2345 6789") == "PHONE_NUMBER"
    assert found.get("030 1234567") == "PHONE_NUMBER"
    assert found.get("219-09-9999") == "US_SSN"
    assert "2026-12345" not in found


@pytest.mark.parametrize(
    ("text", "iban"),
    [
        pytest.param("IBAN SE45 5000 0000 0583 9825 7466 Bank transfer", "SE45 5000 0000 0583 9825 7466", id="se-word"),
        pytest.param("ES91 2100 0418 4502 0005 1332 Madrid office", "ES91 2100 0418 4502 0005 1332", id="es-word"),
        pytest.param("pay to es91 2100 0418 4502 0005 1332 please", "es91 2100 0418 4502 0005 1332", id="lower-word"),
        pytest.param("gb82west12345698765432", "gb82west12345698765432", id="lower-compact"),
        pytest.param("DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00", id="de-print"),
    ],
)
def test_ibans_in_any_case_and_print_format(analyzer, text, iban):
    assert (text.index(iban), text.index(iban) + len(iban), "IBAN_CODE") in _found(analyzer, text, ["IBAN_CODE"])


def test_tenant_patterns_still_apply_beside_document_rules(analyzer):
    from guardrails.policy import CustomPattern, ResolvedPolicy

    policy = ResolvedPolicy(
        tenant_id=7, version="t", custom_patterns=(CustomPattern("EMPLOYEE_ID", r"\bEMP-\d{6}\b", 0.9),)
    )
    text = "EMP-204518 raised INV-2026-12345."
    findings = analyzer.analyze(text, entities=["EMPLOYEE_ID", "PHONE_NUMBER"], policy=policy)
    found = [(text[f.start : f.end], f.entity_type) for f in findings]
    assert found == [("EMP-204518", "EMPLOYEE_ID")]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Hi team,\nthe release is on Friday.\nThanks,\nSupport", id="group-greeting"),
        pytest.param("Subject: Budget\nStatus: approved\nOwner: finance", id="field-labels"),
        pytest.param("Sales, Marketing and Finance met on Monday.", id="department-list"),
    ],
)
def test_no_names_in_texts_without_people(analyzer, text):
    assert [text[s:e] for s, e, t in _found(analyzer, text, ["PERSON"])] == []


def test_streaming_with_the_analyzer_leaks_nothing_and_matches_the_final_text(analyzer):
    answer = "Sure. Contact Lukas Berg at lukas.berg@example.de or +49 151 2345 6789 for the refund."
    pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]  # three characters a token
    redactor = StreamRedactor(span_redactor(lambda t: _found(analyzer, t)))
    sent = [redactor.feed(p) for p in pieces] + [redactor.finish()]
    assert "".join(sent) == redactor.text
    assert redactor.text == (
        "Sure. Contact [REDACTED:PERSON] at [REDACTED:EMAIL_ADDRESS] or [REDACTED:PHONE_NUMBER] for the refund."
    )


HOSTILE = [
    ("Anna, " * 700)[:4096],
    ("Attendees: " + "Anna Berg, " * 400)[:4096],
    ("Hi Anna Berg Nilsson " * 200)[:4096],
    ("[09:14] Anna: x\n" * 260)[:4096],
    ("Anna Pedro Avenida " * 220)[:4096],
    ("es91 2100 " * 410)[:4096],
]


def test_name_signals_and_stream_redaction_stay_linear_on_hostile_input(analyzer):
    import time

    started = time.monotonic()
    for text in HOSTILE:
        analyzer.analyze(text, entities=["PERSON", "IBAN_CODE", "PHONE_NUMBER"])
        redactor = StreamRedactor(lambda context, segment: segment)
        for i in range(0, len(text), 3):
            redactor.feed(text[i : i + 3])
        assert redactor.text + redactor.finish() == text
    # A guard against super-linear blow-up, not a speed target: the first list rule took 10 s on the first text.
    assert time.monotonic() - started < 20


# --- issue 17, second round: lower-case text, surname endings, what people do, address blocks -----------------
def _people(analyzer, text):
    return [text[s:e] for s, e, t in _found(analyzer, text, ["PERSON"])]


@pytest.mark.parametrize(
    ("text", "values"),
    [
        pytest.param("hi lukas, can you ask agnieszka about the invoice? thx", ["lukas", "agnieszka"], id="chat"),
        pytest.param("my name is wojtek zieliński, call me back", ["wojtek", "zieliński"], id="introduced"),
        pytest.param("please follow up with ingrid solvang next week", ["ingrid", "solvang"], id="follow-up"),
        pytest.param("[09:14] freja: ok\n[09:15] sören: will do", ["freja", "sören"], id="handles"),
    ],
)
def test_names_in_text_typed_in_lower_case(analyzer, text, values):
    assert leaked_parts(text, _gold(text, values), _found(analyzer, text)) == []


def test_lower_case_text_without_names_keeps_its_everyday_words(analyzer):
    text = "will you mark the date? grant the access tomorrow and ping the team"
    assert _people(analyzer, text) == []
    assert names.true_case("The Report is ready. Lukas will send it.") is None  # ordinary text is read as it is


def test_the_lower_case_copy_keeps_offsets_addresses_and_tenant_patterns(analyzer):
    from guardrails.policy import CustomPattern, ResolvedPolicy

    text = "hi lukas, mail lukas.berg@example.com about project falcon"
    cased = names.true_case(text)
    assert cased is not None and len(cased) == len(text) and "Lukas," in cased and "lukas.berg@example.com" in cased
    policy = ResolvedPolicy(
        tenant_id=7, version="lower", custom_patterns=(CustomPattern("PROJECT", r"project falcon"),)
    )
    found = {
        text[f.start : f.end]: f.entity_type
        for f in analyzer.analyze(text, entities=[*MASKED, "PROJECT"], policy=policy)
    }
    assert found == {"lukas": "PERSON", "lukas.berg@example.com": "EMAIL_ADDRESS", "project falcon": "PROJECT"}


@pytest.mark.parametrize(
    ("text", "values"),
    [
        pytest.param(
            "The contract was signed by Dobrosław Tomaszewski and Elínborg Guðmundsdóttir on Monday.",
            ["Dobrosław Tomaszewski", "Elínborg Guðmundsdóttir"],
            id="polish-icelandic",
        ),
        pytest.param("Approval is pending with Ásgeirsdóttir since May.", ["Ásgeirsdóttir"], id="alone"),
        pytest.param("Please invite Zlatko Vitorović to the review.", ["Zlatko Vitorović"], id="serbian"),
    ],
)
def test_surnames_known_by_their_endings(analyzer, text, values):
    assert leaked_parts(text, _gold(text, values), _found(analyzer, text)) == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("The Czech Republic and the Russian market grew; Google Public Sector said so.", id="places"),
        pytest.param("Our Swedish office moved to the Czech Border region.", id="adjectives"),
    ],
)
def test_place_and_company_words_with_surname_endings_are_not_names(analyzer, text):
    assert _people(analyzer, text) == []


@pytest.mark.parametrize(
    ("text", "values"),
    [
        pytest.param("Thordis, can you send me the slides?", ["Thordis"], id="vocative"),
        pytest.param("Radomir shouted at the printer again.", ["Radomir"], id="speech-verb"),
        pytest.param("Our 3 founders: Kowalczyk, Brandt and Ibarra.", ["Kowalczyk", "Brandt", "Ibarra"], id="founders"),
        pytest.param("Why is Rebecca so late today?", ["Rebecca"], id="known-name-the-ner-calls-a-place"),
    ],
)
def test_names_announced_by_what_people_do(analyzer, text, values):
    assert leaked_parts(text, _gold(text, values), _found(analyzer, text)) == []


def test_towns_and_streets_of_an_address_block_are_not_names(analyzer):
    text = "Ingrid Solvang\n12 Storgata\nSuite 4\nTromsø\nNorway 9008\n\nor the corner of Kirkegata 3 and Anders Lane"
    assert _people(analyzer, text) == ["Ingrid Solvang"]


def test_greetings_and_titles_are_not_part_of_the_name(analyzer):
    text = "Hej Søren, tack för igår! /Ingrid\nSehr geehrter Herr Müller,\nMit freundlichen Grüßen\nKatharina Schröder"
    assert _people(analyzer, text) == ["Søren", "Ingrid", "Müller", "Katharina Schröder"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("My driver's licence number is 5130634.", id="licence"),
        pytest.param("Our zip code is 90010-170, postcode 3610-114.", id="postcodes"),
    ],
)
def test_licence_numbers_and_postcodes_are_not_phones(analyzer, text):
    assert [t for *_, t in _found(analyzer, text) if t == "PHONE_NUMBER"] == []
