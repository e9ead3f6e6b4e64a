"""Redaction of a token stream before it leaves the server (pure: the PII analysis is passed in).

A model answer arrives a few characters at a time. Sending each piece as it comes would let an e-mail address, a
phone number, a name or a data-carrying link out before the output guard sees it whole; waiting for the last token
would make the answer appear all at once. The tail of the text that could still grow into an entity or a link is
held back, and the rest goes through the redaction as soon as nothing after it can change it:

- the word being written (no blank after it yet): "anna.berg@exam" may become an address;
- before it, a run of short number groups and capitalised words: "+46 70 123", "SE45 5000 0000", "Freja
  Nilsson" (a phone number, an IBAN or a card in print format, a name);
- an unclosed markdown link, image or HTML tag: "[click](javascript:", "<img src=".

The held tail is bounded (``max_hold_chars``): past the bound its oldest part is released, so a long number run
cannot stall the stream. A link is held longer (``max_link_chars``), and a URL cut by that bound counts as carrying
data (it is removed unless its host is allowed), so a link is never sent in two pieces that the client could join.
What was sent is never taken back, so the streamed text, the text stored and the final text are the same string:
the concatenation of what was released.

``StreamRedactor`` is the bare mechanism around a redaction function. ``OutputStream`` is the output guard of one
answer built on it: markdown sanitizing outside code (``guardrails.output.sanitize_markdown``), links and images
whose URL carries data to hosts not allowed (``guardrails.links``), and personal data the user did not supply,
replaced by ``[REDACTED:<TYPE>]``. Its ``feed`` is cheap (regular expressions over the new piece); only a released
piece that may hold personal data (a digit, an "@", a capitalised word that may be a name...) needs the analyzer,
and ``feed`` then returns None: the caller runs ``resolve()`` (blocking) where blocking is allowed.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from guardrails import names
from guardrails.links import REMOVED_LINK, host_allowed, is_exfil_url, normalize_hosts, strip_exfil_links
from guardrails.output import sanitize_markdown
from guardrails.vault import PLACEHOLDER_RE

Redact = Callable[[str, str], str]  # (context before, segment) -> redacted segment

# A run at the end of the text that may still be one entity: number groups, codes, capitalised words, joined by
# single blanks, dots or dashes ("+46 70 123 45", "SE45 5000 0000 0583", "Lukas Berg", "Dr. Anna", "Åsa Berg").
_CAPITAL = r"A-Z\u00c0-\u00d6\u00d8-\u00de"
_GROWING_TAIL = re.compile(  # it starts a word: after a blank or an opening bracket, quote or emphasis
    r"(?:^|(?<=[\s(\[\"'\u201c\u2018*_]))(?:(?:[+(]?[0-9][0-9()./\-]{0,7}|["
    + _CAPITAL
    + r"][A-Za-z0-9\u00c0-\u024f'.\-]{0,30}|[a-z]{2}[0-9]{2}[A-Za-z0-9]{0,4})[ \t]?)+$"
)
# An unfinished markdown link or image ("[text", "[text](https://ex", "![alt]") and an unfinished HTML tag or
# placeholder ("<img src=", "<PERSON_").
_OPEN_MD_LINK = re.compile(r"!?\[[^\[\]\n]*(?:\]\([^()\s]*)?$|!?\[[^\[\]\n]*\]$")
_OPEN_TAG = re.compile(r"<[A-Za-z!/?][^<>\n]*$")
_MAY_GROW = re.compile(r"[0-9" + _CAPITAL + r"]")  # a growing tail holds a digit or a capital
_PLAIN = re.compile(r"[a-z \t,.;:!?'\-]*")  # nothing any check acts on: no capital, digit, link, markup or newline
_URL_START = re.compile(r"(?i)https?:|//")


def safe_cut(pending: str, *, max_hold: int, max_link_hold: int | None = None) -> tuple[int, bool]:
    """How much of ``pending`` nothing after it can change, and whether that cut falls inside a URL (forced by the
    bound: the released part then ends with an unfinished URL)."""
    end = len(pending)
    if end == 0:
        return 0, False
    link_hold = max(max_hold, max_link_hold or max_hold)
    floor = max(0, end - max_hold)
    link_floor = max(0, end - link_hold)
    word = max(pending.rfind(" "), pending.rfind("\n"), pending.rfind("\t")) + 1  # the word being written
    cut = end if pending[-1].isspace() else word
    if cut > floor and _MAY_GROW.search(pending, floor, cut) is not None:
        tail = _GROWING_TAIL.search(pending, floor, cut)
        if tail is not None:
            cut = tail.start()
    link = _OPEN_MD_LINK.search(pending, link_floor) if "[" in pending else None
    if link is not None:
        cut = min(cut, link.start())
    elif "]" in pending[word:]:  # "](https://…)" ends a link whose text began before: keep the link whole
        opener = pending.rfind("[", link_floor, word)
        if opener != -1 and "]" not in pending[opener:word]:
            link_start = opener - 1 if opener > 0 and pending[opener - 1] == "!" else opener
            cut = min(cut, link_start)
    tag = _OPEN_TAG.search(pending, floor) if "<" in pending else None
    if tag is not None:
        cut = min(cut, tag.start())
    in_url = word < end and "/" in pending[word:] and _URL_START.search(pending, word) is not None
    bound = link_floor if link is not None or in_url else floor
    if cut >= bound:
        return cut, False
    return bound, in_url and word < bound


class StreamRedactor:
    """Hold back what may still grow into an entity or a link; pass the rest through ``redact``.

    The redaction function sees the segment to release and the text released before it (up to ``context_chars``),
    so context words ("phone:", "Dear") still count; it returns the segment's redacted form."""

    def __init__(self, redact: Redact, *, max_hold_chars: int = 80, context_chars: int = 400) -> None:
        if max_hold_chars < 1:
            raise ValueError("max_hold_chars must be at least 1")
        self._redact = redact
        self._max_hold = max_hold_chars
        self._context_chars = context_chars
        self._pending = ""  # received, not yet released
        self._released_raw = ""  # raw text released so far (context for the next segment)
        self._sent: list[str] = []  # what left the server, redacted
        self.held_max = 0  # the most characters held back at once

    @property
    def text(self) -> str:
        """Everything sent so far: after ``finish``, the final (and stored) text."""
        return "".join(self._sent)

    @property
    def held(self) -> str:
        return self._pending

    def feed(self, delta: str) -> str:
        """Take the next piece of the answer; return what may be sent now (possibly "")."""
        self._pending += delta
        cut, _ = safe_cut(self._pending, max_hold=self._max_hold)
        self.held_max = max(self.held_max, len(self._pending) - cut)
        return self._release(cut)

    def finish(self) -> str:
        """The answer is complete: release everything held back."""
        return self._release(len(self._pending))

    def _release(self, cut: int) -> str:
        if cut <= 0:
            return ""
        segment, self._pending = self._pending[:cut], self._pending[cut:]
        context = self._released_raw[-self._context_chars :]
        out = self._redact(context, segment)
        self._released_raw = context + segment
        self._sent.append(out)
        return out


