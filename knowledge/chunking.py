"""Token-aware recursive splitting that keeps each chunk's heading and page.

Token counts come from the embedding model's own WordPiece tokenizer (``tokenizer.json`` in the model folder, read
with the ``tokenizers`` library: no torch needed). Text is split on paragraphs, then lines, sentences, words and,
for a pathological run without spaces, characters; pieces are merged up to ``chunk_size`` tokens and consecutive
chunks share about ``overlap`` tokens.
"""

from __future__ import annotations

import itertools
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
    if len(texts) < 64:  # a batch starts the tokenizer's thread pool: for a few short texts that costs more
        return [count_tokens(t) for t in texts]
    return [len(e.ids) for e in _tokenizer().encode_batch(texts, add_special_tokens=False)]


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
        starts = [0, *(encoding.offsets[k][0] for k in range(limit, len(encoding.ids), limit))]
        for (a, b), first in zip(
            itertools.pairwise([*starts, len(window)]), range(0, len(encoding.ids), limit), strict=True
        ):
            if b > a:
                out.append((window[a:b], min(limit, len(encoding.ids) - first)))
    return out or [(text, count_tokens(text))]


# A chunk may not be longer than this many characters per token of budget, whatever the tokenizer says.
MAX_CHARS_PER_TOKEN = 10


def _cost(text: str, tokens: int) -> int:
    """A piece's size against a token budget: its tokens, or its length in units of MAX_CHARS_PER_TOKEN characters
    when that is more (a run the tokenizer reads as one unknown token still takes room)."""
    return max(tokens, -(-len(text) // MAX_CHARS_PER_TOKEN))


def _pieces(
    text: str, limit: int, separators: tuple[str, ...] = SEPARATORS, *, cost: int | None = None
) -> list[tuple[str, int]]:
    """Split ``text`` into (piece, cost) with every piece's cost (``_cost``) at most ``limit``, on the coarsest
    separator. Text too long to fit is never tokenized whole, so each level of separators reads the text at most
    once: linear in the text, whatever it holds (a 1 MB line without spaces included)."""
    if cost is None and len(text) <= limit * MAX_CHARS_PER_TOKEN:
        cost = _cost(text, count_tokens(text))
    if cost is not None and cost <= limit:
        return [(text, cost)]
    for index, sep in enumerate(separators):
        if sep in text:
            parts = _split_keep(text, sep)
            if len(parts) < 2:
                continue
            short = [part for part in parts if len(part) <= limit * MAX_CHARS_PER_TOKEN]
            counts = dict(zip(short, _count_many(short), strict=True))
            out: list[tuple[str, int]] = []
            for part in parts:
                count = counts.get(part)
                cost = _cost(part, count) if count is not None else None
                if cost is not None and cost <= limit:
                    out.append((part, cost))
                else:
                    out.extend(_pieces(part, limit, separators[index + 1 :], cost=cost))
            return out
    return [(p, _cost(p, tokens)) for p, tokens in _split_chars(text, limit)]


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


def chunk_sections(sections: list[Section], *, chunk_size: int = 400, overlap: int = 60) -> list[ChunkDraft]:
    """Chunks of about ``chunk_size`` tokens (heading included) with ``overlap`` tokens shared between neighbours.
    Consecutive sections with the same heading and page are merged before splitting."""
    chunk_size = max(int(chunk_size), 16)
    overlap = max(0, min(int(overlap), chunk_size // 2))
    merged: list[Section] = []
    for section in sections:
        text = section.text.strip()
        if not text:
            continue
        if merged and merged[-1].heading == section.heading and merged[-1].page == section.page:
            merged[-1] = Section(text=merged[-1].text + "\n\n" + text, page=section.page, heading=section.heading)
        else:
            merged.append(Section(text=text, page=section.page, heading=section.heading))
    drafts: list[ChunkDraft] = []
    for section in merged:
        heading_tokens = count_tokens(section.heading) + 1 if section.heading else 0
        budget = max(chunk_size - heading_tokens, chunk_size // 2)
        window: list[tuple[str, int]] = []
        size = 0

        for piece, tokens in _pieces(section.text, budget):  # ``tokens``: the piece's cost, characters included
            if window and size + tokens > budget:
                _emit(drafts, window, section)
                # carry the tail of the chunk just emitted (about ``overlap`` tokens) into the next one
                carried: list[tuple[str, int]] = []
                carried_size = 0
                for prev in reversed(window):
                    if carried_size + prev[1] > overlap:
                        # take the trailing sentences of a piece too large to carry whole
                        for sub in reversed(
                            _pieces(prev[0], max(overlap - carried_size, 1), SEPARATORS[2:], cost=prev[1])
                        ):
                            if carried_size + sub[1] > overlap:
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
