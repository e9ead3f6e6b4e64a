"""The feedback review page and its CSV export: thumbs-down answers of the department with the question, the answer,
the cited passages and the comment, masked; filterable; a permission matrix (anonymous, other tenant, viewer,
member, admin, owner, staff) that also checks no other department's text leaks."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.urls import reverse

from chat.models import Conversation, Message
from knowledge.models import KnowledgeBase
from tenants.models import AuditEvent

RAW_PII = ["Maria Gonzalez", "maria.gonzalez@example.com", "+44 20 7946 0958"]
ALPHA_MARK = "cafeteria opening hours"
BETA_MARK = "parking garage levels"


def _answer(
    tenant: Any,
    user: Any,
    *,
    question: str,
    masked_question: str,
    answer: str,
    feedback: str,
    comment: str = "",
    model: str = "smollm2-135m-instruct",
    kb: Any = None,
    snippet: str = "",
) -> Message:
    conversation = Conversation.objects.create(tenant=tenant, user=user, title="t")
    Message.objects.create(
        tenant=tenant, conversation=conversation, role="user", text=question, masked_text=masked_question
    )
    citations = (
        [{"n": 1, "document_name": "contacts.md", "knowledge_base_id": kb.pk, "page": 2, "snippet": snippet}]
        if kb is not None
        else []
    )
    return Message.objects.create(
        tenant=tenant,
        conversation=conversation,
        role="assistant",
        text=answer,
        masked_text=answer,
        model=model,
        feedback=feedback,
        feedback_comment=comment,
        citations=citations,
        guardrails={"output": {"decision": "warn", "groundedness": 0.25}},
    )


@pytest.fixture
def reviewed(world: Any) -> dict[str, Any]:
    kb = KnowledgeBase.objects.create(tenant=world.tenant, name="Contacts", embedding_model="all-MiniLM-L6-v2")
    other_kb = KnowledgeBase.objects.create(tenant=world.tenant, name="Other", embedding_model="all-MiniLM-L6-v2")
    down = _answer(
        world.tenant,
        world.member,
        question=f"I am Maria Gonzalez. What are the {ALPHA_MARK}?",
        masked_question=f"I am <PERSON_1>. What are the {ALPHA_MARK}?",
        answer="It opens at 9 [1].",
        feedback="down",
        comment="Wrong! Ask Maria Gonzalez, maria.gonzalez@example.com, she knows.",
        kb=kb,
        snippet="The cafeteria is run by Maria Gonzalez (+44 20 7946 0958) and opens at 7:30.",
    )
    plain = _answer(
        world.tenant,
        world.viewer,
        question="What is the wifi password?",
        masked_question="What is the wifi password?",
        answer="I could not find it in the documents.",
        feedback="down",
        model="legal-lora-base",
    )
    _answer(
        world.tenant,
        world.member,
        question="liked answer",
        masked_question="liked answer",
        answer="liked",
        feedback="up",
        comment="great",
    )
    beta = _answer(
        world.other_tenant,
        world.outsider,
        question=f"Where are the {BETA_MARK}?",
        masked_question=f"Where are the {BETA_MARK}?",
        answer="Below.",
        feedback="down",
        comment="too short",
    )
    return {"kb": kb, "other_kb": other_kb, "down": down, "plain": plain, "beta": beta}


ROLES = ["anonymous", "viewer", "member", "other_tenant", "admin", "owner", "staff"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", ["feedback", "feedback_csv"])
def test_feedback_review_permission_matrix(world, client, reviewed, role, page):
    user = world.user(role)
    if user is not None:
        client.force_login(user)
    audit_before = AuditEvent.objects.count()
    response = client.get(reverse(f"console:{page}"))
    if role == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    elif role in ("viewer", "member"):
        assert response.status_code == 403
    else:
        assert response.status_code == 200, response.content[:300]
    body = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    if response.status_code != 200:
        assert ALPHA_MARK not in body and BETA_MARK not in body
        assert AuditEvent.objects.count() == audit_before
        return
    sees_alpha = role in ("admin", "owner", "staff")
    sees_beta = role in ("other_tenant", "staff")
    assert (ALPHA_MARK in body) == sees_alpha
    assert (BETA_MARK in body) == sees_beta
    assert ("liked answer" in body) is False  # thumbs-up answers are not reviewed here
    for value in RAW_PII:
        assert value not in body, value
    if sees_alpha:
        assert "<PERSON_1>" in body or "&lt;PERSON_1&gt;" in body  # the question as the model saw it
        assert "[PERSON]" in body and "[EMAIL_ADDRESS]" in body and "[PHONE_NUMBER]" in body
    if page == "feedback_csv":
        export = AuditEvent.objects.get(action="chat.feedback.export")
        assert export.actor == user and export.details["answers"] == sum([sees_alpha * 2, sees_beta])


@pytest.mark.parametrize("role", ["admin", "other_tenant"])
def test_feedback_review_of_another_department_is_not_found(world, client, reviewed, role):
    client.force_login(world.user(role))
    target = world.other_tenant if role == "admin" else world.tenant
    for page in ("feedback", "feedback_csv"):
        response = client.get(reverse(f"console:{page}") + f"?tenant={target.pk}")
        assert response.status_code == 404
    assert not AuditEvent.objects.filter(action="chat.feedback.export").exists()


def test_feedback_review_filters_and_csv(world, client, reviewed):
    client.force_login(world.admin)
    url = reverse("console:feedback")

    def shown(**params: Any) -> set[int]:
        response = client.get(url, params, HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        return {int(x) for x in __import__("re").findall(r'data-message="(\d+)"', response.content.decode())}

    down, plain = reviewed["down"].pk, reviewed["plain"].pk
    assert shown() == {down, plain}
    assert shown(commented="1") == {down}
    assert shown(model="legal-lora-base") == {plain}
    assert shown(knowledge_base=reviewed["kb"].pk) == {down}
    assert shown(knowledge_base=reviewed["other_kb"].pk) == set()
    assert shown(since="2000-01-01", until="2000-01-31") == set()
    assert client.get(url, {"since": "not-a-date"}).status_code == 400

    response = client.get(reverse("console:feedback_csv"), {"commented": "1"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, [row] = rows[0], rows[1:]
    record = dict(zip(header, row, strict=True))
    assert record["message_id"] == str(down) and record["department"] == "alpha"
    assert record["question"] == f"I am <PERSON_1>. What are the {ALPHA_MARK}?"
    assert record["answer"] == "It opens at 9 [1]."
    assert record["comment"] == "Wrong! Ask [PERSON], [EMAIL_ADDRESS], she knows."
    assert record["passages"].startswith("[1] contacts.md, page 2: The cafeteria is run by [PERSON] ([PHONE_NUMBER])")
    assert record["groundedness"] == "0.250"
