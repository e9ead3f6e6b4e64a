"""REST API: permission matrices (anonymous, other tenant, viewer, member, admin, owner; key scopes), uploads,
status, delete, search, and the one error body."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.services import knowledge_base_create
from knowledge.tests.conftest import ingest, upload
from tenants.services import api_key_create

pytestmark = pytest.mark.django_db

WHO = ["anonymous", "other_tenant", "viewer", "member", "admin", "owner"]


def client_for(world, who):
    client = APIClient()
    user = world.user(who)
    if user is not None:
        client.force_login(user)
    return client


def expected(who, *, min_role):
    rank = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}
    if who == "anonymous":
        return 401
    if who == "other_tenant":
        return 404
    return None if rank[who] >= rank[min_role] else 403


@pytest.fixture
def indexed(world, kb):
    return ingest(upload(kb, "trains.txt", b"Employees book trains for trips under 500 km."))


@pytest.mark.parametrize("who", WHO)
def test_list_and_retrieve_knowledge_bases(world, kb, who):
    client = client_for(world, who)
    listing = client.get("/api/v1/knowledge-bases/")
    detail = client.get(f"/api/v1/knowledge-bases/{kb.pk}/")
    status = expected(who, min_role="viewer")
    if status is None:
        assert listing.status_code == 200 and [r["name"] for r in listing.json()["results"]] == ["Policies"]
        assert detail.status_code == 200 and detail.json()["embedding_model"] == "all-MiniLM-L6-v2"
    elif who == "other_tenant":  # their own department's list, which does not hold ours
        assert listing.status_code == 200 and listing.json()["results"] == []
        assert detail.status_code == 404 and detail.json()["code"] == "not_found"
    else:
        assert listing.status_code == status
        assert detail.status_code == status
        assert set(detail.json()) == {"code", "message", "details"}


@pytest.mark.parametrize("who", WHO)
def test_create_update_delete_need_admin(world, kb, who):
    client = client_for(world, who)
    status = expected(who, min_role="admin")
    created = client.post(
        "/api/v1/knowledge-bases/", {"name": "HR", "read_access": "roles", "read_roles": ["member"]}, format="json"
    )
    patched = client.patch(f"/api/v1/knowledge-bases/{kb.pk}/", {"description": "All policies"}, format="json")
    deleted_id = knowledge_base_create(tenant=world.tenant, actor=None, name=f"Temp {who}").pk
    deleted = client.delete(f"/api/v1/knowledge-bases/{deleted_id}/")
    if who == "other_tenant":  # an admin of Beta creates in Beta; Alpha's rows stay out of reach
        assert created.status_code == 201
        assert not KnowledgeBase.objects.for_tenant(world.tenant).filter(name="HR").exists()
        assert KnowledgeBase.objects.for_tenant(world.other_tenant).filter(name="HR").exists()
        assert (patched.status_code, deleted.status_code) == (404, 404)
        assert KnowledgeBase.objects.for_tenant(world.tenant).filter(pk=deleted_id).exists()
    elif status is None:
        assert created.status_code == 201 and created.json()["read_roles"] == ["member"]
        assert patched.status_code == 200 and patched.json()["description"] == "All policies"
        assert deleted.status_code == 204
        assert not KnowledgeBase.objects.for_tenant(world.tenant).filter(pk=deleted_id).exists()
    else:
        assert (created.status_code, patched.status_code, deleted.status_code) == (status, status, status)
        assert not KnowledgeBase.objects.for_tenant(world.tenant).filter(name="HR").exists()
        kb.refresh_from_db()
        assert kb.description == ""
        assert KnowledgeBase.objects.for_tenant(world.tenant).filter(pk=deleted_id).exists()


@pytest.mark.parametrize("who", WHO)
def test_upload_needs_a_role_that_may_upload(world, kb, who):
    client = client_for(world, who)
    response = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents/",
        {"files": [SimpleUploadedFile("a.txt", b"Alpha notes."), SimpleUploadedFile("b.md", b"# B\n\nBeta notes.")]},
        format="multipart",
    )
    status = expected(who, min_role="member")
    if status is None:
        assert response.status_code == 201
        body = response.json()
        assert [(r["document"]["filename"], r["document"]["status"], r["duplicate"]) for r in body] == [
            ("a.txt", "queued", False),
            ("b.md", "queued", False),
        ]
    else:
        assert response.status_code == status
        assert not Document.objects.for_tenant(world.tenant).exists()


def test_upload_to_a_knowledge_base_limited_to_other_roles(world):
    restricted = knowledge_base_create(
        tenant=world.tenant,
        actor=None,
        name="Board",
        read_access="roles",
        read_roles=["member"],
        upload_access="roles",
        upload_roles=[],
    )
    member = client_for(world, "member")
    viewer = client_for(world, "viewer")
    url = f"/api/v1/knowledge-bases/{restricted.pk}/documents/"
    files = {"files": [SimpleUploadedFile("x.txt", b"x")]}
    assert member.get(url).status_code == 200  # may read
    assert member.post(url, files, format="multipart").status_code == 403  # may not upload
    assert viewer.get(url).status_code == 404  # may not even see it
    assert client_for(world, "admin").post(url, files, format="multipart").status_code == 201


@pytest.mark.parametrize("who", WHO)
def test_document_status_delete_reindex(world, kb, indexed, who):
    client = client_for(world, who)
    base = f"/api/v1/knowledge-bases/{kb.pk}/documents/{indexed.pk}/"
    listing = client.get(f"/api/v1/knowledge-bases/{kb.pk}/documents/")
    status_read = expected(who, min_role="viewer")
    if status_read is None:
        assert listing.status_code == 200
        [row] = listing.json()["results"]
        assert (row["filename"], row["status"], row["progress"], row["chunk_count"]) == (
            "trains.txt",
            "indexed",
            100,
            1,
        )
        assert client.get(base).json()["status"] == "indexed"
    else:
        assert listing.status_code == status_read
    status_write = expected(who, min_role="member")
    reindexed = client.post(base + "reindex/")
    if status_write is None:
        assert reindexed.status_code == 200 and reindexed.json()["status"] == "queued"
        cancelled = client.post(base + "cancel/")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert client.post(base + "cancel/").status_code == 409
        assert client.delete(base).status_code == 204
        assert not Chunk.objects.for_tenant(world.tenant).exists()
    else:
        assert reindexed.status_code == status_write
        assert client.delete(base).status_code == status_write
        assert Document.objects.for_tenant(world.tenant).filter(pk=indexed.pk, status="indexed").exists()


@pytest.mark.parametrize("who", WHO)
def test_search(world, kb, indexed, who):
    client = client_for(world, who)
    response = client.post("/api/v1/knowledge-bases/search/", {"query": "train travel", "k": 3}, format="json")
    status = expected(who, min_role="viewer")
    if who == "other_tenant":
        assert response.status_code == 200 and response.json() == {"results": []}
    elif status is None:
        assert response.status_code == 200
        [hit] = response.json()["results"]
        assert (hit["document_name"], hit["knowledge_base_id"], hit["page"]) == ("trains.txt", kb.pk, None)
        assert hit["snippet"] == "Employees book trains for trips under 500 km."
    else:
        assert response.status_code == status


def test_the_other_tenant_searching_with_our_ids_gets_nothing(world, kb, indexed):
    response = client_for(world, "other_tenant").post(
        "/api/v1/knowledge-bases/search/", {"query": "trains", "knowledge_base_ids": [kb.pk]}, format="json"
    )
    assert response.status_code == 200 and response.json() == {"results": []}


@pytest.mark.parametrize(
    ("scopes", "read", "write"),
    [
        (["knowledge:read"], 200, 403),
        (["knowledge:write"], 403, 201),
        (["knowledge:read", "knowledge:write"], 200, 201),
        (["chat"], 403, 403),
    ],
)
def test_api_key_scopes(world, kb, scopes, read, write):
    _, secret = api_key_create(tenant=world.tenant, name="k", role="member", scopes=scopes, created_by=world.member)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.post("/api/v1/knowledge-bases/search/", {"query": "x"}, format="json").status_code == read
    response = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents/",
        {"files": [SimpleUploadedFile("k.txt", b"key upload")]},
        format="multipart",
    )
    assert response.status_code == write


def test_invalid_input_has_the_error_body(world, kb):
    client = client_for(world, "admin")
    bad = client.post("/api/v1/knowledge-bases/", {"name": "X", "chunk_size": 5}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid" and "chunk_size" in bad.json()["details"]
    dup = client.post("/api/v1/knowledge-bases/", {"name": "Policies"}, format="json")
    assert dup.status_code == 409 and dup.json()["message"] == "A knowledge base named 'Policies' already exists."
    none = client.post(f"/api/v1/knowledge-bases/{kb.pk}/documents/", {}, format="multipart")
    assert none.status_code == 400 and none.json()["details"] == {"files": ["required"]}
    huge = client.get("/api/v1/knowledge-bases/9999999999999999999999/")
    assert huge.status_code == 404


def test_duplicate_upload_is_reported(world, kb, indexed):
    client = client_for(world, "member")
    response = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents/",
        {"files": [SimpleUploadedFile("copy.txt", b"Employees book trains for trips under 500 km.")]},
        format="multipart",
    )
    assert response.status_code == 200
    assert response.json()[0]["duplicate"] is True and response.json()[0]["document"]["id"] == indexed.pk


def test_schema_documents_the_endpoints(world):
    client = client_for(world, "admin")
    schema = client.get("/api/schema/?format=json").json()
    for route in (
        "/api/v1/knowledge-bases/",
        "/api/v1/knowledge-bases/{id}/",
        "/api/v1/knowledge-bases/search/",
        "/api/v1/knowledge-bases/{kb_id}/documents/",
        "/api/v1/knowledge-bases/{kb_id}/documents/{doc_id}/",
    ):
        assert route in schema["paths"], route
    upload_body = schema["paths"]["/api/v1/knowledge-bases/{kb_id}/documents/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body
