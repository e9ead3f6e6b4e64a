"""Redaction of a token stream before it leaves the server (pure, no I/O).

A model answer arrives a few characters at a time. Sending each piece as it comes would let an e-mail address, a
phone number, a name or an unsafe link out before the output guard sees it whole; waiting for the last token
would make the answer appear all at once. ``StreamRedactor`` holds back only the tail of the text that could
still grow into an entity or a link, and sends the rest through the redaction function as soon as nothing after
it can change it:

- the word being written (no blank after it yet): "anna.berg@exam" may become an address;
- before it, a run of short number groups and capitalised words: "+46 70 123", "SE45 5000 0000", "Freja
  Nilsson" (a phone number, an IBAN or a card in print format, a name);
- an unclosed markdown link, image or HTML tag: "[click](javascript:", "<img src=".

The held tail is bounded (``max_hold_chars``): past the bound its oldest part is released, so a long number run
cannot stall the stream. What was sent is never taken back, so the streamed text, the text stored and the final
text are the same string: the concatenation of what ``feed`` and ``finish`` returned.

The redaction function sees the segment to release and the text released before it (up to ``context_chars``),
so context words ("phone:", "Dear") still count; it returns the segment's redacted form.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Redact = Callable[[str, str], str]  # (context before, segment) -> redacted segment

# A run at the end of the text that may still be one entity: number groups, codes, capitalised words, joined by
# single blanks, dots or dashes ("+46 70 123 45", "SE45 5000 0000 0583", "Lukas Berg", "Dr. Anna").
_GROWING_TAIL = re.compile(
    r"(?<![\w@.\-/:])(?:(?:[+(]?[0-9][0-9()./\-]{0,7}|[A-Z][A-Za-z0-9\u00c0-\u024f'.\-]{0,30}|[a-z]{2}[0-9]{2}[A-Za-z0-9]{0,4})"
    r"[ \t]?)+$"
)
_OPEN_LINK = re.compile(r"!?\[[^\[\]\n]*(?:\]\([^()\s]*)?$|!?\[[^\[\]\n]*\]$|<[A-Za-z!/?][^<>\n]*$")


class StreamRedactor:
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
        cut = self._safe_cut(self._pending)
        self.held_max = max(self.held_max, len(self._pending) - cut)
        return self._release(cut)

    def finish(self) -> str:
        """The answer is complete: release everything held back."""
        return self._release(len(self._pending))

    def _safe_cut(self, pending: str) -> int:
        """How much of ``pending`` nothing after it can change."""
        end = len(pending)
        floor = max(0, end - self._max_hold)
        cut = end if pending[-1:].isspace() else max(pending.rfind(c) for c in " \t\n") + 1  # the word being written
        if cut > floor:
            tail = _GROWING_TAIL.search(pending, floor, cut)
            if tail is not None:
                cut = tail.start()
        link = _OPEN_LINK.search(pending, floor)
        if link is not None:
            cut = min(cut, link.start())
        return max(cut, floor)

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
