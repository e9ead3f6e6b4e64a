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

import re
import threading
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


def _count_many(texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(e.ids) for e in _tokenizer().encode_batch(texts, add_special_tokens=False)]


def _split_keep(text: str, sep: str) -> list[str]:
    """Split after each separator, keeping it on the left piece (so joining the pieces restores the text)."""
    parts = text.split(sep)
    out = [p + sep for p in parts[:-1]]
    out.append(parts[-1])
    return [p for p in out if p]


def _split_chars(text: str, limit: int) -> list[str]:
    """Last resort for a run without separators: fixed windows of characters (a word the tokenizer cannot split
    counts as one unknown token, so tokens alone would not bound the size)."""
    width = max(limit * 4, 16)
    return [text[i : i + width] for i in range(0, len(text), width)] or [text]


# A chunk may not be longer than this many characters per token of budget, whatever the tokenizer says.
MAX_CHARS_PER_TOKEN = 10


def _fits(text: str, tokens: int, limit: int) -> bool:
    return tokens <= limit and len(text) <= limit * MAX_CHARS_PER_TOKEN


def _pieces(text: str, limit: int, separators: tuple[str, ...] = SEPARATORS) -> list[tuple[str, int]]:
    """Split ``text`` into (piece, tokens) with every piece at most ``limit`` tokens, on the coarsest separator."""
    tokens = count_tokens(text)
    if _fits(text, tokens, limit):
        return [(text, tokens)]
    for index, sep in enumerate(separators):
        if sep in text:
            parts = _split_keep(text, sep)
            if len(parts) < 2:
                continue
            counts = _count_many(parts)
            out: list[tuple[str, int]] = []
            for part, count in zip(parts, counts, strict=True):
                if _fits(part, count, limit):
                    out.append((part, count))
                else:
                    out.extend(_pieces(part, limit, separators[index + 1 :]))
            return out
    return [(p, count_tokens(p)) for p in _split_chars(text, limit)]


def _rows(text: str, limit: int) -> list[tuple[str, int]]:
    """One piece per line (a record), each ending with its newline; a line over ``limit`` is split further."""
    out: list[tuple[str, int]] = []
    lines = _split_keep(text, "\n")
    for line, count in zip(lines, _count_many(lines), strict=True):
        if _fits(line, count, limit):
            out.append((line, count))
        else:
            out.extend(_pieces(line, limit, ROW_SEPARATORS[1:]))
    return out


_WS = re.compile(r"[ \t]+")


def _tidy(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _emit(drafts: list[ChunkDraft], window: list[tuple[str, int]], section: Section) -> None:
    text = _tidy("".join(p for p, _ in window))
    if text:
        drafts.append(
            ChunkDraft(
                ordinal=len(drafts),
                text=text,
                token_count=count_tokens(text),
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
        if nxt is not None and _heads(section, nxt) and count_tokens(section.text) <= LEAD_MAX_TOKENS:
            sections[index + 1] = Section(text=section.text + "\n\n" + nxt.text, page=nxt.page, heading=nxt.heading)
            continue
        out.append(section)
    return out


def chunk_sections(sections: list[Section], *, chunk_size: int = 400, overlap: int = 60) -> list[ChunkDraft]:
    """Chunks of about ``chunk_size`` tokens (heading included) with ``overlap`` tokens shared between neighbours
    (none between rows). Consecutive sections with the same heading and page are merged before splitting, and short
    title blocks into the section they head."""
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
        carry = 0 if section.rows else overlap
        pieces = _rows(section.text, budget) if section.rows else _pieces(section.text, budget)

        for piece, tokens in pieces:
            chars = sum(len(p) for p, _ in window)
            if window and (size + tokens > budget or chars + len(piece) > budget * MAX_CHARS_PER_TOKEN):
                _emit(drafts, window, section)
                # carry the tail of the chunk just emitted (about ``overlap`` tokens) into the next one
                carried: list[tuple[str, int]] = []
                carried_size = 0
                for prev in reversed(window):
                    if carried_size + prev[1] > carry:
                        # take the trailing sentences of a piece too large to carry whole
                        for sub in reversed(_pieces(prev[0], max(carry - carried_size, 1), SEPARATORS[2:])):
                            if carry == 0 or carried_size + sub[1] > carry:
                                break
                            carried.insert(0, sub)
                            carried_size += sub[1]
                        break
                    carried.insert(0, prev)
                    carried_size += prev[1]
                if carried_size + tokens > budget:
                    carried, carried_size = [], 0
                window, size = carried, carried_size
            window.append((piece, tokens))
            size += tokens
        if window:
            _emit(drafts, window, section)
    return drafts
