"""Turn an uploaded file into text sections (text, page, heading). Uploaded files are untrusted.

The type comes from the content (magic bytes, then text sniffing); the extension is only a hint between text
formats. Every refusal raises ``DocumentRejected`` with a message a person understands; nothing is executed.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePath

import re2
from django.conf import settings

logger = logging.getLogger(__name__)


class DocumentRejected(Exception):
    """The file cannot be indexed; ``message`` says why in words a person understands."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass
class Section:
    text: str
    page: int | None = None
    heading: str = ""
    rows: bool = False  # one record per line (CSV): chunks start at a line and carry no partial-line overlap


@dataclass
class ParsedDocument:
    detected_type: str
    sections: list[Section] = field(default_factory=list)
    pages: int | None = None


TYPES = ("pdf", "docx", "html", "markdown", "text", "csv")

# Limits (settings may override): pages per PDF; DOCX zip guards.
MAX_PAGES = 2000
DOCX_MAX_UNCOMPRESSED = 200 * 1024 * 1024
DOCX_MAX_RATIO = 200
DOCX_MAX_ENTRIES = 5000

_EXECUTABLE_MAGIC = (
    (b"MZ", "a Windows program"),
    (b"\x7fELF", "a Linux program"),
    (b"\xfe\xed\xfa\xce", "a macOS program"),
    (b"\xfe\xed\xfa\xcf", "a macOS program"),
    (b"\xce\xfa\xed\xfe", "a macOS program"),
    (b"\xcf\xfa\xed\xfe", "a macOS program"),
    (b"\xca\xfe\xba\xbe", "a compiled program"),
    (b"#!", "a script"),
    (b"\x00asm", "a WebAssembly program"),
)
_BINARY_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"{\\rtf", "an RTF document"),
    (b"SQLite format 3", "a database file"),
)
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _limit(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def _ext(filename: str) -> str:
    return PurePath(filename or "").suffix.lower()


def detect_type(data: bytes, filename: str = "") -> str:
    """The document type from the content; raises ``DocumentRejected`` for what is not a supported document."""
    if not data or not data.strip():
        raise DocumentRejected("The file is empty.")
    head = data[:1024]
    if b"%PDF-" in head:
        return "pdf"
    for magic, what in _EXECUTABLE_MAGIC:
        if data.startswith(magic):
            raise DocumentRejected(f"This file is {what}, not a document; programs are never accepted.")
    if data.startswith(_OLE_MAGIC):
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise DocumentRejected("The Office document is password-protected; remove the password and upload again.")
        raise DocumentRejected(
            "Old Office formats (.doc, .xls, .ppt) are not supported; save the file as .docx or PDF and upload again."
        )
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = set(zf.namelist())
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            raise DocumentRejected("The file looks like a ZIP/Office file but is damaged.") from None
        if "word/document.xml" in names:
            return "docx"
        if any(n.startswith("xl/") for n in names):
            raise DocumentRejected("Excel workbooks are not supported; export the sheet as CSV and upload that.")
        if any(n.startswith("ppt/") for n in names):
            raise DocumentRejected("PowerPoint files are not supported; export them as PDF and upload that.")
        raise DocumentRejected("ZIP archives are not supported; upload the documents inside one by one.")
    for magic, what in _BINARY_MAGIC:
        if data.startswith(magic):
            raise DocumentRejected(f"This file is {what}; supported are PDF, Word (.docx), HTML, Markdown, text, CSV.")
    text = decode_text(data)
    return _text_subtype(text, filename)


def decode_text(data: bytes) -> str:
    sample = data[:8192]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentRejected("The text file's encoding could not be read.") from None
    if b"\x00" in sample:
        raise DocumentRejected(
            "This is a binary file of an unsupported type; supported are PDF, Word (.docx), HTML, Markdown, text, CSV."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    text = data.decode("cp1252", errors="replace")
    controls = sum(1 for ch in text[:8192] if ord(ch) < 32 and ch not in "\r\n\t\f")
    if controls > len(text[:8192]) * 0.01:
        raise DocumentRejected(
            "This is a binary file of an unsupported type; supported are PDF, Word (.docx), HTML, Markdown, text, CSV."
        )
    return text


# Patterns that run on uploaded text are linear-time: RE2 (no backtracking) or plain code. The old
# ``(<!--.*?-->\s*)*`` prologue and ``(.+?)\s*#*\s*$`` heading patterns backtracked exponentially / cubically.
_HTML_TAGS = re2.compile(r"(?i)<(p|div|h[1-6]|ul|ol|li|table|span|a|br|section|article)[\s>/]")
_NUMBER_CELL = re2.compile(r"[-+]?[\d.,%]+")


def _looks_like_html(text: str) -> bool:
    """``text`` starts (after blanks, an XML declaration and comments) with a doctype or an html/head/body tag."""
    pos = 0
    n = len(text)

    def skip_blank(at: int) -> int:
        while at < n and text[at].isspace():
            at += 1
        return at

    pos = skip_blank(pos)
    if text.startswith("<?xml", pos):
        end = text.find(">", pos)
        if end < 0:
            return False
        pos = skip_blank(end + 1)
    while text.startswith("<!--", pos):
        end = text.find("-->", pos + 4)
        if end < 0:
            return False
        pos = skip_blank(end + 3)
    head = text[pos : pos + 10].lower()
    if head.startswith("<!doctype"):
        after = pos + 9
        rest = skip_blank(after)
        return rest > after and text[rest : rest + 4].lower() == "html"
    for tag in ("<html", "<head", "<body"):
        if head.startswith(tag):
            return len(head) > len(tag) and (head[len(tag)].isspace() or head[len(tag)] == ">")
    return False


def markdown_heading(line: str) -> tuple[int, str] | None:
    """``(level, title)`` of an ATX heading line (``## Title ##``), in linear time; None when it is not one."""
    line = line.strip()
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    title = line[level:].strip()
    stripped = title.rstrip("#")
    if stripped != title and stripped and stripped[-1].isspace():
        title = stripped.strip()
    return (level, title) if title else None


def _text_subtype(text: str, filename: str) -> str:
    ext = _ext(filename)
    if _looks_like_html(text[:4096]):
        return "html"
    if ext in (".html", ".htm", ".xhtml") and _HTML_TAGS.search(text[:8192]):
        return "html"
    if ext in (".md", ".markdown", ".mdown"):
        return "markdown"
    if ext in (".csv", ".tsv"):
        return "csv"
    lines = text[:8192].splitlines()
    if any(markdown_heading(line) for line in lines[:200]):
        return "markdown"
    if ext not in (".txt", ".text", ".log") and _looks_like_csv(lines):
        return "csv"
    return "text"


def _looks_like_csv(lines: list[str]) -> bool:
    rows = [line for line in lines[:50] if line.strip()]
    if len(rows) < 3:
        return False
    for delim in (",", ";", "\t"):
        counts = {row.count(delim) for row in rows}
        if len(counts) == 1 and next(iter(counts)) >= 1:
            return True
    return False


# --- parsers ----------------------------------------------------------------------------------------------


def parse_document(*, data: bytes, filename: str) -> ParsedDocument:
    detected = detect_type(data, filename)
    parser = {
        "pdf": parse_pdf,
        "docx": parse_docx,
        "html": parse_html,
        "markdown": parse_markdown,
        "text": parse_text,
        "csv": parse_csv,
    }[detected]
    parsed = parser(data, filename)
    parsed.sections = [s for s in parsed.sections if s.text.strip()]
    if not parsed.sections:
        if detected == "pdf":
            raise DocumentRejected("No text could be found in the PDF (is it a scan without a text layer?).")
        raise DocumentRejected("The file has no text to index.")
    return parsed


def parse_pdf(data: bytes, filename: str = "") -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = bool(reader.decrypt(""))
            except (NotImplementedError, DependencyError):
                ok = False
            if not ok:
                raise DocumentRejected("The PDF is password-protected; remove the password and upload again.")
        page_count = len(reader.pages)
    except DocumentRejected:
        raise
    except FileNotDecryptedError:
        raise DocumentRejected("The PDF is password-protected; remove the password and upload again.") from None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError):
        raise DocumentRejected("The PDF is damaged and cannot be read.") from None
    max_pages = _limit("KNOWLEDGE_MAX_PAGES", MAX_PAGES)
    if page_count > max_pages:
        raise DocumentRejected(
            f"The PDF has {page_count:,} pages; the limit is {max_pages:,}. Split it and upload the parts."
        )
    if page_count == 0:
        raise DocumentRejected("The PDF is damaged and cannot be read (it has no pages).")
    outline = _pdf_outline(reader)
    sections: list[Section] = []
    heading = ""
    for number in range(page_count):
        heading = outline.get(number, heading)
        try:
            text = reader.pages[number].extract_text() or ""
        except FileNotDecryptedError:
            raise DocumentRejected("The PDF is password-protected; remove the password and upload again.") from None
        except Exception as exc:  # a damaged page: skip it, keep the rest
            logger.info("skipped an unreadable PDF page: %s", type(exc).__name__)
            continue
        sections.append(Section(text=_clean(text), page=number + 1, heading=heading))
    return ParsedDocument(detected_type="pdf", sections=sections, pages=page_count)


def _pdf_outline(reader: object) -> dict[int, str]:
    """First-level bookmark titles by page index (empty when the PDF has no usable outline)."""
    result: dict[int, str] = {}
    try:
        outline = reader.outline  # type: ignore[attr-defined]
        for item in outline[:500]:
            if isinstance(item, list):
                continue
            page = reader.get_destination_page_number(item)  # type: ignore[attr-defined]
            title = str(getattr(item, "title", "") or "").strip()
            if title and page is not None and page not in result:
                result[page] = title[:300]
    except Exception:
        return {}
    return result


def _docx_guard(data: bytes) -> None:
    """Refuse DOCX zip bombs before python-docx inflates anything: count, declared sizes, ratio, and the real
    inflated size (streamed with a ceiling, so a lying header does not help)."""
    ceiling = _limit("KNOWLEDGE_DOCX_MAX_UNCOMPRESSED", DOCX_MAX_UNCOMPRESSED)
    bomb = "The Word file expands to far more data than a document holds (a zip bomb); it was refused."
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if len(infos) > DOCX_MAX_ENTRIES:
                raise DocumentRejected(bomb)
            declared = sum(i.file_size for i in infos)
            if declared > ceiling:
                raise DocumentRejected(bomb)
            for info in infos:
                if info.compress_size and info.file_size / max(info.compress_size, 1) > DOCX_MAX_RATIO:
                    raise DocumentRejected(bomb)
            inflated = 0
            for info in infos:
                with zf.open(info) as member:
                    while True:
                        block = member.read(1 << 20)
                        if not block:
                            break
                        inflated += len(block)
                        if inflated > ceiling:
                            raise DocumentRejected(bomb)
    except DocumentRejected:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError):
        raise DocumentRejected("The Word file is damaged and cannot be read.") from None
    except RuntimeError:  # encrypted zip members
        raise DocumentRejected("The Word file is password-protected; remove the password and upload again.") from None


