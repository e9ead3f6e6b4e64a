"""Knowledge pages: the permission matrix, upload through the page, the polled progress partial, search."""

from __future__ import annotations

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from knowledge.models import Document, KnowledgeBase
from knowledge.services import knowledge_base_create
from knowledge.tests.conftest import ingest, upload

pytestmark = pytest.mark.django_db

WHO = ["anonymous", "other_tenant", "viewer", "member", "admin", "owner"]
RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


def allowed(who, min_role):
    return who in RANK and RANK[who] >= RANK[min_role]


def denied_status(who):
    return {"anonymous": 302, "other_tenant": 404}.get(who, 403)


@pytest.fixture
def page(world, login_client):
    def _client(who):
        return login_client(world.user(who))

    return _client


@pytest.mark.parametrize("who", WHO)
def test_list_page(world, kb, page, who):
    response = page(who).get("/knowledge/")
    if who == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
        return
    assert response.status_code == 200
    html = response.content.decode()
    assert ("Policies" in html) == (who != "other_tenant")
    assert ('data-testid="kb-create"' in html) == (who in ("admin", "owner", "other_tenant"))


@pytest.mark.parametrize("who", WHO)
def test_detail_page(world, kb, page, who):
    response = page(who).get(f"/knowledge/{kb.pk}/")
    if not allowed(who, "viewer"):
        assert response.status_code == denied_status(who)
        return
    html = response.content.decode()
    assert response.status_code == 200 and "<h1>Policies</h1>" in html
    assert ('data-testid="upload-form"' in html) == allowed(who, "member")
    assert ('data-testid="kb-settings"' in html) == allowed(who, "admin")
    assert 'data-testid="kb-search"' in html


@pytest.mark.parametrize("who", WHO)
def test_upload_through_the_page(world, kb, page, who):
    response = page(who).post(
        f"/knowledge/{kb.pk}/upload",
        {
            "files": [
                SimpleUploadedFile("a.txt", b"Alpha notes."),
                SimpleUploadedFile("run.pdf", b"MZ\x90\x00" + b"\x00" * 64),
            ]
        },
        HTTP_HX_REQUEST="true",
    )
    if not allowed(who, "member"):
        assert response.status_code == {"anonymous": 401, "other_tenant": 404}.get(who, 403)
        assert not Document.objects.for_tenant(world.tenant).exists()
        return
    assert response.status_code == 200
    html = response.content.decode()
    docs = {d.filename: d for d in Document.objects.for_tenant(world.tenant)}
    assert set(docs) == {"a.txt", "run.pdf"}
    # queued documents make the partial poll itself every second, with a progress bar per file
    assert 'hx-trigger="every 1s"' in html
    assert re.search(r'<progress value="0" max="100" aria-label="a.txt 0%"', html)


