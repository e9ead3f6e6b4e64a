"""Person-name signals beside the NER model (guardrails.names), alone and through the analyzer.

Hand-written cases; none is taken from the evaluation sets.
"""

from __future__ import annotations

import pytest

from guardrails import names


def _people(analyzer, text):
    return [text[f.start : f.end] for f in analyzer.analyze(text, entities=["PERSON"])]


def test_given_names_come_from_the_bundled_list_without_common_words():
    known = names.given_names()
    assert {"margaret", "john", "olga"} <= known
    assert not {"may", "will", "june", "the", "grace", "bill"} & known


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Tomas Q Vandermeer\n12 Harbour View Road\nLeeds", ["Tomas Q Vandermeer"], id="above-address"),
        pytest.param("> Ingrid Solvang\n> Nordic Freight\n> 4 Kirkegata\n", ["Ingrid Solvang"], id="quoted-block"),
        pytest.param("Margaret Oyelaran\n\nProcurement lead, 9 years", ["Margaret Oyelaran"], id="document-head"),
        pytest.param("Quarterly Results\n\nRevenue grew by 4%.", [], id="heading-is-not-a-name"),
        pytest.param("Thanks For Coming\n12 March", [], id="line-of-common-words"),
        pytest.param("Quarterly Results\n2024 revenue grew by 4%.", [], id="heading-above-a-figure"),
        pytest.param("Anna Lindqvist\n17 Rue Cler 4, Apt 3\nParis", ["Anna Lindqvist"], id="house-number-last"),
    ],
)
def test_name_lines(text, expected):
    assert [text[s:e] for s, e in names.name_line_spans(text)] == expected


def test_given_name_runs_need_a_capitalised_word_after_a_known_given_name():
    text = "Olga K Petrenko met Janet Brightwater; Olga left. The Will Of The People."
    assert [text[s:e] for s, e in names.given_name_spans(text)] == ["Olga K Petrenko", "Janet Brightwater"]


def test_repeated_occurrences_of_a_found_name_and_of_its_words():
    text = "I am Anneliese Vortmann, but friends say Anneliese; anneliese in lowercase and Annelieses are left."
    start = text.index("Anneliese Vortmann")
    spans = set(names.repeated_spans(text, [(start, start + len("Anneliese Vortmann"))]))
    second, lower = text.index("Anneliese;"), text.index("anneliese in")
    outside = {(s, e) for s, e in spans if not start <= s < start + len("Anneliese Vortmann")}
    # in any case (issue 17: a name found anywhere masks all its parts everywhere), never inside "Annelieses"
    assert outside == {(second, second + len("Anneliese")), (lower, lower + len("anneliese"))}


def test_a_found_name_that_is_an_everyday_word_is_repeated_only_as_written():
    text = "Mark Vortmann wrote: mark the date, and Mark will sign."
    spans = {text[s:e] for s, e in names.repeated_spans(text, [(0, len("Mark Vortmann"))])}
    assert spans == {"Mark Vortmann", "Mark", "Vortmann"}
    assert all(text[s:e] != "mark" for s, e in names.repeated_spans(text, [(0, len("Mark Vortmann"))]))


def test_repetition_ignores_run_on_spans():
    text = "Mr. " + "A" * 5000
    assert names.repeated_spans(text, [(4, len(text))]) == []  # longer than any name: not searched for
    assert names.not_a_name(text, 4, len(text))


@pytest.mark.parametrize(
    ("text", "span", "rejected"),
    [
        pytest.param("Meet me at Philip Bypass tonight.", "Philip Bypass", True, id="street-type-inside"),
        pytest.param("He lives at 41 Joaquin Suarez, 2nd floor.", "Joaquin Suarez", True, id="house-number-before"),
        pytest.param("The office is on Joaquin Suarez 2906.", "Joaquin Suarez", True, id="house-number-after"),
        pytest.param("Call Joaquin Suarez 555 123 4567 today.", "Joaquin Suarez", False, id="phone-after-is-fine"),
        pytest.param("Hall Orchestra plays tonight.", "Hall Orchestra", True, id="organisation-word"),
        pytest.param("Quinn, Hale and Dunmore LLP wrote back.", "Dunmore", True, id="company-suffix-after"),
        pytest.param("Agent 007 Bond", "007 Bond", True, id="digits"),
        pytest.param("Regards, Mrs.", "Mrs.", True, id="honorific-alone"),
        pytest.param("Dear Sir, the Suite is ready.", "Dear Sir", True, id="only-label-words"),
        pytest.param("Regards, Priya Raman", "Priya Raman", False, id="a-name"),
    ],
)
def test_not_a_name(text, span, rejected):
    start = text.index(span)
    assert names.not_a_name(text, start, start + len(span)) is rejected


def test_trailing_unit_words_are_trimmed():
    text = "Mrs. Diana Okafor Suite 12, 4 Elm Road"
    start = text.index("Diana")
    end = text.index(" 12")
    assert text[slice(*names.trim(text, start, end))] == "Diana Okafor"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("What is your last name? Vandermeer", ["Vandermeer"], id="last-name"),
        pytest.param("I need to add my daughter Ilse to the plan.", ["Ilse"], id="relation"),
        pytest.param("Please follow up with Teodor Brannigan next week.", ["Teodor Brannigan"], id="follow-up"),
        pytest.param("Ottoline lives at the old mill.", ["Ottoline"], id="predicate"),
        pytest.param("Directed By:    Ansgar Lindqvist", ["Ansgar Lindqvist"], id="credits"),
        pytest.param("Please speak to ms. Quennell about it.", ["Quennell"], id="lowercase-honorific"),
        pytest.param("Name:  Berit Aasland\nPhone: 0421 555 010", ["Berit Aasland"], id="field-stops-at-line-end"),
    ],
)
def test_context_cues_through_the_analyzer(analyzer, text, expected):
    assert _people(analyzer, text) == expected


def test_every_occurrence_of_a_name_is_masked(analyzer):
    text = "My name is Anneliese Vortmann but everyone calls me Anneliese. Anneliese's badge is 4711."
    assert _people(analyzer, text) == ["Anneliese Vortmann", "Anneliese", "Anneliese"]


def test_address_block_names_without_prose(analyzer):
    text = "Margaret Oyelaran\nOyelaran Logistics Ltd\n17 Canal Street\nManchester M1 3HE"
    assert _people(analyzer, text) == ["Margaret Oyelaran"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("I flew from Austin Texas to Charlotte last week.", id="ner-says-place"),
        pytest.param("We met at Victoria Station in London.", id="place-word"),
        pytest.param("Thanks For Coming\nto the Quarterly Review", id="not-a-name-line"),
    ],
)
def test_places_named_like_people_are_not_masked(analyzer, text):
    assert _people(analyzer, text) == []
