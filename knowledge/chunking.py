"""Token-aware recursive splitting that keeps each chunk's heading and page.

Token counts come from the embedding model's own WordPiece tokenizer (``tokenizer.json`` in the model folder, read
with the ``tokenizers`` library: no torch needed). Text is split on paragraphs, then lines, sentences, words and,
for a pathological run without spaces, characters; pieces are merged up to ``chunk_size`` tokens and consecutive
chunks share about ``overlap`` tokens.

Two rules keep every chunk answerable on its own:
- a short section that only heads others (a document's title with its policy id, owner and date; the text before the
  first heading) is never a chunk of its own: it is merged into the section it heads (``LEAD_MAX_TOKENS``);
- a section of records (CSV, ``Section.rows``) is split between lines only, without overlap, so every chunk starts at
  a row; its heading (the CSV header) goes with every chunk.
"""

from __future__ import annotations

import bisect
import itertools
import re
import string
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from knowledge.embeddings import default_model_path
from knowledge.parsing import Section

SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


@dataclass
class ChunkDraft:
    ordinal: int
    text: str
    token_count: int
    page: int | None
    heading: str

    @property
    def embedding_text(self) -> str:
        return embedding_text(self.heading, self.text)


def embedding_text(heading: str, text: str) -> str:
    """What is embedded and indexed for a chunk: its heading gives it context."""
    if heading and not text.startswith(heading):
        return f"{heading}\n{text}"
    return text


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from tokenizers import Tokenizer  # lazy heavy import: the Rust tokenizer loads with the first chunking

    with _lock:
        tok = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        return tok


def count_tokens(text: str) -> int:
    if not text:
        return 0
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


GROUP_CHARS = 4_096


def _count_parts(parts: list[str]) -> list[int]:
    """Token counts of pieces that each end with a separator's blank (the last may not), a few thousand characters
    to a tokenizer call: the tokenizer splits words on blanks first, so each piece's tokens are those that start
    inside it. (One call per piece cost 100,000 calls for a CSV row of 100,000 columns.)"""
    counts: list[int] = []
    i = 0
    while i < len(parts):
        j, size = i + 1, len(parts[i])
        while j < len(parts) and size + len(parts[j]) <= GROUP_CHARS:
            size += len(parts[j])
            j += 1
        if j == i + 1:
            counts.append(count_tokens(parts[i]))
        else:
            encoding = _tokenizer().encode("".join(parts[i:j]), add_special_tokens=False)
            starts = [start for start, _ in encoding.offsets]
            offset = 0
            for part in parts[i:j]:
                counts.append(bisect.bisect_left(starts, offset + len(part)) - bisect.bisect_left(starts, offset))
                offset += len(part)
        i = j
    return counts


def _split_keep(text: str, sep: str) -> list[str]:
    """Split after each separator, keeping it on the left piece (so joining the pieces restores the text)."""
    parts = text.split(sep)
    out = [p + sep for p in parts[:-1]]
    out.append(parts[-1])
    return [p for p in out if p]


def _split_chars(text: str, limit: int) -> list[tuple[str, int]]:
    """Last resort for a run without separators: windows of characters (a word the tokenizer cannot split counts as
    one unknown token, so tokens alone would not bound the size), a window that still holds more than ``limit``
    tokens ("a,a,a,…", a row of quotes) cut at every ``limit``-th token. Returns (piece, tokens)."""
    width = max(limit * 4, 16)
    out: list[tuple[str, int]] = []
    for i in range(0, len(text), width):
        window = text[i : i + width]
        encoding = _tokenizer().encode(window, add_special_tokens=False)
        if len(encoding.ids) <= limit:
            out.append((window, len(encoding.ids)))
            continue
        cuts = [0, *(encoding.offsets[k][0] for k in range(limit, len(encoding.ids), limit)), len(window)]
        token_starts = [start for start, _ in encoding.offsets]
        for a, b in itertools.pairwise(cuts):
            if b <= a:
                continue
            part = window[a:b]
            if _cut_at_edge(window, a) and _cut_at_edge(window, b):  # the window's tokens in [a, b) are the part's
                out.append((part, bisect.bisect_left(token_starts, b) - bisect.bisect_left(token_starts, a)))
            else:  # a cut inside a word: the part tokenizes differently alone
                out.append((part, count_tokens(part)))
    return out or [(text, count_tokens(text))]


