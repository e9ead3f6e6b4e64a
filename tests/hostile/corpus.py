"""The hostile-input corpus: generated files and texts built to stall parsers, regexes and the NER (nested
brackets and punctuation runs, zero-width and combining marks, 1 MB single lines, deep HTML nesting, entity
expansion in DOCX XML, PDFs with huge object streams, CSV with 100,000 columns, and the exponential or cubic
regex shapes found in the code). Used by tests/hostile and bench/bench_hostile.py."""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes  # the file's bytes (texts: UTF-8)
    filename: str = "upload.txt"

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def _docx(document_xml: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'wordprocessingml.document.main+xml"/></Types>',
        )
        zf.writestr(
            "_rels/.rels",
            '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'officeDocument" Target="word/document.xml"/></Relationships>',
        )
        zf.writestr("word/document.xml", document_xml)
    return buffer.getvalue()


def _billion_laughs_docx() -> bytes:
    entities = '<!ENTITY lol0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE w:document [{entities}]>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
        "<w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>"
    )
    return _docx(xml.encode())


def _deep_docx() -> bytes:
    depth = 20_000
    xml = (
        '<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        "<w:body>" + "<w:sdt><w:sdtContent>" * depth + "<w:p><w:r><w:t>deep</w:t></w:r></w:p>"
        "</w:sdtContent></w:sdt>" * depth + "</w:body></w:document>"
    )
    return _docx(xml.encode())


def _pdf(objects: list[bytes]) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def _pdf_huge_object_stream() -> bytes:
    """An object stream that claims a million objects, and a page whose content stream inflates to 200 MB."""
    header = b" ".join(b"%d %d" % (100 + i, i * 2) for i in range(2000))
    objstm_body = header + b" " + b"<<>> " * 2000
    objstm = zlib.compress(objstm_body)
    bomb = zlib.compress(b"0 0 m " * (200 * MB // 6), 9)
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(bomb) + bomb + b"\nendstream",
            b"<< /Type /ObjStm /N 1000000 /First %d /Length %d /Filter /FlateDecode >>\nstream\n"
            % (len(header) + 1, len(objstm))
            + objstm
            + b"\nendstream",
        ]
    )


def _pdf_deep_arrays() -> bytes:
    nested = b"[" * 50_000 + b"]" * 50_000
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R /Deep " + nested + b" >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )


def text_cases() -> list[Case]:
    """Texts for every door that takes text (guards, search, chat); each at most 100,000 characters."""
    return [
        Case("open-parens-8k", b"(" * 8_000),
        Case("nested-brackets-8k", b"([{<" * 1_000 + b">}])" * 1_000),
        Case("open-parens-100k", b"(" * 100_000),
        Case("punctuation-runs-100k", b"-.,;:!?" * 14_285),
        Case("zero-width-and-combining-100k", ("a\u200b\u0301\u200d\u0300" * 20_000).encode()),
        Case("one-100k-token", b"x" * 100_000),
        Case("digits-spaced-100k", b"1 " * 50_000),
        Case("email-shapes-100k", b"a.a.a.@" * 14_285),
        Case("url-shapes-100k", b"http://a." * 11_111),
        Case("phone-shapes-100k", b"(555) 01-" * 11_111),
        Case("html-comment-prologue", b"<!---->" * 1_000 + b"x"),
        Case("markdown-heading-spaces", b"# a" + b" " * 30_000 + b"x"),
        Case("markdown-heading-hashes", b"## a" + b" #" * 30_000 + b"x"),
        Case("injection-repeats-100k", b"ignore previous instructions " * 3_448),
        Case("spaced-letters-100k", b"i g n o r e " * 8_333),
        Case("base64-ish-100k", b"QUJD" * 25_000),
        Case("names-100k", b"Dr. John Smith and Mary Ann O'Neil met in Paris. " * 2_000),
        Case("markdown-links-100k", b"[a](" * 25_000),
        Case("fences-100k", b"```" * 33_333),
        Case("inline-code-100k", b"`a" * 50_000),
        Case("backticks-100k", b"`" * 100_000),
        Case("open-brackets-100k", b"[" * 100_000),
        Case("image-openers-100k", b"![" * 50_000),
        Case("definition-lines-100k", b"\n[" * 50_000),
        Case("hidden-spans-100k", b'<span style="display:none">' * 3_703),
        Case("letter-comma-100k", b"a," * 50_000),
        Case("spaced-capitals-100k", b"I G N O R E " * 8_333),
        Case("names-unique-100k", unique_names_text(100_000).encode()),
    ]


