"""Each parser on small real files; hostile files are refused with a readable message."""

from __future__ import annotations

import itertools

import pytest

from knowledge.chunking import chunk_sections, count_tokens
from knowledge.parsing import DocumentRejected, Section, detect_type, parse_document
from knowledge.tests import files


def test_pdf_pages_and_text():
    parsed = parse_document(
        data=files.make_pdf(["Quarterly revenue grew.", "Second page about hiring."]), filename="r.pdf"
    )
    assert parsed.detected_type == "pdf"
    assert parsed.pages == 2
    assert [(s.page, s.text) for s in parsed.sections] == [
        (1, "Quarterly revenue grew."),
        (2, "Second page about hiring."),
    ]


def test_docx_headings_paragraphs_and_tables():
    data = files.make_docx(
        [("h1", "Leave policy"), ("p", "Everyone has 30 days."), ("h2", "Sick leave"), ("p", "Call your manager.")],
        table=[["Country", "Days"], ["France", "25"]],
    )
    parsed = parse_document(data=data, filename="policy.docx")
    assert parsed.detected_type == "docx"
    assert [(s.heading, s.text) for s in parsed.sections] == [
        ("Leave policy", "Everyone has 30 days."),
        ("Sick leave", "Call your manager.\n\nCountry | Days\n\nFrance | 25"),
    ]


def test_html_main_text_without_scripts_or_navigation():
    parsed = parse_document(data=files.HTML, filename="travel.html")
    assert parsed.detected_type == "html"
    text = "\n".join(s.text for s in parsed.sections)
    assert "trains for trips under 500 km" in text
    assert "Keep receipts" in text
    for junk in ("alert", "color:red", "Home", "Jobs", "Copyright"):
        assert junk not in text
    assert [s.heading for s in parsed.sections] == ["Travel policy", "Travel policy › Expenses"]  # the heading path


def test_markdown_heading_path_and_code_fences():
    parsed = parse_document(data=files.MARKDOWN, filename="onboarding.md")
    assert parsed.detected_type == "markdown"
    assert [s.heading for s in parsed.sections] == ["Onboarding", "Onboarding › Accounts"]
    assert "# not a heading inside code" in parsed.sections[1].text


def test_plain_text_and_csv():
    text = parse_document(data=b"Just some notes.\r\n\r\nSecond paragraph.", filename="notes.txt")
    assert text.detected_type == "text"
    assert text.sections[0].text == "Just some notes.\n\nSecond paragraph."
    table = parse_document(data=files.CSV, filename="people.csv")
    assert table.detected_type == "csv"
    assert table.sections[0].text.splitlines() == [
        "name: Alice; role: Engineer; office: Berlin",
        "name: Bob; role: Designer; office: Paris",
        "name: Carol; role: Manager; office: Rome",
    ]


def test_type_comes_from_content_not_extension():
    assert detect_type(files.make_pdf(["x"]), "looks-like.txt") == "pdf"
    assert detect_type(files.HTML, "page.txt") == "html"
    assert detect_type(files.make_docx([("p", "x")]), "file.pdf") == "docx"


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "empty.txt", "The file is empty."),
        (b"   \n\n  ", "blank.txt", "The file is empty."),
        (files.make_executable(), "invoice.pdf", "This file is a Windows program, not a document"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "report.pdf", "This file is a Linux program"),
        (b"%PDF-1.7\n1 0 obj garbage \x00\x01 endobj trailer <<>>\n%%EOF", "broken.pdf", "The PDF is damaged"),
        (files.make_encrypted_pdf(["secret numbers"]), "locked.pdf", "The PDF is password-protected"),
        (files.make_docx_bomb(60), "bomb.docx", "zip bomb"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "photo.pdf", "This file is a PNG image"),
        (b"PK\x03\x04garbage", "x.docx", "damaged"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, "old.doc", "Old Office formats"),
    ],
    ids=[
        "empty",
        "blank",
        "exe-renamed-pdf",
        "elf",
        "corrupt-pdf",
        "encrypted-pdf",
        "docx-zip-bomb",
        "png",
        "bad-zip",
        "ole",
    ],
)
def test_hostile_and_broken_files_are_refused_readably(data, name, message):
    with pytest.raises(DocumentRejected) as info:
        parse_document(data=data, filename=name)
    assert message in info.value.message


def test_pdf_page_cap(settings):
    settings.KNOWLEDGE_MAX_PAGES = 3
    with pytest.raises(DocumentRejected, match="has 4 pages; the limit is 3"):
        parse_document(data=files.make_pdf(["a", "b", "c", "d"]), filename="long.pdf")


def test_chunks_respect_size_overlap_heading_and_page():
    sentences = " ".join(f"Sentence number {i} describes the vacation policy in detail." for i in range(120))
    chunks = chunk_sections([Section(text=sentences, page=7, heading="Vacation")], chunk_size=100, overlap=15)
    assert len(chunks) > 5
    assert all(c.token_count <= 100 for c in chunks)
    assert all(c.page == 7 and c.heading == "Vacation" for c in chunks)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for prev, nxt in itertools.pairwise(chunks):
        shared = nxt.text.split(". ")[0]
        assert shared in prev.text  # consecutive chunks overlap
    # every sentence survives chunking
    joined = " ".join(c.text for c in chunks)
    assert all(f"Sentence number {i} " in joined for i in range(120))


def test_long_run_without_spaces_is_still_split():
    chunks = chunk_sections([Section(text="x" * 5000)], chunk_size=64, overlap=0)
    assert len(chunks) > 1
    assert all(count_tokens(c.text) <= 64 for c in chunks)


def test_a_dense_run_without_spaces_is_cut_at_the_token_limit():
    """A row of quotes is one token per character: character windows alone gave chunks of four times the limit."""
    text = '"' * 5_000
    chunks = chunk_sections([Section(text=text)], chunk_size=64, overlap=8)
    assert all(c.token_count <= 64 for c in chunks)
    assert sum(len(c.text) for c in chunks) >= len(text)


def test_the_overlap_never_carries_a_long_run_into_every_chunk():
    """A 200 KB line without spaces: the overlap is counted in characters too (it carried about 60 windows of
    1,600 characters into every chunk, so 1 MB became 60 MB to tokenize)."""
    text = "word" * 50_000
    chunks = chunk_sections([Section(text=text)], chunk_size=400, overlap=60)
    assert all(len(c.text) <= 400 * 10 for c in chunks)
    assert len(text) <= sum(len(c.text) for c in chunks) <= 1.5 * len(text)


def test_a_csv_header_cannot_multiply_the_text():
    """Every value is labelled with its column's name: a 100,000-character header cell over many rows made the text
    grow with the header times the rows (1 MB from 200 KB). Names are cut; labels stop once the text outgrows it."""
    data = b'"' + b"h" * 100_000 + b'",b\n' + b"a,b\n" * 5_000
    parsed = parse_document(data=data, filename="wide.csv")
    text = parsed.sections[0].text
    assert len(text) <= 4 * len(data)
    assert text.startswith("h" * 64 + ": a; b: b\n")
    assert text.endswith("\na; b")  # the last rows without labels, still every value


def test_csv_rows_keep_their_labels_in_ordinary_files():
    parsed = parse_document(data=b"name,city\nAnna,Oslo\nPeter,Lima\n", filename="people.csv")
    assert parsed.sections[0].text == "name: Anna; city: Oslo\nname: Peter; city: Lima"