def _cut_at_edge(text: str, at: int) -> bool:
    return at in (0, len(text)) or _word_edge(text[at - 1]) or _word_edge(text[at])


# A chunk may not be longer than this many characters per token of budget, whatever the tokenizer says.
MAX_CHARS_PER_TOKEN = 10


def _cost(text: str, tokens: int) -> int:
    """A piece's size against a token budget: its tokens, or its length in units of MAX_CHARS_PER_TOKEN characters
    when that is more (a run the tokenizer reads as one unknown token still takes room)."""
    return max(tokens, -(-len(text) // MAX_CHARS_PER_TOKEN))


def _pieces(
    text: str, limit: int, separators: tuple[str, ...] = SEPARATORS, *, tokens: int | None = None
) -> list[tuple[str, int]]:
    """Split ``text`` into (piece, tokens) with every piece's cost (``_cost``) at most ``limit``, on the coarsest
    separator. Text too long to fit is never tokenized whole, so each level of separators reads the text at most
    once: linear in the text, whatever it holds (a 1 MB line without spaces included)."""
    if tokens is None and len(text) <= limit * MAX_CHARS_PER_TOKEN:
        tokens = count_tokens(text)
    if tokens is not None and _cost(text, tokens) <= limit:
        return [(text, tokens)]
    for index, sep in enumerate(separators):
        if sep in text:
            parts = _split_keep(text, sep)
            if len(parts) < 2:
                continue
            short = [part for part in parts if len(part) <= limit * MAX_CHARS_PER_TOKEN]
            counts = dict(zip(short, _count_parts(short), strict=True))
            out: list[tuple[str, int]] = []
            for part in parts:
                count = counts.get(part)
                if count is not None and _cost(part, count) <= limit:
                    out.append((part, count))
                else:
                    out.extend(_pieces(part, limit, separators[index + 1 :], tokens=count))
            return out
    return _split_chars(text, limit)


def _rows(text: str, limit: int) -> list[tuple[str, int]]:
    """One piece per line (a record), each ending with its newline; a line over ``limit`` is split further."""
    lines = _split_keep(text, "\n")
    short = [line for line in lines if len(line) <= limit * MAX_CHARS_PER_TOKEN]
    counts = dict(zip(short, _count_parts(short), strict=True))
    out: list[tuple[str, int]] = []
    for line in lines:
        count = counts.get(line)
        if count is not None and _cost(line, count) <= limit:
            out.append((line, count))
        else:
            out.extend(_pieces(line, limit, ROW_SEPARATORS[1:], tokens=count))
    return out


_WS = re.compile(r"[ \t]+")


def _tidy(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _word_edge(ch: str) -> bool:
    """Whether the tokenizer's pre-tokenizer splits at ``ch``: blanks and every punctuation mark (its own rules)."""
    return ch in " \t\n\r" or ch in string.punctuation or unicodedata.category(ch) in _EDGE_CATEGORIES


_EDGE_CATEGORIES = frozenset({"Zs", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"})


def _emit(drafts: list[ChunkDraft], window: list[tuple[str, int]], section: Section) -> None:
    text = _tidy("".join(p for p, _ in window))
    if text:
        # Pieces that meet at a word edge tokenize alone as they do together (the tokenizer splits words first, and
        # collapsing blanks changes no token): their counts add up. A window cut inside a word is counted again.
        clean = all(_word_edge(a[-1]) or _word_edge(b[0]) for (a, _), (b, _) in itertools.pairwise(window))
        drafts.append(
            ChunkDraft(
                ordinal=len(drafts),
                text=text,
                token_count=sum(t for _, t in window) if clean else count_tokens(text),
                page=section.page,
                heading=section.heading,
            )
        )


# A section this short (in tokens) that heads the next one is merged into it rather than indexed alone.
LEAD_MAX_TOKENS = 48
HEADING_SEPARATOR = " › "
ROW_SEPARATORS = ("\n", "; ", ", ", " ")


def _heads(lead: Section, section: Section) -> bool:
    """``lead`` heads ``section``: the text before any heading, or a section whose heading is an ancestor of the
    next one's, on the same page."""
    if lead.page != section.page or lead.rows or section.rows:
        return False
    return not lead.heading or section.heading.startswith(lead.heading + HEADING_SEPARATOR)


def _merge_leads(sections: list[Section]) -> list[Section]:
    """Short leading sections (a title block: policy id, owner, date) become the start of the section they head."""
    out: list[Section] = []
    for index, section in enumerate(sections):
        nxt = sections[index + 1] if index + 1 < len(sections) else None
        short = (
            len(section.text) <= LEAD_MAX_TOKENS * MAX_CHARS_PER_TOKEN and count_tokens(section.text) <= LEAD_MAX_TOKENS
        )
        if nxt is not None and _heads(section, nxt) and short:
            sections[index + 1] = Section(text=section.text + "\n\n" + nxt.text, page=nxt.page, heading=nxt.heading)
            continue
        out.append(section)
    return out


def chunk_sections(sections: list[Section], *, chunk_size: int = 400, overlap: int = 60) -> list[ChunkDraft]:
    """Chunks of about ``chunk_size`` tokens (heading included) with ``overlap`` tokens shared between neighbours
    (none between rows). Consecutive sections with the same heading and page are merged before splitting, and short
    title blocks into the section they head. Sizes are costs (``_cost``): tokens, or characters /
    MAX_CHARS_PER_TOKEN when that is more."""
    chunk_size = max(int(chunk_size), 16)
    overlap = max(0, min(int(overlap), chunk_size // 2))
    merged: list[Section] = []
    for section in sections:
        text = section.text.strip()
        if not text:
            continue
        last = merged[-1] if merged else None
        if last is not None and (last.heading, last.page, last.rows) == (section.heading, section.page, section.rows):
            merged[-1] = Section(
                text=last.text + "\n\n" + text, page=section.page, heading=section.heading, rows=last.rows
            )
        else:
            merged.append(Section(text=text, page=section.page, heading=section.heading, rows=section.rows))
    merged = _merge_leads(merged)
    drafts: list[ChunkDraft] = []
    for section in merged:
        heading_tokens = count_tokens(section.heading) + 1 if section.heading else 0
        budget = max(chunk_size - heading_tokens, chunk_size // 2)
        window: list[tuple[str, int]] = []
        size = 0
        carry = 0 if section.rows else overlap  # rows: every chunk starts at a row
        pieces = _rows(section.text, budget) if section.rows else _pieces(section.text, budget)

        for piece, tokens in pieces:
            cost = _cost(piece, tokens)
            if window and size + cost > budget:
                _emit(drafts, window, section)
                # carry the tail of the chunk just emitted (about ``overlap`` tokens) into the next one
                carried: list[tuple[str, int]] = []
                carried_size = 0
                for prev in reversed(window):
                    prev_cost = _cost(*prev)
                    if carried_size + prev_cost > carry:
                        if carry == 0:
                            break
                        # take the trailing sentences of a piece too large to carry whole
                        room = max(carry - carried_size, 1)
                        for sub in reversed(_pieces(prev[0], room, SEPARATORS[2:], tokens=prev[1])):
                            if carried_size + _cost(*sub) > carry:
                                break
                            carried.insert(0, sub)
                            carried_size += _cost(*sub)
                        break
                    carried.insert(0, prev)
                    carried_size += prev_cost
                if carried_size + cost > budget:
                    carried, carried_size = [], 0
                window, size = carried, carried_size
            window.append((piece, tokens))
            size += cost
        if window:
            _emit(drafts, window, section)
    return drafts
