"""Who may open the chat socket and what they may send: the permission matrix (anonymous, other tenant, viewer,
member, admin), missing vs. foreign ids, suspended departments, origins, knowledge-base and adapter access."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from adapters.models import Adapter
from chat.models import Conversation, Message
from chat.tests.conftest import collect, ws_open
from inference_pool.models import BaseModel
from knowledge.models import KnowledgeBase
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


def _conv(tenant: Tenant, user: Any) -> Conversation:
    return Conversation.objects.create(tenant=tenant, user=user, title="mine")


async def _refused(user: Any, conversation_id: Any, tenant: Any = None) -> tuple[dict[str, Any], int]:
    comm, connected = await ws_open(user, conversation_id, tenant=tenant)
    assert connected  # accepted, so that the page can read why it is refused
    frame = await comm.receive_json_from(timeout=10)
    closed = await comm.receive_output(timeout=10)
    assert closed["type"] == "websocket.close"
    await comm.disconnect()
    return frame, closed["code"]


@pytest.mark.parametrize("role", ["anonymous", "other_tenant", "viewer", "member", "admin"])
async def test_socket_matrix_on_the_members_conversation(world, role):
    conv = await database_sync_to_async(_conv)(world.tenant, world.member)
    user = world.user(role)
    if role == "member":
        comm, connected = await ws_open(user, conv.pk, tenant=world.tenant)
        assert connected and await comm.receive_nothing(timeout=0.5)
        await comm.disconnect()
        return
    frame, code = await _refused(user, conv.pk, tenant=world.other_tenant if role == "other_tenant" else world.tenant)
    if role == "anonymous":
        assert (frame["code"], code) == ("not_authenticated", 4401)
    else:
        # another tenant, and another member of the same tenant: the same answer as a missing conversation
        assert frame == {"type": "error", "code": "not_found", "message": "Conversation not found."}
        assert code == 4404


@pytest.mark.parametrize("role", ["viewer", "member", "admin", "owner"])
async def test_every_role_may_open_its_own_conversation(world, role):
    user = world.user(role)
    conv = await database_sync_to_async(_conv)(world.tenant, user)
    comm, connected = await ws_open(user, conv.pk, tenant=world.tenant)
    assert connected and await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


async def test_foreign_and_missing_ids_answer_the_same(world):
    theirs = await database_sync_to_async(_conv)(world.other_tenant, world.outsider)
    foreign = await _refused(world.member, theirs.pk, tenant=world.tenant)
    missing = await _refused(world.member, theirs.pk + 999, tenant=world.tenant)
    garbage = await _refused(world.member, "not-a-number", tenant=world.tenant)
    assert (
        foreign
        == missing
        == garbage
        == ({"type": "error", "code": "not_found", "message": "Conversation not found."}, 4404)
    )


async def test_a_suspended_department_is_refused(world):
    conv = await database_sync_to_async(_conv)(world.tenant, world.member)
    await database_sync_to_async(lambda: Tenant.objects.filter(pk=world.tenant.pk).update(status="suspended"))()
    frame, code = await _refused(world.member, conv.pk, tenant=world.tenant)
    assert (frame["code"], code) == ("tenant_suspended", 4403)


async def test_suspension_while_connected_refuses_the_next_question(world):
    conv = await database_sync_to_async(_conv)(world.tenant, world.member)
    comm, connected = await ws_open(world.member, conv.pk, tenant=world.tenant)
    assert connected
    await database_sync_to_async(lambda: Tenant.objects.filter(pk=world.tenant.pk).update(status="suspended"))()
    await comm.send_json_to({"type": "send", "text": "hello"})
    frame = await comm.receive_json_from(timeout=10)
    await comm.disconnect()
    assert frame["type"] == "error" and frame["code"] == "tenant_suspended"
    assert not await database_sync_to_async(lambda: Message.objects.for_tenant(world.tenant).exists())()


async def test_a_foreign_origin_is_refused_at_the_handshake(world):
    conv = await database_sync_to_async(_conv)(world.tenant, world.member)
    comm, connected = await ws_open(
        world.member, conv.pk, tenant=world.tenant, origin=(b"origin", b"https://evil.example")
    )
    assert not connected
    await comm.disconnect()


async def test_knowledge_base_and_adapter_access_are_checked_on_send(world):
    def setup() -> tuple[Conversation, KnowledgeBase, KnowledgeBase]:
        secret = KnowledgeBase.objects.create(
            tenant=world.tenant, name="Board", embedding_model="m", read_access="roles", read_roles=["admin"]
        )
        foreign = KnowledgeBase.objects.create(tenant=world.other_tenant, name="Beta", embedding_model="m")
        Adapter.objects.create(name="unassigned", base_model=BaseModel.objects.create(name="bm"), source="/x")
        return _conv(world.tenant, world.member), secret, foreign

    conv, secret, foreign = await database_sync_to_async(setup)()
    comm, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
    frames = []
    for extra in ({"knowledge_bases": [secret.pk]}, {"knowledge_bases": [foreign.pk]}, {"adapter": "unassigned"}):
        await comm.send_json_to({"type": "send", "text": "hi", **extra})
        frames.append(await comm.receive_json_from(timeout=10))
    await comm.send_json_to({"type": "dance"})
    frames.append(await comm.receive_json_from(timeout=10))
    await comm.send_json_to({"type": "send", "text": "hi", "knowledge_bases": "all"})
    frames.append(await comm.receive_json_from(timeout=10))
    await comm.disconnect()
    assert [f["code"] for f in frames] == ["not_found", "not_found", "not_found", "invalid", "invalid"]
    assert frames[0]["message"] == frames[1]["message"]  # another tenant's KB reads like an unreadable one
    assert "adapter" in frames[2]["message"]

    def unchanged() -> bool:
        c = Conversation.objects.for_tenant(world.tenant).get(pk=conv.pk)
        return (
            not c.knowledge_bases.exists() and c.adapter == "" and not Message.objects.for_tenant(world.tenant).exists()
        )

    assert await database_sync_to_async(unchanged)()


@pytest.mark.engine
@pytest.mark.parametrize("role", ["viewer", "member", "admin"])
async def test_every_role_may_chat(engine_backend, world, role):
    user = world.user(role)
    conv = await database_sync_to_async(_conv)(world.tenant, user)
    comm, _ = await ws_open(user, conv.pk, tenant=world.tenant)
    await comm.send_json_to({"type": "send", "text": "Say hello.", "max_tokens": 4})
    frames = await collect(comm)
    await comm.disconnect()
    assert frames[-1]["type"] == "done" and frames[-1]["status"] == "complete"
