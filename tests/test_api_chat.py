"""/api/v1/ conversations and messages: behaviour and the permission matrix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from chat.models import Conversation, Message
from knowledge.models import KnowledgeBase
from tenants.models import AuditEvent, Role, UsageRecord
from tenants.services import api_key_create
from tests.api_harness import (
    MATRIX_CALLERS,
    api_call,
    api_keys,  # noqa: F401  (fixture)
    assert_error_body,
    expected_status,
    make_api_keys,
    pool_backend,  # noqa: F401  (fixture)
)


def _kb(tenant: Any, name: str, **kw: Any) -> KnowledgeBase:
    return KnowledgeBase.objects.create(tenant=tenant, name=name, embedding_model="all-MiniLM-L6-v2", **kw)


@pytest.fixture
def chat_world(world: Any) -> dict[str, Any]:
    """A's admin (who created the matrix keys) has a conversation with a question and an answer; B has its own."""
    kb = _kb(world.tenant, "Handbook")
    conversation = Conversation.objects.create(tenant=world.tenant, user=world.admin, title="Holidays")
    conversation.knowledge_bases.set([kb])
    Message.objects.create(tenant=world.tenant, conversation=conversation, role="user", text="How many days?")
    answer = Message.objects.create(
        tenant=world.tenant,
        conversation=conversation,
        role="assistant",
        text="Twenty-five days [1].",
        masked_text="Twenty-five days [1].",
        citations=[
            {
                "n": 1,
                "document_id": 7,
                "document_name": "handbook.pdf",
                "knowledge_base_id": kb.pk,
                "page": 3,
                "heading": "Leave",
                "snippet": "25 days",
                "chunk_id": 9,
            }
        ],
        model="smollm2",
        tokens_in=12,
        tokens_out=5,
    )
    other_kb = _kb(world.other_tenant, "Beta secrets")
    other_conv = Conversation.objects.create(tenant=world.other_tenant, user=world.outsider, title="Beta plans")
    other_msg = Message.objects.create(
        tenant=world.other_tenant, conversation=other_conv, role="assistant", text="beta-only answer"
    )
    return {
        "kb": kb,
        "conversation": conversation,
        "answer": answer,
        "other_kb": other_kb,
        "other_conversation": other_conv,
        "other_message": other_msg,
    }


def _snapshot(world: Any) -> Any:
    conversations = Conversation.objects.for_tenant(world.tenant)
    return (
        sorted(conversations.values_list("id", "title", "adapter")),
        sorted(
            (c.pk, tuple(sorted(c.knowledge_bases.values_list("pk", flat=True))))
            for c in conversations.prefetch_related("knowledge_bases")
        ),
        sorted(Message.objects.for_tenant(world.tenant).values_list("id", "text", "feedback")),
    )


@dataclass
class Endpoint:
    id: str
    method: str
    path: Callable[[dict[str, Any]], str]
    ok: int
    body: Callable[[dict[str, Any]], Any] | None = None
    other_tenant: int = 404
    leak: tuple[str, ...] = ()


ENDPOINTS = [
    Endpoint("list", "get", lambda c: "/api/v1/conversations/", 200, other_tenant=200, leak=("Holidays",)),
    Endpoint(
        "create",
        "post",
        lambda c: "/api/v1/conversations/",
        201,
        body=lambda c: {"title": "New", "knowledge_base_ids": [c["kb"].pk]},
    ),
    Endpoint("detail", "get", lambda c: f"/api/v1/conversations/{c['conversation'].pk}/", 200),
    Endpoint(
        "update",
        "patch",
        lambda c: f"/api/v1/conversations/{c['conversation'].pk}/",
        200,
        body=lambda c: {"title": "Renamed"},
    ),
    Endpoint("messages", "get", lambda c: f"/api/v1/conversations/{c['conversation'].pk}/messages/", 200),
    Endpoint("message", "get", lambda c: f"/api/v1/messages/{c['answer'].pk}/", 200),
    Endpoint(
        "feedback",
        "post",
        lambda c: f"/api/v1/messages/{c['answer'].pk}/feedback/",
        200,
        body=lambda c: {"feedback": "up"},
    ),
]