def file_cases() -> list[Case]:
    """Files for upload/parse/chunk."""
    return [
        *[Case(c.name, c.data, "notes.txt") for c in text_cases()[:6]],
        Case("single-line-1mb-txt", b"word" * (MB // 4), "line.txt"),
        Case("single-line-1mb-md", b"# " + b"a " * (MB // 2), "line.md"),
        Case("html-comment-prologue-file", b"<!---->" * 5_000 + b"<html><body>x</body></html>", "page.html"),
        Case("markdown-heading-file", b"# a" + b" " * 100_000 + b"x\n\ntext\n", "notes.md"),
        Case("deep-html-nesting", b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000, "deep.html"),
        Case("deep-html-unclosed", b"<html><body>" + b"<b><i>" * 100_000 + b"x", "unclosed.html"),
        Case("docx-entity-expansion", _billion_laughs_docx(), "laughs.docx"),
        Case("docx-deep-nesting", _deep_docx(), "deep.docx"),
        Case("pdf-huge-object-stream", _pdf_huge_object_stream(), "objstm.pdf"),
        Case("pdf-deep-arrays", _pdf_deep_arrays(), "deep.pdf"),
        Case(
            "csv-100k-columns",
            b",".join(b"c%d" % i for i in range(100_000)) + b"\n" + b"1," * 99_999 + b"1\n",
            "wide.csv",
        ),
        Case("csv-quotes", b'"' * 200_000 + b"\n" + b"a,b\n" * 10, "quotes.csv"),
    ]


_SURNAMES = [
    "Smith",
    "Johnson",
    "Garcia",
    "Müller",
    "Kowalski",
    "Nguyen",
    "O'Neil",
    "Brown",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Schmidt",
    "Okafor",
    "Silva",
    "Novak",
    "Berg",
    "Jensen",
    "Horvat",
    "Costa",
    "Ivanova",
    "Larsen",
    "Moreau",
    "Kim",
    "Patel",
    "Haddad",
    "Fischer",
    "Romero",
    "Weber",
    "Sato",
    "Lindqvist",
]
_PLACES = [
    "Paris",
    "Berlin",
    "London",
    "Warsaw",
    "Austin",
    "Madrid",
    "Tokyo",
    "Lagos",
    "Oslo",
    "Vienna",
    "Chicago",
    "Lisbon",
    "Prague",
    "Dublin",
    "Nairobi",
    "Lima",
    "Seoul",
    "Zagreb",
    "Porto",
    "Hamburg",
]
_GIVEN = [
    "Anna",
    "Peter",
    "Maria",
    "John",
    "Olga",
    "Ahmed",
    "Chen",
    "Lucia",
    "Tomasz",
    "Ingrid",
    "Kofi",
    "Priya",
    "Mateo",
    "Sofia",
    "Yuki",
    "Lars",
    "Amara",
    "Jonas",
    "Elif",
    "Hugo",
    "Nadia",
    "Omar",
    "Greta",
    "Felix",
    "Rosa",
    "Dmitri",
    "Leila",
    "Pablo",
    "Hanna",
    "Tariq",
]
_VERBS = ("met", "called", "wrote to", "visited", "thanked", "emailed", "interviewed", "replaced")
_TIMES = ("on Monday", "in May", "last week", "at noon", "yesterday", "in 2019", "after lunch", "before the audit")


def unique_names_text(chars: int) -> str:
    """Sentences that never repeat (so nothing is read once for many), dense with names and places: the most work
    for the NER per character of ordinary-looking text. Deterministic."""
    out: list[str] = []
    size = 0
    i = 0
    while size < chars:
        a, b, c, d = i % 30, (i * 7 + 3) % 30, (i * 11 + 5) % 30, (i * 13 + 1) % 30
        sentence = (
            f"{_GIVEN[a]} {_SURNAMES[b]} {_VERBS[i % 8]} {_GIVEN[c]} {_SURNAMES[d]} in {_PLACES[i % 20]} "
            f"{_TIMES[(i // 8) % 8]} (case {i}). "
        )
        out.append(sentence)
        size += len(sentence)
        i += 1
    return "".join(out)[:chars]