def parse_docx(data: bytes, filename: str = "") -> ParsedDocument:
    _docx_guard(data)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception:
        raise DocumentRejected("The Word file is damaged and cannot be read.") from None
    sections: list[Section] = []
    heading = ""
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            sections.append(Section(text="\n\n".join(buffer), heading=heading))
            buffer.clear()

    try:
        for block in document.iter_inner_content():
            if isinstance(block, Paragraph):
                text = block.text.strip()
                if not text:
                    continue
                style = (block.style.name if block.style is not None else "") or ""
                if style.startswith(("Heading", "Title")):
                    flush()
                    heading = text[:300]
                    continue
                buffer.append(text)
            elif isinstance(block, Table):
                for row in block.rows:
                    cells: list[str] = []
                    for cell in row.cells:
                        value = " ".join(cell.text.split())
                        if value and (not cells or cells[-1] != value):
                            cells.append(value)
                    if cells:
                        buffer.append(" | ".join(cells))
    except DocumentRejected:
        raise
    except Exception:
        raise DocumentRejected("The Word file is damaged and cannot be read.") from None
    flush()
    return ParsedDocument(detected_type="docx", sections=sections)


_HTML_DROP = (
    "script",
    "style",
    "noscript",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "iframe",
    "svg",
    "template",
    "button",
    "select",
    "object",
    "embed",
    "canvas",
)
_HTML_BLOCKS = {
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "pre",
    "blockquote",
    "section",
    "article",
    "main",
    "table",
    "tr",
    "td",
    "th",
    "dd",
    "dt",
    "dl",
    "figcaption",
    "br",
    "hr",
    "caption",
}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# Tags that never nest (void) or that the HTML parser closes by itself when the next one opens: they do not
# deepen the tree, so they are not counted by the nesting estimate below.
_HTML_FLAT = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
        "p",
        "li",
        "dt",
        "dd",
        "tr",
        "td",
        "th",
        "option",
        "thead",
        "tbody",
        "tfoot",
        "colgroup",
        "rb",
        "rt",
        "rp",
        "optgroup",
    ]
)
_HTML_TAG = re2.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,15})")
HTML_MAX_DEPTH = 1_000  # browsers cap the tree near 512 levels; real pages stay far below