def test_progress_partial_reflects_the_row_and_stops_polling_when_done(world, kb, page):
    doc = upload(kb, "steps.txt", b"Some text to index.")
    Document.objects.for_tenant(world.tenant).filter(pk=doc.pk).update(status="embedding", progress=57)
    html = page("viewer").get(f"/knowledge/{kb.pk}/documents", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 1s"' in html and 'value="57"' in html and "embedding" in html
    ingest(doc)
    html = page("viewer").get(f"/knowledge/{kb.pk}/documents", HTTP_HX_REQUEST="true").content.decode()
    assert "every 1s" not in html and "badge ok" in html and "<progress" not in html


def test_failed_file_shows_its_readable_error(world, kb, page):
    ingest(upload(kb, "invoice.pdf", b"MZ\x90\x00" + b"\x00" * 64))
    html = page("member").get(f"/knowledge/{kb.pk}/").content.decode()
    assert "This file is a Windows program, not a document; programs are never accepted." in html


@pytest.mark.parametrize("who", WHO)
def test_document_actions(world, kb, page, who):
    doc = ingest(upload(kb, "trains.txt", b"Employees book trains."))
    client = page(who)
    reindex = client.post(f"/knowledge/{kb.pk}/documents/{doc.pk}/reindex", HTTP_HX_REQUEST="true")
    if not allowed(who, "member"):
        assert reindex.status_code == {"anonymous": 401, "other_tenant": 404}.get(who, 403)
        deleted = client.post(f"/knowledge/{kb.pk}/documents/{doc.pk}/delete", HTTP_HX_REQUEST="true")
        assert deleted.status_code == reindex.status_code
        doc.refresh_from_db()
        assert doc.status == "indexed"
        return
    assert reindex.status_code == 200
    doc.refresh_from_db()
    assert doc.status == "queued"
    cancel = client.post(f"/knowledge/{kb.pk}/documents/{doc.pk}/cancel", HTTP_HX_REQUEST="true")
    assert cancel.status_code == 200 and "cancelled" in cancel.content.decode()
    deleted = client.post(f"/knowledge/{kb.pk}/documents/{doc.pk}/delete", HTTP_HX_REQUEST="true")
    assert deleted.status_code == 200
    assert not Document.objects.for_tenant(world.tenant).filter(pk=doc.pk).exists()


@pytest.mark.parametrize("who", WHO)
def test_search_partial(world, kb, page, who):
    ingest(upload(kb, "trains.txt", b"Employees book trains for trips under 500 km."))
    response = page(who).get(f"/knowledge/{kb.pk}/search", {"q": "rail travel"}, HTTP_HX_REQUEST="true")
    if not allowed(who, "viewer"):
        assert response.status_code == {"anonymous": 401, "other_tenant": 404}[who]
        assert "trains" not in response.content.decode()
        return
    html = response.content.decode()
    assert response.status_code == 200 and 'data-testid="search-results"' in html
    assert "trains.txt" in html and "Employees book trains for trips under 500 km." in html


@pytest.mark.parametrize("who", WHO)
def test_create_settings_and_delete_need_admin(world, kb, page, who):
    client = page(who)
    created = client.post("/knowledge/create", {"name": "Legal", "read_access": "tenant", "upload_access": "tenant"})
    settings_ = client.post(
        f"/knowledge/{kb.pk}/settings",
        {
            "name": "Policies",
            "description": "changed",
            "read_access": "roles",
            "read_roles": ["member"],
            "chunk_size": 300,
        },
    )
    victim = knowledge_base_create(tenant=world.tenant, actor=None, name=f"Victim {who}")
    deleted = client.post(f"/knowledge/{victim.pk}/delete")
    if who == "other_tenant":
        assert created.status_code == 302  # created in the outsider's own department
        assert KnowledgeBase.objects.for_tenant(world.other_tenant).filter(name="Legal").exists()
    if not allowed(who, "admin"):
        if who != "other_tenant":
            assert created.status_code == denied_status(who)
        assert settings_.status_code == denied_status(who)
        assert deleted.status_code == denied_status(who)
        assert not KnowledgeBase.objects.for_tenant(world.tenant).filter(name="Legal").exists()
        kb.refresh_from_db()
        assert (kb.description, kb.read_access) == ("", "tenant")
        assert KnowledgeBase.objects.for_tenant(world.tenant).filter(pk=victim.pk).exists()
        return
    legal = KnowledgeBase.objects.for_tenant(world.tenant).get(name="Legal")
    assert created.status_code == 302 and created["Location"] == f"/knowledge/{legal.pk}/"
    assert settings_.status_code == 302
    kb.refresh_from_db()
    assert (kb.description, kb.read_access, kb.read_roles, kb.chunk_size) == ("changed", "roles", ["member"], 300)
    assert deleted.status_code == 302
    assert not KnowledgeBase.objects.for_tenant(world.tenant).filter(pk=victim.pk).exists()


def test_invalid_settings_show_a_readable_error(world, kb, page):
    response = page("admin").post(f"/knowledge/{kb.pk}/settings", {"name": "Policies", "chunk_size": 10})
    assert response.status_code == 400
    assert "The chunk size must be between 64 and 2,000 tokens." in response.content.decode()


def test_viewer_cannot_open_a_restricted_knowledge_base(world, page):
    board = knowledge_base_create(
        tenant=world.tenant, actor=None, name="Board", read_access="roles", read_roles=["member"]
    )
    assert page("viewer").get(f"/knowledge/{board.pk}/").status_code == 404
    assert "Board" not in page("viewer").get("/knowledge/").content.decode()
    assert page("member").get(f"/knowledge/{board.pk}/").status_code == 200
