"""Checks on model output: unsafe markdown, canary leaks, groundedness. Pure functions, no I/O."""

from __future__ import annotations

import bisect
import html
import re
import secrets
import unicodedata
from dataclasses import dataclass

import nh3
import re2

from guardrails.vault import PLACEHOLDER_RE

# --- markdown -------------------------------------------------------------------------------------------------
# Every pattern below runs on model output (which a prompt injection can shape), so each is linear in the text: the
# link and image patterns run with RE2 (no backtracking; ``\s`` spelled out, RE2's is ASCII only), code spans are
# found by code. (With Python's re, 100,000 backticks or "[" took minutes.)
_FENCE_RE = re.compile(r"(^|\n)(```|~~~)[^\n]*\n.*?(\n\2[ \t]*(?=\n|$)|$)", re.DOTALL)
_BACKTICKS_RE = re.compile(r"`+")
_WS = r"\t\n\x0b\f\r \x1c-\x1f\x85\p{Z}"  # what Python's \s matches in a str
_URL = rf"((?:[^()<>{_WS}]|\([^(){_WS}]*\))*)"
_TITLE = rf"(?:[{_WS}]+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?[{_WS}]*\)"
_IMAGE_RE = re2.compile(rf"!\[([^\]]*)\]\([{_WS}]*<?{_URL}>?{_TITLE}")
_IMAGE_REF_RE = re2.compile(r"!\[([^\]]*)\]\[([^\]]*)\]")
# A link, or (first group "!") what is left of an image: images are handled first, so that one is left as it is.
_LINK_RE = re2.compile(rf"(!?)\[([^\]]*)\]\([{_WS}]*<?{_URL}>?{_TITLE}")
_REF_DEF_RE = re2.compile(rf"(?m)^[ ]{{0,3}}\[([^\]]+)\]:[{_WS}]*<?([^{_WS}]+?)>?(?:[{_WS}]+.*)?$")
_AUTOLINK_RE = re2.compile(rf"<([a-zA-Z][a-zA-Z0-9+.\-]{{1,31}}:[^<>{_WS}]*)>")
_SAFE_SCHEMES = {"http", "https", "mailto"}
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


def code_spans(text: str) -> list[tuple[int, int]]:
    """Inline code spans as CommonMark reads them: a run of n backticks up to the next run of exactly n backticks
    (a run without a partner is plain text). O(r log r) in the r backtick runs, whatever the text holds."""
    runs = [(m.start(), m.end()) for m in _BACKTICKS_RE.finditer(text)]
    by_length: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(runs):
        by_length.setdefault(end - start, []).append(index)
    spans: list[tuple[int, int]] = []
    index = 0
    while index < len(runs):
        start, end = runs[index]
        same = by_length[end - start]
        partner = bisect.bisect_right(same, index)
        if partner == len(same):
            index += 1
            continue
        closing = same[partner]
        spans.append((start, runs[closing][1]))
        index = closing + 1
    return spans


@dataclass(frozen=True)
class SanitizeResult:
    text: str
    removed: dict[str, int]


def _scheme(url: str) -> str | None:
    cleaned = html.unescape(url)
    cleaned = "".join(ch for ch in cleaned if not (ch.isspace() or unicodedata.category(ch) in {"Cc", "Cf"}))
    if cleaned.startswith("//"):
        return "//"
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):", cleaned)
    return m.group(1).lower() if m else None


def _strip_html(segment: str) -> tuple[str, bool]:
    current = segment
    for _ in range(4):
        cleaned = html.unescape(nh3.clean(current, tags=set(), strip_comments=True))
        if cleaned == current:
            break
        current = cleaned
    else:
        current = html.escape(current, quote=False)
    return current, current != segment