def _html_depth_check(text: str) -> None:
    """Refuse HTML nested deeper than ``HTML_MAX_DEPTH`` (an estimate from open and close tags, linear time):
    the tree builder's time grows with the square of the depth (100,000 unclosed tags took a minute)."""
    depth = 0
    for match in _HTML_TAG.finditer(text):
        name = match.group(2).lower()
        if name in _HTML_FLAT:
            continue
        if match.group(1):
            depth = max(0, depth - 1)
            continue
        depth += 1
        if depth > HTML_MAX_DEPTH:
            raise DocumentRejected(
                f"The HTML file is nested more than {HTML_MAX_DEPTH:,} levels deep (tags left open), so it cannot be "
                "read. Save it again from a browser or an editor and upload that copy."
            )


def parse_html(data: bytes, filename: str = "") -> ParsedDocument:
    from bs4 import BeautifulSoup
    from bs4.element import Comment, NavigableString, Tag

    text = decode_text(data)
    _html_depth_check(text)
    try:
        soup = BeautifulSoup(text, "lxml")
    except Exception:
        raise DocumentRejected("The HTML file could not be read.") from None
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        if tag.get("role") in ("navigation", "banner", "contentinfo", "search") or tag.get("aria-hidden") == "true":
            tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    root = soup.find("main") or soup.find("article") or soup.body or soup
    sections: list[Section] = []
    heading = title[:300]
    path: list[tuple[int, str]] = []  # (level, title) of the enclosing headings
    lines: list[str] = []
    current: list[str] = []

    def end_line() -> None:
        line = " ".join("".join(current).split())
        if line:
            lines.append(line)
        current.clear()

    def flush() -> None:
        end_line()
        if lines:
            sections.append(Section(text="\n".join(lines), heading=heading))
            lines.clear()

    def walk(node: Tag) -> None:
        nonlocal heading
        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                current.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in ("title", "head"):
                continue
            if child.name in _HEADINGS:
                flush()
                name = " ".join(child.get_text(" ").split())[:300]
                if name:
                    level = int(child.name[1])
                    path[:] = [*(p for p in path if p[0] < level), (level, name)]
                    heading = " › ".join(t for _, t in path)[:300]
                continue
            block = child.name in _HTML_BLOCKS
            if block:
                end_line()
            walk(child)
            if block:
                end_line()

    walk(root)  # type: ignore[arg-type]
    flush()
    return ParsedDocument(detected_type="html", sections=sections)