Spans = Callable[[str], list[tuple[int, int, str]]]  # text -> (start, end, entity type)


def span_redactor(find: Spans, *, template: str = "[REDACTED:{}]") -> Redact:
    """A redaction function from a span finder (e.g. the PII analyzer): it reads the context and the segment
    together and replaces what it finds in the segment. A span that began in text already sent is replaced from
    the segment's start (its sent part cannot be taken back; the bound on the held tail makes that rare)."""

    def redact(context: str, segment: str) -> str:
        text = context + segment
        offset = len(context)
        out, position = [], offset
        for start, end, entity_type in sorted(find(text)):
            if end <= position:
                continue
            start = max(start, position)
            out.append(text[position:start])
            out.append(template.format(entity_type))
            position = end
        out.append(text[position:])
        return "".join(out)

    return redact


# --- code spans -----------------------------------------------------------------------------------------------
_FENCE_LINE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")


@functools.cache
def _closing_ticks(n: int) -> re.Pattern[str]:
    return re.compile(r"(?<!`)`{" + str(n) + r"}(?!`)")


class CodeTracker:
    """Which parts of a text that arrives in pieces are code: fenced blocks and inline code spans (CommonMark,
    simplified: a blank line ends an open inline span). Sanitizing leaves code alone, as ``sanitize_markdown`` does
    with a whole text, so that an answer's HTML example survives."""

    def __init__(self) -> None:
        self.fence = ""  # the marker of the open fenced block ("```", "~~~~"), or ""
        self.inline = 0  # the backtick run length of an open inline code span, or 0
        self.line_start = True

    def split(self, text: str) -> list[tuple[bool, str]]:
        """``text`` (the next piece) as (is code, part) pairs, in order."""
        pieces: list[tuple[bool, str]] = []
        i, n = 0, len(text)
        while i < n:
            newline = text.find("\n", i)
            end = n if newline == -1 else newline + 1
            line = text[i:end]
            if self.line_start and self.inline and not line.strip():
                self.inline = 0  # a blank line: the paragraph, and any open inline span, ends
            fence = _FENCE_LINE.match(line) if self.line_start and not self.inline else None
            if fence is not None:
                marker = fence.group(1)
                if not self.fence:
                    self.fence = marker
                elif marker[0] == self.fence[0] and len(marker) >= len(self.fence) and not line[fence.end() :].strip():
                    self.fence = ""
                pieces.append((True, line))
            elif self.fence:
                pieces.append((True, line))
            else:
                self._inline(line, pieces)
            self.line_start = line.endswith("\n")
            i = end
        merged: list[tuple[bool, str]] = []
        for code, part in pieces:
            if merged and merged[-1][0] == code:
                merged[-1] = (code, merged[-1][1] + part)
            elif part:
                merged.append((code, part))
        return merged

    def _inline(self, line: str, pieces: list[tuple[bool, str]]) -> None:
        j, end = 0, len(line)
        while j < end:
            if self.inline:
                close = _closing_ticks(self.inline).search(line, j)
                if close is None:
                    pieces.append((True, line[j:]))
                    return
                pieces.append((True, line[j : close.end()]))
                j, self.inline = close.end(), 0
                continue
            tick = line.find("`", j)
            if tick == -1:
                pieces.append((False, line[j:]))
                return
            pieces.append((False, line[j:tick]))
            run = tick
            while run < end and line[run] == "`":
                run += 1
            pieces.append((True, line[tick:run]))
            j, self.inline = run, run - tick


