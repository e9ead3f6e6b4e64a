"""StreamRedactor: what leaves the server while an answer streams. Hand-written cases."""

from __future__ import annotations

import re

import pytest

from guardrails.streaming import StreamRedactor, span_redactor

_EMAIL_OR_PHONE = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+|\+?\d[\d ]{6,}\d")


def _find(text):
    return [
        (m.start(), m.end(), "EMAIL_ADDRESS" if "@" in m.group() else "PHONE_NUMBER")
        for m in _EMAIL_OR_PHONE.finditer(text)
    ]


def _stream(tokens, redact=None, **kwargs):
    redactor = StreamRedactor(redact or span_redactor(_find), **kwargs)
    sent = [redactor.feed(t) for t in tokens]
    sent.append(redactor.finish())
    return redactor, sent


TOKENS = [
    "Please",
    " call",
    " +46",
    " 70",
    " 123",
    " 45",
    " 67",
    " or",
    " write",
    " to",
    " anna",
    ".berg",
    "@ex",
    "ample",
    ".com",
    " today",
    ".",
]


def test_entities_are_redacted_before_any_part_is_sent():
    _, sent = _stream(TOKENS)
    streamed = "".join(sent)
    assert streamed == "Please call [REDACTED:PHONE_NUMBER] or write to [REDACTED:EMAIL_ADDRESS] today."
    for i in range(1, len(sent)):  # no prefix of what was sent holds a part of the number or the address
        prefix = "".join(sent[:i])
        assert "46" not in prefix and "anna" not in prefix and "example" not in prefix


def test_streamed_text_is_the_final_text():
    redactor, sent = _stream(TOKENS)
    assert redactor.text == "".join(sent)
    assert redactor.held == ""


def test_plain_words_are_released_one_token_later():
    redactor = StreamRedactor(lambda context, segment: segment)
    assert redactor.feed("the") == ""  # may still grow
    assert redactor.feed(" answer") == "the "
    assert redactor.feed(" is") == "answer "
    assert redactor.finish() == "is"


def test_a_name_is_held_until_it_ends():
    redactor = StreamRedactor(
        span_redactor(lambda t: [(m.start(), m.end(), "PERSON") for m in re.finditer(r"Freja Nilsson", t)])
    )
    out = [redactor.feed(t) for t in ["Ask", " Freja", " Nilsson", " about", " it", "."]] + [redactor.finish()]
    assert "".join(out) == "Ask [REDACTED:PERSON] about it."
    assert not any("Freja" in o for o in out)


def test_an_unclosed_link_is_held_until_it_closes():
    redactor = StreamRedactor(lambda context, segment: segment.replace("javascript:", "blocked:"))
    out = [redactor.feed(t) for t in ["see", " [here", "](java", "script:", "alert(1))", " ok"]]
    out.append(redactor.finish())
    assert "".join(out) == "see [here](blocked:alert(1)) ok"
    assert not any("java" in o and "blocked" not in o for o in out)


def test_the_hold_is_bounded():
    redactor = StreamRedactor(lambda context, segment: segment, max_hold_chars=16)
    for _ in range(50):
        redactor.feed(" 12")
        assert len(redactor.held) <= 16
    assert redactor.held_max <= 16


def test_context_reaches_the_redaction_function():
    seen = []
    redactor = StreamRedactor(lambda context, segment: seen.append((context, segment)) or segment, context_chars=10)
    for t in ["one", " two", " three", " four", " five"]:
        redactor.feed(t)
    redactor.finish()
    assert seen[-1] == ("hree four ", "five")  # the last 10 characters released before the segment
    assert "".join(segment for _, segment in seen) == "one two three four five"


def test_max_hold_must_be_positive():
    with pytest.raises(ValueError, match="max_hold_chars"):
        StreamRedactor(lambda c, s: s, max_hold_chars=0)
