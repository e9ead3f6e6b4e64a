"""StreamRedactor: what leaves the server while an answer streams. Hand-written cases."""

from __future__ import annotations

import re

import pytest

from core.errors import GuardrailUnavailable
from guardrails.services import guardrail_policy_update, mask, output_stream_open, output_stream_verdict
from guardrails.streaming import OutputStream, StreamRedactor, pattern_trigger, span_redactor
from tenants.models import AuditEvent

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


# --- OutputStream: the output guard of one answer ---------------------------------------------------------------
_PEOPLE = re.compile(r"Freja Nilsson|Lukas Berg")


def _find_all(text, ner):
    spans = _find(text)
    if ner:
        spans += [(m.start(), m.end(), "PERSON") for m in _PEOPLE.finditer(text)]
    return spans


class Guard:
    """An OutputStream with a hand-written analyzer that records its calls, driven token by token."""

    def __init__(self, *, supplied=(), hosts=(), **kwargs):
        self.calls = []
        self.stream = OutputStream(
            analyze=lambda text, ner: self.calls.append((text, ner)) or _find_all(text, ner),
            supplied=lambda value: value in supplied,
            allowed_hosts=hosts,
            patterns=pattern_trigger(["EMAIL_ADDRESS", "PHONE_NUMBER"]),
            ner=True,
            **kwargs,
        )
        self.sent = []

    def feed(self, *tokens):
        for token in tokens:
            out = self.stream.feed(token)
            self.sent.append(self.stream.resolve() if out is None else out)
        return self

    def finish(self):
        out = self.stream.finish()
        self.sent.append(self.stream.resolve() if out is None else out)
        return "".join(self.sent)


def _prefixes(sent):
    return ["".join(sent[:i]) for i in range(1, len(sent) + 1)]


def test_output_stream_redacts_pii_before_any_part_leaves_and_sends_the_final_text():
    guard = Guard().feed(*TOKENS, " Ask", " Freja", " Nilsson", " or", " Freja", " herself", ".")
    final = guard.finish()
    assert final == (
        "Please call [REDACTED:PHONE_NUMBER] or write to [REDACTED:EMAIL_ADDRESS] today. Ask [REDACTED:PERSON] or "
        "[REDACTED:PERSON] herself."  # the second mention: a part of a name already redacted
    )
    assert final == guard.stream.text  # what was sent is the final (and stored) text
    for prefix in _prefixes(guard.sent):
        assert "46" not in prefix and "anna" not in prefix and "Freja" not in prefix and "Nilsson" not in prefix
    assert dict(guard.stream.redacted) == {"PHONE_NUMBER": 1, "EMAIL_ADDRESS": 1, "PERSON": 2}


def test_a_redacted_name_is_redacted_in_any_case_later_but_everyday_words_stay():
    """Issue 17: a name found anywhere masks all its parts everywhere, "freja" and "NILSSON" too."""
    final = (
        Guard()
        .feed("Ask", " Freja", " Nilsson", " today", ".", " freja", " said", " NILSSON", " will", " sign")
        .finish()
    )
    assert final == "Ask [REDACTED:PERSON] today. [REDACTED:PERSON] said [REDACTED:PERSON] will sign"


def test_plain_prose_never_waits_for_the_analyzer():
    guard = Guard()
    prose = "the answer is that you book trips in the travel tool and keep the receipts ."
    for token in prose.split(" "):
        assert guard.stream.feed(token + " ") is not None
    assert guard.calls == [] and guard.stream.analyses == 0
    # each word is sent as soon as the next one starts: nothing waits more than one token
    assert sum(guard.stream.lag[2:]) == 0


def test_a_capitalised_word_that_only_starts_a_sentence_is_not_sent_to_the_ner():
    guard = Guard().feed("The", " policy", " is", " short.", " Receipts", " go", " to", " finance", ".")
    guard.finish()
    assert not any(ner for _, ner in guard.calls)
    named = Guard().feed("Send", " it", " to", " Lukas", " Berg", " today", ".")
    assert named.finish() == "Send it to [REDACTED:PERSON] today."
    assert any(ner for _, ner in named.calls)


def test_values_the_user_supplied_are_left_alone():
    guard = Guard(supplied={"anna.berg@example.com"}).feed(*TOKENS)
    assert "anna.berg@example.com" in guard.finish()
    assert "[REDACTED:PHONE_NUMBER]" in guard.stream.text


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (
            ["See ", "![chart](", "https://collector.example", "/p.png?d=Q3-", "numbers) ", "ok"],
            "See [image: chart] ok",
        ),
        (["Read ", "[the ", "wiki](", "https://evil.example/", "p?id=", "42)", " now"], "Read the wiki now"),
        (["Go ", "https://evil.example/", "collect?", "d=secret", " now"], "Go [link removed] now"),
        (["[ref]: ", "https://evil.example/", "x?q=1", "\nnext"], "[ref]: [link removed]\nnext"),
        (['<img src="', "https://evil.example/", 'a?b=c"> x'], " x"),
        (
            ["Docs: ", "[guide](", "https://docs.example.com/guide", ") ok"],
            "Docs: [guide](https://docs.example.com/guide) ok",
        ),
        (
            ["Wiki: ", "[page](https://wiki.corp.example/", "page?id=1)", " ok"],
            "Wiki: [page](https://wiki.corp.example/page?id=1) ok",
        ),
    ],
)
def test_links_carrying_data_to_hosts_not_allowed_never_leave(tokens, expected):
    guard = Guard(hosts=["corp.example"]).feed(*tokens)
    assert guard.finish() == expected
    for prefix in _prefixes(guard.sent):
        assert "evil.example" not in prefix and "collector.example" not in prefix


