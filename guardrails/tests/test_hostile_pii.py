"""PII analysis stays linear in the text whatever it holds, and a department's own patterns cannot stall it."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from guardrails.pii import (
    NER_MAX_TOKEN_CHARS,
    NER_SEGMENT_CHARS,
    Finding,
    ner_segments,
    ner_token_budget,
    resolve_overlaps,
    select_within_budget,
)
from guardrails.policy import BUILTIN_ENTITIES, CustomPattern, ResolvedPolicy, compile_custom_pattern


def unique_names_text(chars: int) -> str:
    """Sentences that never repeat, dense with names and places (what the NER has the most work on)."""
    from tests.hostile.corpus import unique_names_text as make

    return make(chars)


def timed(fn: Any, limit_s: float) -> tuple[Any, float]:
    """Run ``fn`` in a daemon thread; fail (instead of hanging) when it is not done within ``limit_s``."""
    box: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        box["value"] = fn()
        box["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s * 3)
    assert "seconds" in box, f"still running after {limit_s * 3:.1f} s"
    assert box["seconds"] <= limit_s, f"took {box['seconds']:.2f} s (budget {limit_s} s)"
    return box["value"], box["seconds"]


@pytest.mark.parametrize(
    ("text", "budget_s"),
    [
        pytest.param("(" * 8_000, 0.5, id="8k-open-parens"),  # 8.9 s before (spaCy's tokenizer is quadratic)
        pytest.param("([{<" * 2_000, 0.5, id="8k-mixed-brackets"),
        pytest.param("(" * 100_000, 5, id="100k-open-parens"),  # never ended before
        pytest.param("-." * 50_000, 5, id="100k-punctuation"),
        pytest.param("x" * 100_000, 5, id="100k-one-token"),
        pytest.param("a\u200b\u0301" * 33_000, 5, id="100k-zero-width-and-combining"),
        # one spaCy token per character or two: the NER's cost is per token (50,000 tokens took about 10 s)
        pytest.param("a," * 4_000, 0.5, id="8k-letter-comma"),
        pytest.param("Ab " * 2_666, 0.5, id="8k-capitalised-pairs"),
        pytest.param("i g n o r e " * 8_333, 5, id="100k-spaced-letters"),
        pytest.param("I G N O R E " * 8_333, 5, id="100k-spaced-capitals"),
        pytest.param("Ab,Cd;" * 16_666, 5, id="100k-capitalised-punctuated"),
        pytest.param(unique_names_text(100_000), 5, id="100k-unique-names-and-places"),
    ],
)
def test_ner_time_is_bounded_whatever_the_text_holds(analyzer: Any, text: str, budget_s: float) -> None:
    timed(lambda: analyzer.analyze(text, entities=BUILTIN_ENTITIES), budget_s)


def test_names_are_found_at_their_offsets_after_hostile_runs(analyzer: Any) -> None:
    text = "(" * 5_000 + " Please call Mary Johnson tomorrow. " + "x" * 3_000 + " Regards, Peter Miller\n"
    findings = analyzer.analyze(text, entities=["PERSON"])
    people = {text[f.start : f.end] for f in findings if f.entity_type == "PERSON"}
    assert {"Mary Johnson", "Peter Miller"} <= people


def test_an_ordinary_message_is_read_whole_by_the_ner(analyzer: Any) -> None:
    """The token budget leaves ordinary text alone: the last name of an 8,000-character message is still the NER's."""
    prose = "The quarterly report covers travel costs, the new office plan and the budget review. " * 93
    text = prose[:7_900] + " Yesterday Peter Miller flew to Lisbon."
    assert len(text) <= 8_000
    artifacts = analyzer.nlp_engine.process_text(text, "en")
    found = {text[e.start_char : e.end_char] for e in artifacts.entities}
    assert {"Peter Miller", "Lisbon"} <= found


def test_over_budget_the_ner_reads_capitalised_segments_first_and_each_distinct_one_once() -> None:
    counts = {"we met at noon": 600, "we met Anna Berg": 600, "we met at nine": 600, "Lisbon in May": 600}
    chosen, skipped = select_within_budget(counts, budget=1_300)
    assert chosen == ["we met Anna Berg", "Lisbon in May"] and skipped == 2
    assert select_within_budget(counts, budget=2_400) == (list(counts), 0)
    assert ner_token_budget(8_000) >= 0.25 * 8_000  # ordinary prose holds 0.17 to 0.23 tokens per character
    assert ner_token_budget(100_000) < 100_000 * 0.25  # a bound for long texts, whatever they hold


