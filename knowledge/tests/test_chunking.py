"""Chunks that stand on their own: no title-and-metadata chunk, CSV chunks that start at a row, plain-text headings."""

from __future__ import annotations

from knowledge.chunking import LEAD_MAX_TOKENS, chunk_sections, count_tokens
from knowledge.parsing import Section, parse_document, text_sections

POLICY_MD = b"""# Business Travel Policy

Policy ID: FIN-TRV-004
Owner: Finance Department
Effective: 1 March 2025

## Daily allowances

The per diem covers meals and local transport. London pays 75 EUR a day.

## Private car

Employees who use their own car receive 0.32 EUR per kilometre.
"""


def _chunks(data: bytes, name: str, **kwargs: int) -> list:
    return chunk_sections(parse_document(data=data, filename=name).sections, **kwargs)


def test_a_title_and_metadata_block_is_merged_into_the_section_it_heads():
    chunks = _chunks(POLICY_MD, "travel.md")
    assert [c.heading for c in chunks] == [
        "Business Travel Policy › Daily allowances",
        "Business Travel Policy › Private car",
    ]
    first = chunks[0]
    assert first.text.startswith("Policy ID: FIN-TRV-004")  # the metadata opens the section it heads
    assert "London pays 75 EUR a day." in first.text
    assert all("London" in c.text or "kilometre" in c.text for c in chunks)  # no chunk of metadata alone


def test_a_long_introduction_stays_a_chunk_of_its_own():
    intro = " ".join(f"Sentence {i} explains why the company travels responsibly." for i in range(12))
    assert count_tokens(intro) > LEAD_MAX_TOKENS
    data = f"# Travel\n\n{intro}\n\n## Trains\n\nSecond class for short trips.\n".encode()
    chunks = _chunks(data, "t.md")
    assert [c.heading for c in chunks] == ["Travel", "Travel › Trains"]


def test_the_text_before_the_first_heading_joins_the_first_section():
    chunks = chunk_sections([Section(text="Version 3.2"), Section(text="Use the VPN.", heading="Remote access")])
    assert [(c.heading, c.text) for c in chunks] == [("Remote access", "Version 3.2\n\nUse the VPN.")]


def test_a_short_section_that_heads_nothing_is_kept():
    """Sibling sections are not merged, however short: each is its own topic."""
    chunks = chunk_sections(
        [Section(text="Lunch costs 3.50 EUR.", heading="Benefits › Meals"), Section(text="40 EUR.", heading="Gym")]
    )
    assert [c.heading for c in chunks] == ["Benefits › Meals", "Gym"]


def test_csv_chunks_start_at_a_row_carry_the_header_and_split_no_row():
    header = "cost_centre,department,site,headcount,annual_budget_eur"
    rows = [f"CC-{4100 + i},Department number {i},Site {i % 5},{i + 3},{(i + 1) * 9500}" for i in range(80)]
    chunks = _chunks(("\n".join([header, *rows]) + "\n").encode(), "cost-centres.csv", chunk_size=120, overlap=30)
    assert len(chunks) > 4
    seen: list[str] = []
    for chunk in chunks:
        assert chunk.heading == "cost_centre, department, site, headcount, annual_budget_eur"
        assert chunk.embedding_text.startswith(chunk.heading + "\n")  # the header is embedded with every chunk
        assert chunk.token_count <= 120
        lines = chunk.text.split("\n")
        for line in lines:  # every line is one whole row, its key first
            assert line.startswith("cost_centre: CC-") and line.count("; ") == 4, line
        seen.extend(line.split(";")[0] for line in lines)
    # every row exactly once: no overlap between row chunks, nothing lost
    assert seen == [f"cost_centre: CC-{4100 + i}" for i in range(80)]


def test_a_row_longer_than_a_chunk_is_still_split():
    header = "id,notes"
    long_row = "R-1," + " ".join(f"word{i}" for i in range(400))
    chunks = _chunks(f"{header}\n{long_row}\nR-2,short\n".encode(), "notes.csv", chunk_size=64, overlap=10)
    assert len(chunks) > 2 and all(c.token_count <= 64 for c in chunks)
    assert chunks[-1].text == "id: R-2; notes: short"


def test_plain_text_headings_from_its_structure():
    text = """PARENTAL LEAVE GUIDELINES
HR-PL-007 / Human Resources

1. PURPOSE

These guidelines describe the leave granted to new parents.

2. BIRTH PARENT LEAVE

The birth parent receives 18 weeks of leave on full pay.

2.1 Unpaid extension

A further 8 weeks of unpaid leave may be taken.
"""
    sections = text_sections(text)
    assert [s.heading for s in sections] == [
        "PARENTAL LEAVE GUIDELINES",
        "PARENTAL LEAVE GUIDELINES › 1. PURPOSE",
        "PARENTAL LEAVE GUIDELINES › 2. BIRTH PARENT LEAVE",
        "PARENTAL LEAVE GUIDELINES › 2. BIRTH PARENT LEAVE › 2.1 Unpaid extension",
    ]
    assert sections[2].text == "The birth parent receives 18 weeks of leave on full pay."
    chunks = chunk_sections(parse_document(data=text.encode(), filename="leave.txt").sections)
    assert chunks[0].heading == "PARENTAL LEAVE GUIDELINES › 1. PURPOSE"  # the title block merged into it
    assert chunks[0].text.startswith("HR-PL-007 / Human Resources")


def test_underlined_and_short_opening_lines_are_headings():
    text = """Remote Work Policy
==================
HR-RW-011

Eligibility
-----------
Employees who completed their probation may work remotely.

Working from abroad
Working from another country is allowed for up to 20 working days per year.

Working hours
Remote employees are reachable during core hours, from 10:00 to 15:00.
"""
    assert [s.heading for s in text_sections(text)] == [
        "Remote Work Policy",
        "Remote Work Policy › Eligibility",
        "Remote Work Policy › Working from abroad",
        "Remote Work Policy › Working hours",
    ]


def test_prose_lists_and_wrapped_paragraphs_are_not_headings():
    wrapped = (
        "Claims are submitted in the expense app within thirty days of the\n"
        "expense, and claims submitted later than ninety days are rejected by\n"
        "the finance team without exception.\n\n"
        "Steps to follow\n"
        "1. Open the app on your phone\n"
        "2. Photograph the receipt and add a short description of the purpose\n"
    )
    assert [s.heading for s in text_sections(wrapped)] == [""]  # one lone short line is no structure
    assert text_sections("Just some notes.\n\nSecond paragraph.") == [
        Section(text="Just some notes.\n\nSecond paragraph.")
    ]