def parse_markdown(data: bytes, filename: str = "") -> ParsedDocument:
    text = decode_text(data)
    sections: list[Section] = []
    heading_path: list[str] = []
    buffer: list[str] = []
    in_fence = False
    lines = text.splitlines()

    def heading() -> str:
        return " › ".join(heading_path)[:300]

    def flush() -> None:
        body = "\n".join(buffer).strip()
        if body:
            sections.append(Section(text=body, heading=heading()))
        buffer.clear()

    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
            buffer.append(line)
            continue
        if not in_fence:
            found = markdown_heading(stripped)
            if found:
                flush()
                level, title = found
                heading_path[:] = [*heading_path[: level - 1], title]
                continue
            nxt = lines[index + 1].strip() if index + 1 < len(lines) else ""
            if stripped and nxt and set(nxt) <= {"="} and len(nxt) >= 3 and len(buffer) == 0:
                flush()
                heading_path[:] = [stripped]
                continue
            if set(stripped) <= {"="} and len(stripped) >= 3 and not buffer:
                continue
        buffer.append(line)
    flush()
    return ParsedDocument(detected_type="markdown", sections=sections)


def parse_text(data: bytes, filename: str = "") -> ParsedDocument:
    """Plain text, with headings found in its structure (``text_sections``)."""
    return ParsedDocument(detected_type="text", sections=text_sections(_clean(decode_text(data))))


_NUMBERED = re2.compile(
    r"^(\d{1,3}(?:\.\d{1,3}){1,3}\.?|\d{1,3}[.)]|[A-Z]\.|(?:Section|Article|Chapter|Part) \d{1,3}[.:]?)\s+\S"
)
_HEADING_MAX_CHARS = 80
_HEADING_MAX_WORDS = 10
_SHORT_HEADING_CHARS = 50  # hard-wrapped paragraphs open with lines longer than this
_SHORT_HEADING_WORDS = 7
_SHORT = 100  # marks a short-line heading (level 2) until the text is known to hold several