def test_repeated_text_is_read_by_the_ner_once(analyzer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    nlp = analyzer.nlp_engine.nlp["en"]
    seen: list[int] = []
    original = type(nlp).pipe

    def counting_pipe(self: Any, texts: Any, **kwargs: Any) -> Any:
        docs = list(texts)
        seen.append(len(docs))
        return original(self, docs, **kwargs)

    monkeypatch.setattr(type(nlp), "pipe", counting_pipe)
    text = "Dr. John Smith and Mary Ann O'Neil met in Paris.\n" * 2_000  # 100,000 characters, 67 segments
    findings = analyzer.analyze(text, entities=["PERSON", "LOCATION"])
    assert seen and sum(seen) <= 2
    assert sum(1 for f in findings if text[f.start : f.end] == "Paris") == 2_000


def test_segments_cover_the_text_with_its_offsets() -> None:
    text = ("word " * 700 + "\n") * 3 + "(" * 500 + " Anna"
    segments = ner_segments(text)
    assert all(len(segment) <= NER_SEGMENT_CHARS for _, segment in segments)
    assert "".join(segment for _, segment in segments).endswith(" Anna")
    assert next(offset for offset, _ in segments) == 0
    for (offset, segment), (next_offset, _) in itertools.pairwise(segments):
        assert offset + len(segment) == next_offset
    assert sum(len(s) for _, s in segments) == len(text)
    long_run = ner_segments("y" * 1_000)[0][1]
    assert max(len(t) for t in long_run.split()) <= NER_MAX_TOKEN_CHARS


def test_overlap_resolution_is_not_quadratic() -> None:
    findings = [Finding("PERSON", i * 3, i * 3 + 5, 0.5 + (i % 7) / 100) for i in range(30_000)]
    kept, _ = timed(lambda: resolve_overlaps(findings), 2)
    assert all(a.end <= b.start for a, b in itertools.pairwise(kept))


def test_a_pathological_custom_pattern_runs_in_linear_time(analyzer: Any) -> None:
    """``(\\d|\\d\\d)+X`` passed the old slowness check and then held the shared guardrail threads."""
    policy = ResolvedPolicy(
        tenant_id=1,
        version="hostile",
        custom_patterns=(CustomPattern("TICKET", r"(\d|\d\d)+X"), CustomPattern("EMPLOYEE_ID", r"EMP-\d{6}")),
    )
    text = "1" * 20_000 + " EMP-004211 " + "12" * 5_000 + "X"
    findings, _ = timed(lambda: analyzer.analyze(text, entities=["TICKET", "EMPLOYEE_ID"], policy=policy), 1)
    found = {(f.entity_type, text[f.start : f.end][:4]) for f in findings}
    assert found == {("EMPLOYEE_ID", "EMP-"), ("TICKET", "1212")}


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(\w+)\s\1", "back-references"),
        (r"(?<=EMP-)\d+", "look-ahead or look-behind"),
        (r"\d++", "possessive"),
        (r"EMP-(\d", "not a valid regular expression"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compile_custom_pattern(pattern)


def test_known_vault_values_are_found_in_one_pass_whatever_the_vault_holds() -> None:
    """A conversation's vault grows with every masked value; a pattern per value made 5,000 values over 100 KB take
    9 s (each later message of the conversation paid it again)."""
    from guardrails.services import _known_value_findings
    from guardrails.vault import Mapping

    mapping = Mapping()
    for i in range(5_000):
        mapping.placeholder_for("EMAIL_ADDRESS", f"user{i}@example{i % 97}.com")
    mapping.placeholder_for("PERSON", "Anna Berg")
    text = " ".join(f"user{i}@example{i % 97}.com" for i in range(0, 20_000, 3))[:100_000]
    found, _ = timed(lambda: _known_value_findings(text, mapping, []), 2)
    assert len(found) == len(range(0, 5_000, 3))  # every address of the vault in the text, each once
    sample = "Met ANNA BERG, not annaberg nor xAnna Berg; anna berg."
    spans = [sample[f.start : f.end] for f in _known_value_findings(sample, mapping, [])]
    assert spans == ["ANNA BERG", "anna berg"]