# --- the output guard of one answer ---------------------------------------------------------------------------
Analyze = Callable[[str, bool], list[tuple[int, int, str]]]  # (text, with NER) -> (start, end, entity type)

# What a piece must hold for a pattern entity to be in it (the analyzer is skipped otherwise).
_DIGITS = r"\d(?:[ \t().\-/+]{0,3}\d){3}"  # four digits close together: "2024", "10.0.0.1", "+46 70"
_ENTITY_TRIGGERS = {
    "EMAIL_ADDRESS": "@",
    "PHONE_NUMBER": _DIGITS,
    "CREDIT_CARD": _DIGITS,
    "IBAN_CODE": _DIGITS,
    "US_SSN": _DIGITS,
    "IP_ADDRESS": _DIGITS + "|::",
}
_ANYTHING = r"\w"
_MARKUP_HINT = re.compile(r"[\[<&]")  # what sanitize_markdown acts on: links, images, definitions, HTML, entities
_URL_HINT = re.compile("//")
_ANY_URL = re.compile(r"(?i)(?:https?:)?//[^\s<>\"'`\[\]]+")
_TRAILING_PUNCT = ".,;:!?*_~)"
_REDACTED = re.compile(r"\[REDACTED:[A-Z0-9_]+\]")
_WORD = re.compile(r"[^\W\d_][\w'\u2019\-]*")
_MARKER_AT_LINE_START = re.compile(r"(?:^|\n)[ \t]*(?:[-*+>#]+|\d{1,3}[.)])$")
LAG_BUCKETS = 64  # the lag histogram's last bucket counts 64 tokens and more


def pattern_trigger(entity_types: Iterable[str], *, custom: bool = False) -> re.Pattern[str] | None:
    """A cheap test for pieces that may hold one of ``entity_types`` (pattern entities only); None when none is
    looked for. Types without a known trigger (URL, DATE_TIME) and a department's own patterns match every word."""
    parts = set()
    for entity_type in entity_types:
        parts.add(_ENTITY_TRIGGERS.get(entity_type, _ANYTHING))
    if custom:
        parts.add(_ANYTHING)
    if not parts:
        return None
    return re.compile(_ANYTHING if _ANYTHING in parts else "|".join(sorted(parts)))


@dataclass(frozen=True)
class Pending:
    """A released piece that waits for the PII analysis."""

    context: str
    text: str
    ner: bool


