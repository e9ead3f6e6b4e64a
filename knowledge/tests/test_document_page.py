"""The document page a citation opens: tenant-scoped (permission matrix), in reading order, the cited passage
highlighted once, with the overlap between chunks shown once."""

from __future__ import annotations

import pytest

from knowledge.models import Chunk, KnowledgeBase
from knowledge.selectors import document_segments
from knowledge.services import knowledge_base_create
from knowledge.tests.conftest import ingest, upload

pytestmark = pytest.mark.django_db

WHO = ["anonymous", "other_tenant", "viewer", "member", "admin"]

POLICY = b"""# Travel policy

Policy ID: FIN-TRV-004

## Daily allowances

The per diem in London is 75 EUR. The per diem in Paris is 68 EUR.

## Private car

Employees who use their own car receive 0.32 EUR per kilometre.
"""


@pytest.fixture
def doc(kb):
    return ingest(upload(kb, "travel.md", POLICY))


@pytest.mark.parametrize("who", WHO)
def test_the_document_page_permission_matrix(world, kb, doc, login_client, who):
    chunk = Chunk.objects.for_tenant(world.tenant).get(document=doc, heading="Travel policy › Private car")
    response = login_client(world.user(who)).get(f"/knowledge/{kb.pk}/documents/{doc.pk}/?chunk={chunk.pk}")
    if who == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        return
    if who == "other_tenant":
        assert response.status_code == 404  # another department's document: the same answer as a missing one
        assert b"kilometre" not in response.content
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="document-title">travel.md<' in html
    assert html.count('data-testid="cited-passage"') == 1
    cited = html.split('data-testid="cited-passage"', 1)[1].split("</div>", 1)[0]
    assert f'id="chunk-{chunk.pk}"' in html and "0.32 EUR per kilometre" in cited and "London" not in cited
    assert "Policy ID: FIN-TRV-004" in html and "The per diem in London is 75 EUR." in html


def test_a_document_of_an_unreadable_knowledge_base_is_not_found(world, login_client):
    restricted = knowledge_base_create(
        tenant=world.tenant, actor=world.admin, name="Board", read_access="roles", read_roles=["admin"]
    )
    doc = ingest(upload(restricted, "minutes.md", b"# Minutes\n\nThe board met on Monday."))
    for who, status in (("viewer", 404), ("member", 404), ("admin", 200)):
        response = login_client(world.user(who)).get(f"/knowledge/{restricted.pk}/documents/{doc.pk}/")
        assert response.status_code == status, who


def test_a_document_is_only_found_under_its_own_knowledge_base(world, kb, doc, login_client):
    other: KnowledgeBase = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Other")
    response = login_client(world.member).get(f"/knowledge/{other.pk}/documents/{doc.pk}/")
    assert response.status_code == 404


def test_segments_read_as_the_document_and_a_cited_chunk_shows_its_overlap_once(world, login_client):
    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Long", chunk_size=64, chunk_overlap=16)
    text = " ".join(f"Rule {i} says that form {i} goes to office {i}." for i in range(60))
    doc = ingest(upload(kb, "rules.txt", text.encode()))
    segments = document_segments(document=doc)
    assert len(segments) > 3
    assert any(s.lead for s in segments[1:])  # the chunks overlap ...
    assert " ".join(s.text.strip() for s in segments).split() == text.split()  # ... and the segments do not
    cited = segments[2]
    response = login_client(world.viewer).get(f"/knowledge/{kb.pk}/documents/{doc.pk}/?chunk={cited.chunk_id}")
    html = response.content.decode()
    assert html.count("Rule 30 says") == 1
    assert cited.lead and html.count(cited.lead.strip()) == 1  # shown once, highlighted
    assert 'data-testid="cited-lead"' in html


def test_a_citation_links_to_the_cited_passage(world, kb, doc):
    from chat.rendering import document_url

    chunk = Chunk.objects.for_tenant(world.tenant).filter(document=doc).first()
    url = document_url({"knowledge_base_id": kb.pk, "document_id": doc.pk, "chunk_id": chunk.pk, "page": None})
    assert url == f"/knowledge/{kb.pk}/documents/{doc.pk}/?chunk={chunk.pk}#chunk-{chunk.pk}"
