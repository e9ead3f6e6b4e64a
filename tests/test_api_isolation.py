"""Tenant isolation over the whole REST API: a key of department A never reaches department B's knowledge bases,
documents, conversations (or anything else of B's). Every operation of the schema that takes an id is called with
B's ids by A's owner key (every scope): the answer must be an error, and exactly the one a missing id gets
("not found" and "not yours" answer the same). Lists and search never show B's rows, and nothing of B's changes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from adapters.models import Adapter, AdapterAssignment
from chat.models import Conversation, Message
from inference_pool.models import BaseModel
from knowledge.models import Document, KnowledgeBase
from tenants.models import ApiKey, Membership, Role
from tenants.services import api_key_create
from tests.api_harness import ALL_SCOPES, api_call
from tests.test_api_schema import load_schema, operations

MISSING_ID = 987_654_321_098
# words that only B's rows contain
B_MARKERS = ("Beta secrets", "beta-plan.txt", "Beta plans", "beta-only answer", "beta-admin", "Beta agent")


@pytest.fixture
def tenant_b(world: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from knowledge.services import document_ingest, document_upload, knowledge_base_create

    monkeypatch.setattr("celery.app.task.Task.apply_async", lambda self, *a, **k: None)
    b, outsider = world.other_tenant, world.outsider
    kb = knowledge_base_create(tenant=b, actor=outsider, name="Beta secrets")
    [upload] = document_upload(
        knowledge_base=kb,
        actor=outsider,
        files=[SimpleUploadedFile("beta-plan.txt", b"The beta launch plan: ship the zeppelin fleet in March.")],
    )
    document_ingest(document_id=upload.document.pk)
    conversation = Conversation.objects.create(tenant=b, user=outsider, title="Beta plans")
    conversation.knowledge_bases.set([kb])
    message = Message.objects.create(tenant=b, conversation=conversation, role="assistant", text="beta-only answer")
    key, _ = api_key_create(tenant=b, name="beta key", role=Role.ADMIN, created_by=outsider)
    adapter = Adapter.objects.create(
        name="beta-hr", base_model=BaseModel.objects.create(name="m"), source="/a", owner_tenant=b
    )
    AdapterAssignment.objects.create(tenant=b, adapter=adapter)
    ids: dict[str, Any] = {
        "tenants": b.pk,
        "members": outsider.pk,
        "api-keys": key.pk,
        "conversations": conversation.pk,
        "messages": message.pk,
        "adapters": adapter.pk,
        "base-models": adapter.base_model_id,  # platform objects: a department's key reaches none of them
        "knowledge-bases": kb.pk,
        "documents": upload.document.pk,
    }
    try:  # the agents app's objects, when that app is installed with its services
        from agents.services import agent_definition_create, agent_run_start, webhook_endpoint_create

        agent = agent_definition_create(
            tenant=b, actor=outsider, name="Beta agent", instructions="Summarise the plan.", tools=[]
        )
        ids["agents"] = agent.pk
        ids["agent-runs"] = agent_run_start(definition=agent, role=Role.ADMIN, text="Summarise", user=outsider).pk
        ids["agent-webhooks"] = webhook_endpoint_create(tenant=b, url="https://hooks.example.com/beta")[0].pk
    except ImportError:
        pass
    return ids


def _fill(path: str, ids: dict[str, Any], *, missing: bool) -> str:
    prefix = path.split("/")[3]

    def value(match: re.Match[str]) -> str:
        if missing:
            return str(MISSING_ID)
        name = match.group(1)
        key = {"kb_id": "knowledge-bases", "doc_id": "documents", "user_id": "members"}.get(name, prefix)
        assert key in ids, f"the isolation test needs department B's object for {path} ({name})"
        return str(ids[key])

    return re.sub(r"\{([^}]+)\}", value, path)


def _snapshot(world: Any, ids: dict[str, Any]) -> Any:
    b = world.other_tenant
    return (
        list(KnowledgeBase.objects.for_tenant(b).values_list("id", "name", "description")),
        list(Document.objects.for_tenant(b).values_list("id", "status", "chunk_count")),
        list(Conversation.objects.for_tenant(b).values_list("id", "title", "adapter")),
        list(Message.objects.for_tenant(b).values_list("id", "text", "feedback")),
        list(ApiKey.objects.for_tenant(b).values_list("id", "revoked_at")),
        list(Membership.objects.for_tenant(b).values_list("user_id", "role")),
        type(b).objects.filter(pk=b.pk).values_list("name", "system_prompt", "status").get(),
    )


def test_a_key_of_department_a_never_reaches_department_b(world, tenant_b, tmp_path: Path):
    _, secret = api_key_create(
        tenant=world.tenant, name="A owner", role=Role.OWNER, scopes=ALL_SCOPES, created_by=world.owner
    )
    before = _snapshot(world, tenant_b)
    checked = 0
    for path, method, _ in operations(load_schema(tmp_path)):
        if "{" not in path:
            continue
        body = {} if method in ("post", "patch", "put") else None
        theirs = api_call(method, _fill(path, tenant_b, missing=False), key=secret, body=body)
        missing = api_call(method, _fill(path, tenant_b, missing=True), key=secret, body=body)
        assert theirs.status_code >= 400, (method, path, theirs.status_code, theirs.json_body)
        assert (theirs.status_code, theirs.json_body) == (missing.status_code, missing.json_body), (method, path)
        text = theirs.content.decode()
        assert not any(marker in text for marker in B_MARKERS), (method, path, text)
        checked += 1
    assert checked >= 20
    assert _snapshot(world, tenant_b) == before

    # lists and search of A never show B's rows
    for path, method, _ in operations(load_schema(tmp_path)):
        if method == "get" and "{" not in path:
            response = api_call("get", path, key=secret)
            if path.startswith("/api/v1/base-models/"):  # the pool's models: platform staff signed in only
                assert response.status_code == 403, (path, response.json_body)
                continue
            assert response.status_code == 200, (path, response.json_body)
            assert not any(marker in response.content.decode() for marker in B_MARKERS), path
    search = api_call(
        "post",
        "/api/v1/knowledge-bases/search/",
        key=secret,
        body={"query": "zeppelin fleet launch plan", "knowledge_base_ids": [tenant_b["knowledge-bases"]]},
    )
    assert search.status_code in (200, 404), search.json_body
    assert "zeppelin" not in search.content.decode()
    everything = api_call("post", "/api/v1/knowledge-bases/search/", key=secret, body={"query": "zeppelin fleet"})
    assert everything.status_code == 200 and "zeppelin" not in everything.content.decode()
