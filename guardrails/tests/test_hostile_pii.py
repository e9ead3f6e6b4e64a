"""PII analysis stays linear in the text whatever it holds, and a department's own patterns cannot stall it."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from guardrails.pii import NER_MAX_TOKEN_CHARS, NER_SEGMENT_CHARS, Finding, ner_segments, resolve_overlaps
from guardrails.policy import BUILTIN_ENTITIES, CustomPattern, ResolvedPolicy, compile_custom_pattern


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
    ],
)
def test_ner_time_is_bounded_whatever_the_text_holds(analyzer: Any, text: str, budget_s: float) -> None:
    timed(lambda: analyzer.analyze(text, entities=BUILTIN_ENTITIES), budget_s)


def test_names_are_found_at_their_offsets_after_hostile_runs(analyzer: Any) -> None:
    text = "(" * 5_000 + " Please call Mary Johnson tomorrow. " + "x" * 3_000 + " Regards, Peter Miller\n"
    findings = analyzer.analyze(text, entities=["PERSON"])
    people = {text[f.start : f.end] for f in findings if f.entity_type == "PERSON"}
    assert {"Mary Johnson", "Peter Miller"} <= people


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