def sanitize_markdown(text: str) -> SanitizeResult:
    """Remove images, links with unsafe schemes and raw HTML outside code; placeholders and code are kept."""
    removed: dict[str, int] = {}
    protected: list[str] = []

    def protect(m: re.Match[str]) -> str:
        protected.append(m.group(0))
        return _SENTINEL.format(len(protected) - 1)

    def protect_spans(work: str, spans: list[tuple[int, int]]) -> str:
        pieces: list[str] = []
        done = 0
        for start, end in spans:
            protected.append(work[start:end])
            pieces += [work[done:start], _SENTINEL.format(len(protected) - 1)]
            done = end
        return "".join([*pieces, work[done:]])

    work = text.replace("\ue000", "").replace("\ue001", "")
    work = _FENCE_RE.sub(protect, work)
    work = protect_spans(work, code_spans(work))
    work = PLACEHOLDER_RE.sub(protect, work)

    def bump(kind: str) -> None:
        removed[kind] = removed.get(kind, 0) + 1

    def image(m: re2._Match[str]) -> str:
        bump("images")
        alt = m.group(1).strip()
        return f"[image: {alt}]" if alt else "[image removed]"

    work = _IMAGE_RE.sub(image, work)
    work = _IMAGE_REF_RE.sub(image, work)

    def link(m: re2._Match[str]) -> str:
        scheme = _scheme(m.group(3))
        if m.group(1) or scheme is None or scheme in _SAFE_SCHEMES:
            return m.group(0)
        bump("unsafe_links")
        return m.group(2)

    work = _LINK_RE.sub(link, work)

    def ref_def(m: re2._Match[str]) -> str:
        scheme = _scheme(m.group(2))
        if scheme is None or scheme in _SAFE_SCHEMES:
            return m.group(0)
        bump("unsafe_links")
        return ""

    work = _REF_DEF_RE.sub(ref_def, work)

    def autolink(m: re2._Match[str]) -> str:
        scheme = _scheme(m.group(1))
        if scheme in _SAFE_SCHEMES:
            return m.group(0)
        bump("unsafe_links")
        return ""

    work = _AUTOLINK_RE.sub(autolink, work)
    if "<" in work or "&" in work:
        stripped, changed = _strip_html(work)
        if changed and re.search(r"<[a-zA-Z!/?]", work):
            bump("html")
        work = stripped
    work = _SENTINEL_RE.sub(lambda m: protected[int(m.group(1))], work)
    return SanitizeResult(text=work, removed=removed)


# --- canary ---------------------------------------------------------------------------------------------------
def canary_new() -> str:
    """A random marker for the system prompt; if it shows up in an answer, the prompt leaked."""
    return f"cnry-{secrets.token_hex(8)}"


def canary_leaked(text: str, canary: str) -> bool:
    if not canary:
        return False
    squashed = re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text)).lower()
    needle = re.sub(r"[\W_]+", "", canary).lower()
    return canary in text or (len(needle) >= 8 and needle in squashed)


# --- groundedness ---------------------------------------------------------------------------------------------
_STOP_WORDS = """a an and are as at be been but by can could did do does for from had has have he her his how i if in
into is it its just may me more most my no not of on or our out over she should so some such than that the their
them then there these they this those to too under up us was we were what when where which who why will with
would you your also about after all any because before between both each few here only other own same very
der die das und ist nicht ein eine zu den von mit sich des auf für im dem es an auch als da wie bei"""
_STOP = frozenset(_STOP_WORDS.split())
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[<*])|\n+")
_CITATION_RE = re.compile(r"\[(\d{1,3})\]")
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
MIN_CONTENT_WORDS = 3
SUPPORT_THRESHOLD = 0.5


def _stem(word: str) -> str:
    for suffix in ("ingly", "edly", "ing", "ed", "ies", "es", "ly", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _content_words(text: str) -> set[str]:
    text = PLACEHOLDER_RE.sub(" ", text)
    return {_stem(w) for w in (m.group(0).lower() for m in _WORD_RE.finditer(text)) if w not in _STOP and len(w) > 1}


def groundedness(answer: str, sources: list[str]) -> float | None:
    """Share of answer sentences whose content words are mostly (≥ 50 %) found in a cited source.

    A sentence citing [n] is checked against source n (1-based) when it exists, otherwise against all sources.
    Sentences with fewer than three content words (greetings, headings) are not counted. None without sources.
    """
    if not sources:
        return None
    source_words = [_content_words(s) for s in sources]
    considered = supported = 0
    for sentence in _SENTENCE_RE.split(answer):
        cited = [int(n) for n in _CITATION_RE.findall(sentence) if 1 <= int(n) <= len(sources)]
        words = _content_words(_CITATION_RE.sub(" ", sentence))
        if len(words) < MIN_CONTENT_WORDS:
            continue
        considered += 1
        pool = [source_words[n - 1] for n in cited] if cited else source_words
        best = max(len(words & sw) / len(words) for sw in pool)
        if best >= SUPPORT_THRESHOLD:
            supported += 1
    if considered == 0:
        return 1.0
    return round(supported / considered, 4)