@pytest.mark.parametrize("caller", MATRIX_CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
def test_permission_matrix(world, api_keys, chat_world, endpoint, caller):  # noqa: F811
    before = _snapshot(world)
    audit_before = AuditEvent.objects.filter(tenant=world.tenant).count()
    body = endpoint.body(chat_world) if endpoint.body else None
    # another department's key names A's knowledge base: refused as not found, like any id that is not its own
    want = expected_status(caller, Role.VIEWER, endpoint.ok, other_tenant=endpoint.other_tenant)

    response = api_call(endpoint.method, endpoint.path(chat_world), key=api_keys[caller], body=body)

    assert response.status_code == want, (response.status_code, response.json_body)
    if want >= 400:
        assert_error_body(response, want)
    if want >= 400 or caller == "other_tenant":
        assert _snapshot(world) == before
        assert AuditEvent.objects.filter(tenant=world.tenant).count() == audit_before
    if caller == "other_tenant":
        for needle in endpoint.leak:
            assert needle not in response.content.decode()


def test_delete_permission_matrix(world, api_keys, chat_world):  # noqa: F811
    conversation = chat_world["conversation"]
    for caller in ("anonymous", "revoked", "expired", "other_tenant"):
        response = api_call("delete", f"/api/v1/conversations/{conversation.pk}/", key=api_keys[caller])
        assert_error_body(response, 401 if caller != "other_tenant" else 404)
        assert Conversation.objects.for_tenant(world.tenant).filter(pk=conversation.pk).exists()
    response = api_call("delete", f"/api/v1/conversations/{conversation.pk}/", key=api_keys["viewer"])
    assert response.status_code == 204, response.json_body
    assert not Conversation.objects.for_tenant(world.tenant).filter(pk=conversation.pk).exists()
    assert not Message.objects.for_tenant(world.tenant).filter(conversation_id=conversation.pk).exists()


def test_a_key_of_tenant_a_never_reaches_tenant_b(world, api_keys, chat_world):  # noqa: F811
    key = api_keys["admin"]
    other_conv, other_msg, other_kb = (
        chat_world["other_conversation"],
        chat_world["other_message"],
        chat_world["other_kb"],
    )
    for method, path, body in [
        ("get", f"/api/v1/conversations/{other_conv.pk}/", None),
        ("patch", f"/api/v1/conversations/{other_conv.pk}/", {"title": "pwned"}),
        ("delete", f"/api/v1/conversations/{other_conv.pk}/", None),
        ("get", f"/api/v1/conversations/{other_conv.pk}/messages/", None),
        ("get", f"/api/v1/messages/{other_msg.pk}/", None),
        ("post", f"/api/v1/messages/{other_msg.pk}/feedback/", {"feedback": "down"}),
    ]:
        response = api_call(method, path, key=key, body=body)
        assert_error_body(response, 404)
        assert "beta" not in response.content.decode().lower()
    # naming B's knowledge base is the same 404 as a missing one, and nothing is created
    count = Conversation.objects.for_tenant(world.tenant).count()
    response = api_call("post", "/api/v1/conversations/", key=key, body={"knowledge_base_ids": [other_kb.pk]})
    assert_error_body(response, 404)
    missing = api_call("post", "/api/v1/conversations/", key=key, body={"knowledge_base_ids": [10**12]})
    assert missing.json_body == response.json_body
    assert Conversation.objects.for_tenant(world.tenant).count() == count
    other_conv.refresh_from_db()
    other_msg.refresh_from_db()
    assert other_conv.title == "Beta plans" and other_msg.feedback == ""


def test_conversations_are_private_to_their_user(world, chat_world):
    _, member_key = api_key_create(tenant=world.tenant, name="member's", role=Role.MEMBER, created_by=world.member)
    conversation = chat_world["conversation"]
    assert api_call("get", "/api/v1/conversations/", key=member_key).json_body["results"] == []
    assert_error_body(api_call("get", f"/api/v1/conversations/{conversation.pk}/", key=member_key), 404)
    assert_error_body(api_call("get", f"/api/v1/messages/{chat_world['answer'].pk}/", key=member_key), 404)


def test_a_key_without_a_user_has_no_conversations(world):
    _, secret = api_key_create(tenant=world.tenant, name="service", role=Role.MEMBER)
    response = api_call("get", "/api/v1/conversations/", key=secret)
    assert_error_body(response, 403)
    assert "no user" in response.json_body["message"]


def test_the_chat_scope_is_required(world, chat_world):
    _, secret = api_key_create(
        tenant=world.tenant, name="kb only", role=Role.ADMIN, scopes=["knowledge:read"], created_by=world.admin
    )
    response = api_call("get", "/api/v1/conversations/", key=secret)
    assert_error_body(response, 403)
    assert "chat" in response.json_body["message"]


def test_messages_show_the_owner_text_and_citations(world, api_keys, chat_world):  # noqa: F811
    conversation = chat_world["conversation"]
    body = api_call("get", f"/api/v1/conversations/{conversation.pk}/messages/", key=api_keys["member"]).json_body
    assert body["count"] == 2
    question, answer = body["results"]
    assert (question["role"], question["text"]) == ("user", "How many days?")
    assert answer["text"] == "Twenty-five days [1]."
    assert answer["citations"][0]["document_name"] == "handbook.pdf" and answer["citations"][0]["page"] == 3
    assert "masked_text" not in answer and "guardrails" not in answer
    assert answer["warnings"] == []


def test_create_update_and_search_conversations(world, api_keys, chat_world):  # noqa: F811
    kb = chat_world["kb"]
    created = api_call(
        "post",
        "/api/v1/conversations/",
        key=api_keys["member"],
        body={"title": "  Travel   policy ", "knowledge_base_ids": [kb.pk]},
    )
    assert created.status_code == 201, created.json_body
    assert created.json_body["title"] == "Travel policy"
    assert created.json_body["knowledge_base_ids"] == [kb.pk]
    conv_id = created.json_body["id"]
    updated = api_call(
        "patch", f"/api/v1/conversations/{conv_id}/", key=api_keys["member"], body={"knowledge_base_ids": []}
    )
    assert updated.json_body["knowledge_base_ids"] == []
    found = api_call("get", "/api/v1/conversations/?q=travel", key=api_keys["member"]).json_body["results"]
    assert [c["id"] for c in found] == [conv_id]
    blank = api_call("patch", f"/api/v1/conversations/{conv_id}/", key=api_keys["member"], body={"title": "   "})
    assert_error_body(blank, 400)
    unknown_adapter = api_call("post", "/api/v1/conversations/", key=api_keys["member"], body={"adapter": "nope"})
    assert_error_body(unknown_adapter, 404)


def test_a_restricted_knowledge_base_is_not_found_for_a_viewer(world, api_keys, chat_world):  # noqa: F811
    restricted = _kb(world.tenant, "Board only", read_access="roles", read_roles=["admin"])
    viewer = api_call(
        "post", "/api/v1/conversations/", key=api_keys["viewer"], body={"knowledge_base_ids": [restricted.pk]}
    )
    assert_error_body(viewer, 404)
    admin = api_call(
        "post", "/api/v1/conversations/", key=api_keys["admin"], body={"knowledge_base_ids": [restricted.pk]}
    )
    assert admin.status_code == 201


def test_feedback_on_answers_only(world, api_keys, chat_world):  # noqa: F811
    answer = chat_world["answer"]
    rated = api_call(
        "post",
        f"/api/v1/messages/{answer.pk}/feedback/",
        key=api_keys["viewer"],
        body={"feedback": "down", "comment": "wrong"},
    )
    assert rated.status_code == 200
    assert (rated.json_body["feedback"], rated.json_body["feedback_comment"]) == ("down", "wrong")
    question = Message.objects.for_tenant(world.tenant).get(role="user")
    refused = api_call(
        "post", f"/api/v1/messages/{question.pk}/feedback/", key=api_keys["viewer"], body={"feedback": "up"}
    )
    assert_error_body(refused, 400)
    bad = api_call("post", f"/api/v1/messages/{answer.pk}/feedback/", key=api_keys["viewer"], body={"feedback": "meh"})
    assert_error_body(bad, 400)
    assert "feedback" in bad.json_body["details"]


@pytest.mark.engine
def test_asking_in_a_conversation_runs_the_pipeline(world, pool_backend):  # noqa: F811
    keys = make_api_keys(world)  # created by A's admin: they act as that user
    conversation = Conversation.objects.create(tenant=world.tenant, user=world.admin, title="New chat")
    path = f"/api/v1/conversations/{conversation.pk}/messages/"
    ask = {"text": "Say hello.", "max_tokens": 4}
    for caller in ("anonymous", "revoked", "expired", "other_tenant"):
        assert_error_body(api_call("post", path, key=keys[caller], body=ask), 401 if caller != "other_tenant" else 404)
    assert_error_body(api_call("post", path, key=keys["viewer"], body={"text": ""}), 400)
    assert not Message.objects.for_tenant(world.tenant).filter(conversation=conversation).exists()

    response = api_call("post", path, key=keys["viewer"], body=ask)
    assert response.status_code == 201, response.json_body
    question, answer = response.json_body["question"], response.json_body["answer"]
    assert (question["role"], question["text"]) == ("user", "Say hello.")
    assert answer["role"] == "assistant" and answer["status"] == "complete" and answer["text"]
    assert 0 < answer["tokens_out"] <= 4 and answer["model"] == pool_backend.base_model.name
    listed = api_call("get", path, key=keys["viewer"]).json_body
    assert [m["id"] for m in listed["results"]] == [question["id"], answer["id"]]
    [usage] = UsageRecord.objects.for_tenant(world.tenant).all()
    assert (usage.source, usage.api_key_id, usage.user_id) == ("api", keys.keys["viewer"].pk, world.admin.pk)
    conversation.refresh_from_db()
    assert conversation.title == "Say hello." and conversation.generating_since is None