class OutputStream:
    """The output guard of one answer while it streams.

    ``feed(delta)`` returns the redacted text that may be sent now, or None when the released piece needs the PII
    analyzer: then ``resolve()`` (blocking: the analyzer) returns it. ``finish()`` releases what is still held (None
    likewise), ``discard()`` drops it (a canary leak). ``text`` is everything released: the final and stored text.

    ``analyze(text, ner)`` finds entities (with the NER, or patterns only); ``supplied(value)`` says whether the user
    supplied a value (it is then left alone); links carrying data are removed unless their host is in
    ``allowed_hosts``. Counts of what was removed are kept for the verdict; ``lag`` is a histogram of how many later
    tokens arrived before each token was sent.
    """

    def __init__(
        self,
        *,
        analyze: Analyze,
        supplied: Callable[[str], bool],
        allowed_hosts: Iterable[str] = (),
        patterns: re.Pattern[str] | None = None,
        ner: bool = False,
        max_hold_chars: int = 80,
        max_link_chars: int = 512,
        context_chars: int = 160,
    ) -> None:
        if max_hold_chars < 1:
            raise ValueError("max_hold_chars must be at least 1")
        self._analyze = analyze
        self._supplied = supplied
        self._hosts = normalize_hosts(allowed_hosts)
        self._patterns = patterns
        self._ner = ner
        self._max_hold = max_hold_chars
        self._max_link = max(max_link_chars, max_hold_chars)
        self._context_chars = context_chars
        self._code = CodeTracker()
        self._pending = ""
        self._context = ""  # the raw text released last (up to context_chars)
        self._released = 0  # raw characters released
        self._received = 0  # raw characters received
        self._waiting: Pending | None = None
        self._sent: list[str] = []
        self._known: set[str] = set()  # parts of names redacted so far: their other mentions go too
        self._known_re: re.Pattern[str] | None = None
        self._tokens: deque[tuple[int, int]] = deque()  # (token index, raw end offset) of tokens not wholly sent
        self._token_count = 0
        self.lag = [0] * (LAG_BUCKETS + 1)
        self.held_max = 0
        self.analyses = 0  # how many released pieces needed the analyzer
        self.redacted: Counter[str] = Counter()  # entity type -> redacted
        self.markup: Counter[str] = Counter()  # what sanitize_markdown removed (images, unsafe_links, html)
        self.links_removed = 0

    # the caller's side ------------------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(self._sent)

    @property
    def held(self) -> str:
        return self._pending

    @property
    def heavy(self) -> bool:
        """Whether the waiting piece needs the NER (run ``resolve()`` off an event loop); else patterns only."""
        return self._waiting is not None and self._waiting.ner

    def feed(self, delta: str) -> str | None:
        """Take the next token; return what may be sent now ("" when nothing), or None: call ``resolve()``."""
        self._check_idle()
        self._pending += delta
        self._received += len(delta)
        self._tokens.append((self._token_count, self._received))
        self._token_count += 1
        cut, open_url = safe_cut(self._pending, max_hold=self._max_hold, max_link_hold=self._max_link)
        self.held_max = max(self.held_max, len(self._pending) - cut)
        return self._take(cut, open_url)

    def finish(self) -> str | None:
        """The answer is complete: release everything held back (None: call ``resolve()``)."""
        self._check_idle()
        return self._take(len(self._pending), False, final=True)

    def discard(self) -> None:
        """Drop what is held back (it is never sent)."""
        self._pending, self._waiting = "", None
        self._tokens.clear()

    def resolve(self) -> str:
        """Run the PII analysis of the piece ``feed``/``finish`` left waiting; return its redacted text."""
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return ""
        self.analyses += 1
        combined = waiting.context + waiting.text
        position = len(waiting.context)
        ours = [(m.start(), m.end()) for m in _REDACTED.finditer(combined)] if "[REDACTED:" in combined else []
        out: list[str] = []
        for start, end, entity_type in sorted(self._analyze(combined, waiting.ner)):
            if end <= position or any(start < e and end > s for s, e in ours):
                continue
            value = combined[start:end]
            if self._supplied(value):
                continue
            out.append(combined[position : max(start, position)])
            out.append(f"[REDACTED:{entity_type}]")
            position = end
            self.redacted[entity_type] += 1
            if entity_type == "PERSON":
                self._remember_name(value)
        out.append(combined[position:])
        return self._emit("".join(out))

    # inside -----------------------------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        if self._waiting is not None:
            raise RuntimeError("resolve() the waiting piece first")

    def _take(self, cut: int, open_url: bool, *, final: bool = False) -> str | None:
        segment, self._pending = self._pending[:cut], self._pending[cut:]
        self._released += cut
        self._count_lag(final)
        if not segment:
            return ""
        context = self._context
        self._context = (context + segment)[-self._context_chars :]
        if _PLAIN.fullmatch(segment) is not None:  # lowercase prose: nothing to sanitize or analyse
            if segment.strip(" \t"):
                self._code.line_start = False
            return self._emit(self._known_names(segment))  # a name redacted before, written in lower case
        text = self._markup(segment, open_url)
        text = self._known_names(text)
        plain = PLACEHOLDER_RE.sub(" ", text) if "<" in text else text  # the user's own values, masked
        plain = _REDACTED.sub(" ", plain) if "[REDACTED:" in plain else plain
        ner = self._ner and self._may_hold_name(context, plain)
        if ner or (self._patterns is not None and self._patterns.search(plain) is not None):
            self._waiting = Pending(context=context, text=text, ner=ner)
            return None
        return self._emit(text)

    def _emit(self, text: str) -> str:
        self._sent.append(text)
        return text

    def _count_lag(self, final: bool) -> None:
        last, tokens = self._token_count - 1, self._tokens
        while tokens and (final or tokens[0][1] <= self._released):
            index, _ = tokens.popleft()
            self.lag[min(last - index, LAG_BUCKETS)] += 1

    def _markup(self, segment: str, open_url: bool) -> str:
        """Unsafe markdown outside code, then links carrying data (code included, as the whole-text guard does)."""
        parts = []
        for code, part in self._code.split(segment):
            if not code and _MARKUP_HINT.search(part):
                sanitized = sanitize_markdown(part)
                self.markup.update(sanitized.removed)
                part = sanitized.text
            parts.append(part)
        text = "".join(parts)
        if _URL_HINT.search(text) is None:
            return text
        delinked = strip_exfil_links(text, allowed_hosts=self._hosts)
        self.links_removed += delinked.removed
        return self._sweep_urls(delinked.text, open_url)

    def _sweep_urls(self, text: str, open_url: bool) -> str:
        """URLs whose link began in a piece sent before ("](https://…", a definition's target): removed when they
        carry data; a URL cut by the hold bound (``open_url``) is removed unless its host is allowed."""

        def url(m: re.Match[str]) -> str:
            found, tail = m.group(0), ""
            at_end = m.end() == len(text)
            while found and found[-1] in _TRAILING_PUNCT and not (open_url and at_end):
                if found[-1] == ")" and found.count("(") >= found.count(")"):
                    break  # a balanced parenthesis belongs to the URL
                tail = found[-1] + tail
                found = found[:-1]
            if open_url and at_end:
                host = _host(found)
                if host and host_allowed(host, self._hosts):
                    return m.group(0)
            elif not is_exfil_url(found, self._hosts):
                return m.group(0)
            self.links_removed += 1
            return REMOVED_LINK + tail

        return _ANY_URL.sub(url, text)

    def _known_names(self, text: str) -> str:
        if self._known_re is None:
            return text

        def name(m: re.Match[str]) -> str:
            if self._supplied(m.group(0)):
                return m.group(0)
            self.redacted["PERSON"] += 1
            return "[REDACTED:PERSON]"

        return self._known_re.sub(name, text)

    def _remember_name(self, value: str) -> None:
        parts = {w.strip(".,'\u2019") for w in value.split()}
        new = {p for p in parts if len(p) >= 3 and names.is_name_word(p)} - self._known
        if new:
            self._known |= new
            ordered = sorted(self._known, key=len, reverse=True)
            any_case = "|".join(re.escape(p) for p in ordered if names.any_case(p))
            as_written = "|".join(re.escape(p) for p in ordered if not names.any_case(p))
            alternatives = "|".join(a for a in (f"(?i:{any_case})" if any_case else "", as_written) if a)
            self._known_re = re.compile(r"(?<!\w)(?:" + alternatives + r")(?!\w)")  # "lukas" after "Lukas Berg"

    def _may_hold_name(self, context: str, text: str) -> bool:
        """A capitalised word that may be (part of) a name: a known given name anywhere; another name word unless it
        only starts a sentence, a line or a list item (then only when another capitalised word follows it)."""
        known = names.given_names()
        for m in _WORD.finditer(text):
            word = m.group(0)
            if not word[0].isupper():
                continue
            lower = word.lower()
            if lower in known:
                return True
            if word.isupper() or not names.is_name_word(word):
                continue  # an acronym or a shouted word; a word that starts sentences
            if not _starts_sentence(context + text[: m.start()]):
                return True
            following = _WORD.match(text, m.end() + 1) if text[m.end() : m.end() + 1] == " " else None
            if following is not None and following.group(0)[0].isupper():
                return True
        return False


def _starts_sentence(window: str) -> bool:
    """Whether the text after ``window`` starts the answer, a sentence, a line, a heading or a list item."""
    stripped = window.rstrip(" \t\"'\u201c([*_")
    if not stripped or stripped[-1] in ".!?:;\n":
        return True
    return _MARKER_AT_LINE_START.search(stripped[-16:]) is not None and ("\n" in stripped[-16:] or len(stripped) <= 16)


def _host(url: str) -> str:
    rest = url.split("//", 1)[1] if "//" in url else url
    return rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0].lower()