def test_a_link_longer_than_the_hold_is_cut_and_its_url_treated_as_carrying_data():
    guard = Guard(max_link_chars=120).feed("See ", "[here](", "https://evil.example/", "a" * 300, ") and ", "more")
    assert "evil.example" not in guard.finish()
    assert len(guard.stream.held) == 0 and guard.stream.held_max <= 120
    allowed = Guard(hosts=["corp.example"], max_link_chars=120)
    allowed.feed("See ", "https://wiki.corp.example/", "b" * 300, " ok")
    assert allowed.finish() == "See https://wiki.corp.example/" + "b" * 300 + " ok"


def test_a_url_is_never_sent_in_two_pieces_the_client_could_join():
    # a number after "?" looks like a growing entity: it must not split the URL before it
    guard = Guard().feed("Open ", "https://evil.example/p?", "12345", " now")
    final = guard.finish()
    assert "evil.example" not in final
    long_text = Guard().feed("See ", "[" + "long link text " * 8, "](https://evil.example/x?q=1)", " ok")
    assert "evil.example" not in long_text.finish()


def test_unsafe_markdown_outside_code_is_removed_code_is_kept():
    guard = Guard().feed(
        "Use ",
        "<b>bold</b> ",
        "or ",
        "`<b>`",
        " tags",
        ".\n",
        "```html\n",
        '<a href="#x">',
        "link</a>\n",
        "```\n",
        "end",
    )
    assert guard.finish() == 'Use bold or `<b>` tags.\n```html\n<a href="#x">link</a>\n```\nend'
    assert guard.stream.markup["html"] == 1


def test_discard_drops_what_is_held():
    guard = Guard().feed("My", " reference", " is", " cnry-ab")
    guard.stream.discard()
    assert guard.stream.text == "My reference is " and guard.stream.held == ""


# --- the service, with the real analyzer and the department's policy ---------------------------------------------
def _drive(stream, tokens):
    sent = []
    for token in tokens:
        out = stream.feed(token)
        sent.append(stream.resolve() if out is None else out)
    out = stream.finish()
    sent.append(stream.resolve() if out is None else out)
    return sent


ANSWER = [
    "Sure",
    "!",
    " Write",
    " to",
    " kari",
    ".nord",
    "mann",
    "@example",
    ".org",
    " or",
    " call",
    " +46",
    " 70",
    " 123",
    " 45",
    " 67",
    ".",
    " Ask",
    " Lukas",
    " Berg",
    " from",
    " HR",
    ".",
    " ![logo](",
    "https://collector.example",
    "/p.png?d=",
    "Q3)",
    " See",
    " [the wiki](https://wiki.corp.example/page?id=1)",
    ".",
]


def test_output_stream_open_applies_the_departments_policy(world, analyzer):
    guardrail_policy_update(tenant=world.tenant, link_hosts=["corp.example"])
    stream = output_stream_open(tenant=world.tenant, scope_key="conversation:31", user_text="How do I reach HR?")
    sent = _drive(stream, ANSWER)
    final = "".join(sent)
    assert final == stream.text
    for prefix in _prefixes(sent):
        for secret in ("kari", "nordmann", "46 70", "Lukas", "Berg", "collector"):
            assert secret not in prefix, (secret, prefix)
    assert "[REDACTED:EMAIL_ADDRESS]" in final and "[REDACTED:PHONE_NUMBER]" in final
    assert "[REDACTED:PERSON]" in final and "[image: logo]" in final
    assert "[the wiki](https://wiki.corp.example/page?id=1)" in final  # the department allows its wiki
    verdict = output_stream_verdict(tenant=world.tenant, scope_key="conversation:31", stream=stream, sources=[])
    assert verdict.text == final and verdict.decision == "warn"
    assert verdict.counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "PERSON": 1}
    audit = AuditEvent.objects.filter(tenant=world.tenant, action="guardrail.pii_redact").latest("created_at")
    assert audit.details["entities"] == verdict.counts and "kari" not in str(audit.details)
    other = output_stream_open(tenant=world.other_tenant, scope_key="conversation:31", user_text="")
    assert "wiki.corp.example" not in "".join(_drive(other, ANSWER))  # another department's allowance does not apply


def test_output_stream_leaves_what_the_user_supplied(world, analyzer):
    masked = mask(tenant=world.tenant, scope_key="conversation:32", text="My colleague is kari.nordmann@example.org")
    stream = output_stream_open(tenant=world.tenant, scope_key="conversation:32", user_text=masked.text)
    final = "".join(_drive(stream, ["Mail", " kari.nordmann@example.org", " today", "."]))
    assert final == "Mail kari.nordmann@example.org today."


def test_a_canary_cut_is_a_block_in_the_verdict(world, analyzer):
    stream = output_stream_open(tenant=world.tenant, scope_key="conversation:33", user_text="")
    _drive(stream, ["The", " reference", " is", " "])
    verdict = output_stream_verdict(
        tenant=world.tenant, scope_key="conversation:33", stream=stream, sources=[], canary_leaked=True
    )
    assert (verdict.decision, verdict.canary_leaked, verdict.text) == ("block", True, "The reference is ")
    assert AuditEvent.objects.filter(tenant=world.tenant, action="guardrail.output_block").exists()


def test_the_stream_fails_closed(world, analyzer, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("spaCy exploded while reading: Lukas Berg +46 70 123 45 67")

    stream = output_stream_open(tenant=world.tenant, scope_key="conversation:34", user_text="")
    monkeypatch.setattr("guardrails.pii.PiiAnalyzer.analyze", boom)
    assert stream.feed("Call") == "" and stream.feed(" +46 70 123 45 67") == ""
    assert stream.feed(" now ") is None  # the number is released: it needs the analyzer
    with pytest.raises(GuardrailUnavailable):
        stream.resolve()
    assert "46" not in stream.text
