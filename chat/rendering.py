"""Model output is untrusted: markdown is rendered with raw HTML disabled, then sanitized with nh3 (an allowlist of
tags; only http, https and mailto links; no images, so nothing remote loads), and ``[n]`` becomes a link to
the message's footnote n."""

from __future__ import annotations

import re
from typing import Any

import nh3
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_md.disable("image")

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "sup", "del",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title", "class"}, "sup": {"class"}, "ol": {"start"}, "code": {"class"}}
_CITE = re.compile(r"\[(\d{1,3})\]")
_PRE = re.compile(r"(<pre>.*?</pre>|<code>.*?</code>)", re.S)


def _link_citations(html: str, *, numbers: set[int], anchor: str) -> str:
    def repl(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n not in numbers:
            return m.group(0)
        return f'<sup class="cite"><a class="cite" href="#{anchor}-{n}">[{n}]</a></sup>'

    parts = _PRE.split(html)
    return "".join(part if i % 2 else _CITE.sub(repl, part) for i, part in enumerate(parts))


def render_markdown(text: str, *, citations: list[dict[str, Any]] | None = None, anchor: str = "cite") -> SafeString:
    html = _md.render(text or "")
    numbers = {int(c["n"]) for c in citations or [] if str(c.get("n", "")).isdigit()}
    if numbers:
        html = _link_citations(html, numbers=numbers, anchor=anchor)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitized by nh3 just above


def document_url(citation: dict[str, Any]) -> str:
    """Where a citation points: the document's page, opened at the cited passage (highlighted), or at its page when
    the citation names no passage; else the knowledge base's document list scrolled to the document's row."""
    page = citation.get("page")
    kb_id, doc_id, chunk_id = citation.get("knowledge_base_id"), citation.get("document_id"), citation.get("chunk_id")
    query = f"?document={doc_id}" + (f"&page={page}" if page else "")
    try:
        url = reverse("knowledge:document", kwargs={"kb_id": kb_id, "doc_id": doc_id})
        if isinstance(chunk_id, int):
            return f"{url}?chunk={chunk_id}#chunk-{chunk_id}"
        return url + (f"#page-{page}" if page else "")
    except NoReverseMatch:
        pass
    try:
        return reverse("knowledge:detail", kwargs={"kb_id": kb_id}) + f"{query}#doc-{doc_id}"
    except NoReverseMatch:
        return f"/knowledge/{query}"
