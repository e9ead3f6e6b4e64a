"""Chat pages: behaviour, sanitized rendering and the permission matrix (anonymous, other tenant, viewer, member,
admin). Conversations are private to their user: another member's answers the same 404 as a missing one."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from adapters.models import Adapter, AdapterAssignment
from chat.models import Conversation, Message
from guardrails.models import PiiVault
from guardrails.services import mask
from inference_pool.models import BaseModel
from knowledge.models import KnowledgeBase
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "other_tenant", "viewer", "member", "admin"]


def _kb(tenant: Tenant, name: str, **kw: Any) -> KnowledgeBase:
    return KnowledgeBase.objects.create(tenant=tenant, name=name, embedding_model="all-MiniLM-L6-v2", **kw)


@pytest.fixture
def chat_world(world: Any) -> dict[str, Any]:
    """The member owns a conversation with a question and a cited answer."""
    kb = _kb(world.tenant, "Handbook")
    conv = Conversation.objects.create(tenant=world.tenant, user=world.member, title="Holidays")
    conv.knowledge_bases.set([kb])
    Message.objects.create(tenant=world.tenant, conversation=conv, role="user", text="How many days of leave?")
    answer = Message.objects.create(
        tenant=world.tenant,
        conversation=conv,
        role="assistant",
        text="You get **25 days** [1].",
        masked_text="You get **25 days** [1].",
        citations=[
            {
                "n": 1,
                "document_id": 7,
                "document_name": "handbook.pdf",
                "knowledge_base_id": kb.pk,
                "page": 3,
                "heading": "Leave",
                "snippet": "Employees have 25 days of paid leave.",
                "chunk_id": 9,
            }
        ],
        guardrails={"output": {"decision": "allow", "groundedness": 0.9}},
    )
    return {"kb": kb, "conv": conv, "answer": answer}


def _client(client: Any, world: Any, role: str) -> Any:
    user = world.user(role)
    if user is not None:
        client.force_login(user)
    return client


def _pages(cw: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    conv, answer = cw["conv"], cw["answer"]
    return [
        ("get", reverse("chat:conversation", args=[conv.pk]), {}),
        ("post", reverse("chat:rename", args=[conv.pk]), {"title": "Renamed"}),
        ("post", reverse("chat:options", args=[conv.pk]), {"adapter": ""}),
        ("get", reverse("chat:message", args=[answer.pk]), {}),
        ("post", reverse("chat:feedback", args=[answer.pk]), {"feedback": "up"}),
        ("post", reverse("chat:delete", args=[conv.pk]), {}),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_conversation_pages_matrix(client, world, chat_world, role):
    """Only the owner reaches their conversation; everyone else gets the same 404 as for a missing id."""
    c = _client(client, world, role)
    for method, url, data in _pages(chat_world):
        response = getattr(c, method)(url, data)
        if role == "anonymous":
            assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
        elif role == "member":
            assert response.status_code in (200, 302), (url, response.status_code)
        else:
            assert response.status_code == 404, (role, url, response.status_code)
            assert b"not found" in response.content.lower()
    conv = chat_world["conv"]
    still_there = Conversation.objects.for_tenant(world.tenant).filter(pk=conv.pk).first()
    if role == "member":
        assert still_there is None  # the owner's delete went through last
    else:
        assert still_there is not None and still_there.title == "Holidays"  # nothing changed
        assert Message.objects.for_tenant(world.tenant).get(pk=chat_world["answer"].pk).feedback == ""


@pytest.mark.parametrize("role", ROLES)
def test_index_new_and_search_matrix(client, world, chat_world, role):
    c = _client(client, world, role)
    index = c.get(reverse("chat:index"))
    search = c.get(reverse("chat:search"), {"q": "holi"})
    new = c.post(reverse("chat:new"), {})
    if role == "anonymous":
        assert [r.status_code for r in (index, search, new)] == [302, 302, 302]
        assert "/accounts/login/" in new["Location"]
        return
    assert index.status_code == 200 and search.status_code == 200
    assert new.status_code == 302
    created = Conversation.objects.for_tenant(new.wsgi_request.tenant).get(
        pk=int(new["Location"].strip("/").split("/")[-1])
    )
    assert created.user == world.user(role)
    # each user lists only their own conversations
    listed = "Holidays" in search.content.decode()
    assert listed == (role == "member")


def test_other_tenants_conversation_answers_like_a_missing_one(client, world, chat_world):
    conv = chat_world["conv"]
    client.force_login(world.outsider)
    foreign = client.get(reverse("chat:conversation", args=[conv.pk]))
    missing = client.get(reverse("chat:conversation", args=[conv.pk + 1000]))
    assert foreign.status_code == missing.status_code == 404

    def main(r: Any) -> str:
        return r.content.decode().split("<main", 1)[1].split("</main>", 1)[0]

    assert main(foreign) == main(missing) and "Conversation not found." in main(foreign)


def test_a_suspended_department_is_refused(client, world, chat_world):
    Tenant.objects.filter(pk=world.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    client.force_login(world.member)
    response = client.get(reverse("chat:conversation", args=[chat_world["conv"].pk]))
    assert response.status_code == 403 and b"suspended" in response.content


def test_answer_renders_as_sanitized_markdown_with_footnotes(client, world, chat_world):
    answer = chat_world["answer"]
    answer.text = (
        "Here **bold** [1] and [2].\n\n<script>alert(1)</script>\n\n[click](javascript:alert(2)) "
        "[ok](https://example.com) ![tracker](https://evil.example/pixel.png) <img src=x onerror=alert(3)>"
    )
    answer.save()
    client.force_login(world.member)
    html = client.get(reverse("chat:conversation", args=[chat_world["conv"].pk])).content.decode()
    body = html.split('data-testid="answer">', 1)[1].split("</div>", 1)[0]
    assert "<strong>bold</strong>" in body
    assert f'href="#cite-{answer.pk}-1"' in body  # [1] links to its footnote
    assert "#cite-" + str(answer.pk) + "-2" not in body  # [2] is not a citation of this answer
    # raw HTML is shown as text, never as markup; no script link; no image loads anything
    assert "<script" not in body and "&lt;script&gt;" in body
    assert 'href="javascript:' not in body and "<img" not in body
    assert 'href="https://example.com"' in body and "nofollow" in body
    footnote = html.split(f'id="cite-{answer.pk}-1"', 1)[1].split("</li>", 1)[0]
    kb = chat_world["kb"]
    assert "handbook.pdf, page 3" in footnote
    assert f'href="/knowledge/{kb.pk}/documents/7/?chunk=9#chunk-9"' in footnote  # the document page, at the passage


def test_badge_when_groundedness_is_low_or_a_guard_warned(client, world, chat_world):
    answer = chat_world["answer"]
    client.force_login(world.member)
    url = reverse("chat:message", args=[answer.pk])
    assert 'data-testid="guard-badge"' not in client.get(url).content.decode()
    answer.guardrails = {"output": {"decision": "allow", "groundedness": 0.1}}
    answer.save()
    assert "poorly supported" in client.get(url).content.decode()
    answer.guardrails = {"input": {"decision": "warn", "score": 0.7}, "output": {"decision": "allow"}}
    answer.save()
    page = client.get(url).content.decode()
    assert 'data-testid="guard-badge"' in page and "prompt-injection" in page


def test_pickers_offer_only_readable_knowledge_bases_and_assigned_adapters(client, world, chat_world):
    _kb(world.tenant, "Board minutes", read_access="roles", read_roles=["admin"])
    _kb(world.other_tenant, "Beta secrets")
    base = BaseModel.objects.create(name="picker-base")
    ours = Adapter.objects.create(name="legal-tone", base_model=base, source="/x")
    Adapter.objects.create(name="unassigned", base_model=base, source="/y")
    theirs = Adapter.objects.create(name="beta-only", base_model=base, source="/z")
    AdapterAssignment.objects.create(tenant=world.tenant, adapter=ours)
    AdapterAssignment.objects.create(tenant=world.other_tenant, adapter=theirs)
    client.force_login(world.member)
    page = client.get(reverse("chat:index")).content.decode()
    assert "Handbook" in page and "Board minutes" not in page and "Beta secrets" not in page
    assert "legal-tone" in page and "unassigned" not in page and "beta-only" not in page
    client.force_login(world.admin)
    assert "Board minutes" in client.get(reverse("chat:index")).content.decode()


def test_options_refuse_an_unreadable_knowledge_base_and_an_unassigned_adapter(client, world, chat_world):
    secret = _kb(world.tenant, "Board minutes", read_access="roles", read_roles=["admin"])
    Adapter.objects.create(name="unassigned", base_model=BaseModel.objects.create(name="b2"), source="/y")
    conv = chat_world["conv"]
    client.force_login(world.member)
    url = reverse("chat:options", args=[conv.pk])
    assert client.post(url, {"knowledge_bases": [secret.pk]}).status_code == 404
    assert client.post(url, {"adapter": "unassigned"}).status_code == 404
    assert list(conv.knowledge_bases.values_list("pk", flat=True)) == [chat_world["kb"].pk]
    response = client.post(url, {"knowledge_bases": []})
    assert response.status_code == 200 and not conv.knowledge_bases.exists()


def test_rename_search_and_feedback(client, world, chat_world):
    conv, answer = chat_world["conv"], chat_world["answer"]
    client.force_login(world.member)
    bad = client.post(reverse("chat:rename", args=[conv.pk]), {"title": "   "}, HTTP_HX_REQUEST="true")
    assert bad.status_code == 400 and "needs a title" in bad.content.decode()
    assert client.post(reverse("chat:rename", args=[conv.pk]), {"title": "Leave rules"}).status_code == 200
    assert "Leave rules" in client.get(reverse("chat:search"), {"q": "leave"}).content.decode()
    assert "No conversation matches" in client.get(reverse("chat:search"), {"q": "zzz"}).content.decode()

    url = reverse("chat:feedback", args=[answer.pk])
    assert client.post(url, {"feedback": "down"}).status_code == 200
    client.post(url, {"feedback": "down", "comment": "Wrong number of days"})
    answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_comment) == ("down", "Wrong number of days")
    client.post(url, {"feedback": "up"})
    answer.refresh_from_db()
    assert answer.feedback == "up"
    client.post(url, {"feedback": "up"})  # pressing the same thumb again clears it
    answer.refresh_from_db()
    assert answer.feedback == ""


def test_delete_removes_the_conversation_and_its_pii_vault(client, world, chat_world):
    conv = chat_world["conv"]
    mask(tenant=world.tenant, scope_key=conv.scope_key, text="Write to jane.doe@example.com please")
    assert PiiVault.objects.for_tenant(world.tenant).filter(scope_key=conv.scope_key).exists()
    client.force_login(world.member)
    response = client.post(reverse("chat:delete", args=[conv.pk]), HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Redirect"] == reverse("chat:index")
    assert not Conversation.objects.for_tenant(world.tenant).filter(pk=conv.pk).exists()
    assert not Message.objects.for_tenant(world.tenant).filter(conversation_id=conv.pk).exists()
    assert not PiiVault.objects.for_tenant(world.tenant).filter(scope_key=conv.scope_key).exists()


def test_quota_message_in_the_page(client, world, chat_world):
    from tenants.quota import quota_reserve

    quota = world.tenant.quota
    quota.tokens_per_day = 100
    quota.save()
    client.force_login(world.member)
    page = client.get(reverse("chat:conversation", args=[chat_world["conv"].pk])).content.decode()
    assert "Today: 0 of 100 tokens" in page
    quota_reserve(tenant=world.tenant, max_tokens=100)
    page = client.get(reverse("chat:conversation", args=[chat_world["conv"].pk])).content.decode()
    assert "used its token quota" in page