def _heading_level(line: str, before: str, after: str) -> int:
    """The level (1, 2, 3...) of ``line`` as a plain-text heading, or 0 when it is body text. ``before`` and
    ``after`` are the neighbouring lines (blank: "").

    A heading is a line underlined with ``===`` (level 1) or ``---`` (level 2); a numbered line (``2.``, ``2.1``,
    ``Section 3``) standing alone or in capitals; a line in capitals after a blank line; or a short line without end
    punctuation that opens a longer paragraph after a blank line (level 2, kept only when the text has several).
    Headings are short and never end like a sentence."""
    if not line or len(line) > _HEADING_MAX_CHARS or len(line.split()) > _HEADING_MAX_WORDS:
        return 0
    if after and len(after) >= 3 and set(after) <= {"="}:
        return 1
    if after and len(after) >= 3 and set(after) <= {"-"}:
        return 2
    if line[-1] in ".,;:!?" or not any(ch.isalpha() for ch in line):
        return 0
    if before:  # a heading follows a blank line (or opens the text)
        return 0
    numbered = _NUMBERED.match(line)
    letters = [ch for ch in line if ch.isalpha()]
    if numbered is not None:
        dots = numbered.group(1).rstrip(".)").count(".")
        return 2 + dots if (not after or line.upper() == line) else 0
    if len(letters) >= 3 and all(ch.isupper() for ch in letters):
        return 2
    short = len(line) <= _SHORT_HEADING_CHARS and len(line.split()) <= _SHORT_HEADING_WORDS
    if short and line[0].isupper() and len(after) > len(line) + 10:
        return 2 + _SHORT
    return 0


def text_sections(text: str) -> list[Section]:
    """Split plain text at the headings its layout shows (see ``_heading_level``); the first heading, when it opens
    the text, is the title above all others. Text without any heading stays one section."""
    lines = text.split("\n")
    found: dict[int, int] = {}
    for i, line in enumerate(lines):
        before = lines[i - 1] if i > 0 else ""
        after = lines[i + 1] if i + 1 < len(lines) else ""
        level = _heading_level(line, before, after)
        if level:
            found[i] = level
    # a short line opening a paragraph is a heading only when the text has several (a lone one is a first line)
    several = sum(1 for level in found.values() if level > _SHORT) >= 2
    found = {i: level - _SHORT if level > _SHORT else level for i, level in found.items() if several or level < _SHORT}
    if not found:
        return [Section(text=text)]
    first = min(found)
    if not any(line.strip() for line in lines[:first]):
        found[first] = 0  # the title
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []

    def flush() -> None:
        chunk = "\n".join(body).strip()
        if chunk:
            sections.append(Section(text=chunk, heading=" › ".join(t for _, t in path)[:300]))
        body.clear()

    skip = False
    for i, line in enumerate(lines):
        if skip:
            skip = False
            continue
        if i in found:
            flush()
            level = found[i]
            path[:] = [*(p for p in path if p[0] < level), (level, line)]
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            skip = len(nxt) >= 3 and set(nxt) <= {"=", "-"}  # the underline
            continue
        body.append(line)
    flush()
    return sections


CSV_LABEL_CHARS = 64
CSV_MAX_GROWTH = 3


def parse_csv(data: bytes, filename: str = "") -> ParsedDocument:
    text = decode_text(data)
    sample = text[:16384]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if _ext(filename) == ".tsv" else csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error:
        raise DocumentRejected("The CSV file is malformed and cannot be read.") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DocumentRejected("The file has no text to index.")
    first = [cell.strip() for cell in rows[0]]
    looks_like_header = (
        len(rows) > 1
        and all(first)
        and len(set(first)) == len(first)
        and not any(_NUMBER_CELL.fullmatch(cell) for cell in first)
    )
    try:
        has_header = looks_like_header or csv.Sniffer().has_header(sample)
    except csv.Error:
        has_header = looks_like_header
    header = [h.strip() for h in rows[0]] if has_header else []
    body = rows[1:] if has_header else rows
    # Each value is labelled with its column's name, which repeats the header on every row: names are cut to
    # CSV_LABEL_CHARS and, once the text is CSV_MAX_GROWTH times the file, the remaining rows go unlabelled (a
    # 100,000-character header cell over 10 rows became 1 MB of text, and it grows with every row).
    labels = [name[:CSV_LABEL_CHARS] for name in header]
    budget = CSV_MAX_GROWTH * len(text)
    lines = []
    size = 0
    for row in body:
        if labels and size <= budget:
            parts = [f"{name}: {value.strip()}" for name, value in zip(labels, row, strict=False) if value.strip()]
        else:
            parts = [value.strip() for value in row if value.strip()]
        if parts:
            lines.append("; ".join(parts))
            size += len(lines[-1]) + 1
    heading = ", ".join(header)[:300] if header else ""
    sections = [Section(text="\n".join(lines), heading=heading, rows=True)] if lines else []
    return ParsedDocument(detected_type="csv", sections=sections)


_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()
