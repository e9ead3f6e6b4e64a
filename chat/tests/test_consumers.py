"""The chat socket end to end: the real ASGI app, the real llama-server, real PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from chat.models import Conversation, Message
from chat.services import conversation_create
from chat.tests.conftest import collect, indexed_document, receive_until_tokens, register_engine, wait_for, ws_open
from tenants.models import AuditEvent, QuotaCounter, UsageRecord
from tests.engine import make_engine

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

HANDBOOK = (
    "# Travel policy\n\n"
    "Employees of the Zephyr department book trains for trips shorter than 600 kilometres. "
    "Flights need the approval of a director. The daily meal allowance on business trips is 42 euros.\n"
)


@pytest.fixture
def kb(world: Any) -> Any:
    from knowledge.services import knowledge_base_create

    return knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Handbook")


def _conversation(world: Any, user: Any, role: str, kb_ids: list[int] | None = None) -> Conversation:
    return conversation_create(tenant=world.tenant, user=user, role=role, knowledge_base_ids=kb_ids or [])


async def test_tokens_stream_and_the_answer_is_saved_with_citations_and_usage(engine_backend, world, kb, monkeypatch):
    doc = await database_sync_to_async(indexed_document)(kb=kb, name="travel.md", text=HANDBOOK, actor=world.admin)
    conv = await database_sync_to_async(_conversation)(world, world.member, "member", [kb.pk])

    # what reaches the engine: a spy around the real pool (the engine itself is real)
    import inference_pool.services as pool_services

    seen: list[Any] = []
    real = pool_services.pool_stream

    def spy(*, request: Any) -> Any:
        seen.append(request)
        return real(request=request)

    monkeypatch.setattr(pool_services, "pool_stream", spy)

    comm, connected = await ws_open(world.member, conv.pk, tenant=world.tenant)
    assert connected
    question = "What is the daily meal allowance on business trips? Reply to jane.doe@example.com"
    await comm.send_json_to({"type": "send", "text": question, "max_tokens": 40})
    frames = await collect(comm)
    await comm.disconnect()

    kinds = [f["type"] for f in frames]
    assert kinds[0] == "start" and kinds[1] == "citations" and kinds[-1] == "done", kinds
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert len(tokens) >= 2  # streamed, not one blob
    done = frames[-1]
    assert done["status"] == "complete"
    citations = frames[1]["citations"]
    assert citations[0]["n"] == 1 and citations[0]["document_id"] == doc.pk
    assert citations[0]["document_name"] == "travel.md"

    # raw PII never reached the engine: the email went out as a placeholder
    [request] = seen
    sent = "\n".join(m["content"] for m in request.messages)
    assert "jane.doe@example.com" not in sent and "<EMAIL_ADDRESS_1>" in sent
    assert "42 euros" in sent  # the retrieved passage, quoted as numbered context
    assert "[1] Source: travel.md" in sent

    def saved() -> tuple[Message, Message]:
        user_msg, answer = Message.objects.for_tenant(world.tenant).filter(conversation=conv).order_by("id")
        return user_msg, answer

    user_msg, answer = await database_sync_to_async(saved)()
    assert user_msg.text == question and "<EMAIL_ADDRESS_1>" in user_msg.masked_text
    assert answer.status == Message.Status.COMPLETE
    assert answer.text == done["text"]
    assert done["text"] == "".join(tokens)  # the output guard acts before tokens leave: what streamed is final
    assert answer.citations[0]["document_id"] == doc.pk
    assert answer.tokens_in == done["usage"]["prompt_tokens"] > 0
    assert answer.tokens_out == done["usage"]["completion_tokens"] > 0
    assert answer.backend == "shared-engine" and answer.model == settings.LLAMA_MODEL_NAME
    assert answer.ttft_ms and answer.ttft_ms > 0
    for stage in ("authorize", "quota", "input_guard", "mask", "retrieve", "prompt", "ttft", "output_guard"):
        assert stage in answer.timings, answer.timings
    assert answer.guardrails["input"]["decision"] in ("allow", "warn")
    assert "groundedness" in answer.guardrails["output"]

    def accounting() -> tuple[list[UsageRecord], QuotaCounter, AuditEvent]:
        usage = list(UsageRecord.objects.for_tenant(world.tenant))
        day = QuotaCounter.objects.for_tenant(world.tenant).get(period="day")
        audit = AuditEvent.objects.filter(tenant=world.tenant, action="chat.completion").get()
        return usage, day, audit

    usage, day, audit = await database_sync_to_async(accounting)()
    [record] = usage
    assert (record.tokens_in, record.tokens_out) == (answer.tokens_in, answer.tokens_out)
    assert record.user_id == world.member.pk and record.outcome == "complete"
    assert (day.used, day.reserved) == (answer.tokens_in + answer.tokens_out, 0)
    assert audit.details["tokens_out"] == answer.tokens_out
    assert "jane" not in str(audit.details)


async def test_stop_mid_stream_keeps_the_partial_answer(engine_backend, world):
    conv = await database_sync_to_async(_conversation)(world, world.member, "member")
    comm, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
    await comm.send_json_to(
        {"type": "send", "text": "Write a long story about a dragon and a knight.", "max_tokens": 400}
    )
    early = await receive_until_tokens(comm, 5)
    await comm.send_json_to({"type": "stop"})
    rest = await collect(comm)
    await comm.disconnect()
    done = rest[-1]
    assert done["type"] == "done" and done["status"] == "stopped"
    streamed = "".join(f["text"] for f in early + rest if f["type"] == "token")
    assert done["text"] == streamed and streamed

    answer = await database_sync_to_async(
        lambda: Message.objects.for_tenant(world.tenant).get(conversation=conv, role="assistant")
    )()
    assert answer.status == Message.Status.STOPPED
    assert answer.text == streamed
    assert 5 <= answer.tokens_out < 400
    conv_after = await database_sync_to_async(lambda: Conversation.objects.for_tenant(world.tenant).get(pk=conv.pk))()
    assert conv_after.generating_since is None  # the lease is released
    record = await database_sync_to_async(lambda: UsageRecord.objects.for_tenant(world.tenant).get())()
    assert record.outcome == "stopped" and record.tokens_out == answer.tokens_out


async def test_disconnect_mid_stream_keeps_the_partial_answer(engine_backend, world):
    conv = await database_sync_to_async(_conversation)(world, world.member, "member")
    comm, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
    await comm.send_json_to(
        {"type": "send", "text": "Write a long story about a dragon and a knight.", "max_tokens": 400}
    )
    early = await receive_until_tokens(comm, 5)
    await comm.disconnect()
    streamed = "".join(f["text"] for f in early if f["type"] == "token")

    answer = await wait_for(
        lambda: (
            Message.objects.for_tenant(world.tenant)
            .filter(conversation=conv, role="assistant", status=Message.Status.STOPPED)
            .first()
        )
    )
    assert answer.text.startswith(streamed) and len(answer.text) >= len(streamed) > 0
    assert answer.tokens_out >= 5
    conv_after = await database_sync_to_async(lambda: Conversation.objects.for_tenant(world.tenant).get(pk=conv.pk))()
    assert conv_after.generating_since is None


async def test_a_backend_dying_mid_stream_ends_with_an_error_frame_and_nothing_lost(world, transactional_db, tmp_path):
    engine = make_engine(slots=1, context=2048, log_dir=tmp_path, name="doomed")
    await asyncio.to_thread(engine.start, timeout=120)
    try:
        await database_sync_to_async(register_engine)(engine, name="doomed-engine", max_concurrent=1)
        conv = await database_sync_to_async(_conversation)(world, world.member, "member")
        comm, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
        await comm.send_json_to(
            {"type": "send", "text": "Write a long story about a dragon and a knight.", "max_tokens": 400}
        )
        early = await receive_until_tokens(comm, 5)
        assert engine.proc is not None
        engine.proc.kill()  # the engine dies in the middle of the answer
        rest = await collect(comm)
        await comm.disconnect()
    finally:
        await asyncio.to_thread(engine.stop)
    error = rest[-1]
    assert error["type"] == "error" and error["code"] == "upstream_interrupted"
    assert "kept" in error["message"]
    streamed = "".join(f["text"] for f in early + rest if f["type"] == "token")
    answer = await database_sync_to_async(
        lambda: Message.objects.for_tenant(world.tenant).get(conversation=conv, role="assistant")
    )()
    assert answer.status == Message.Status.ERROR and answer.error_code == "upstream_interrupted"
    assert answer.text == streamed and len(streamed) > 0
    assert error["message_id"] == answer.pk
    question = await database_sync_to_async(
        lambda: Message.objects.for_tenant(world.tenant).get(conversation=conv, role="user")
    )()
    assert question.text.startswith("Write a long story")
    record = await database_sync_to_async(lambda: UsageRecord.objects.for_tenant(world.tenant).get())()
    assert record.outcome == "error" and record.tokens_out >= 5


async def test_one_generation_at_a_time_per_conversation(engine_backend, world):
    conv = await database_sync_to_async(_conversation)(world, world.member, "member")
    comm, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
    other_tab, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
    await comm.send_json_to({"type": "send", "text": "Tell me a long story about the sea.", "max_tokens": 200})
    await receive_until_tokens(comm, 2)
    await comm.send_json_to({"type": "send", "text": "And another one.", "max_tokens": 20})
    busy = await comm.receive_json_from(timeout=10)
    while busy["type"] == "token":
        busy = await comm.receive_json_from(timeout=10)
    assert busy["type"] == "error" and busy["code"] == "busy_conversation"
    # a second tab of the same conversation is refused too (the lease is in the database)
    await other_tab.send_json_to({"type": "send", "text": "Me too.", "max_tokens": 20})
    refused = await other_tab.receive_json_from(timeout=20)
    assert refused["type"] == "error" and refused["code"] == "busy_conversation"
    await comm.send_json_to({"type": "stop"})
    await collect(comm)
    await comm.disconnect()
    await other_tab.disconnect()
    assert (
        await database_sync_to_async(
            lambda: Message.objects.for_tenant(world.tenant).filter(conversation=conv, role="user").count()
        )()
        == 1
    )


async def test_regenerate_replaces_the_last_answer(engine_backend, world):
    conv = await database_sync_to_async(_conversation)(world, world.member, "member")
    comm, _ = await ws_open(world.member, conv.pk, tenant=world.tenant)
    await comm.send_json_to({"type": "send", "text": "Name a colour.", "max_tokens": 8})
    first = (await collect(comm))[-1]
    await comm.send_json_to({"type": "regenerate", "max_tokens": 8})
    second = (await collect(comm))[-1]
    await comm.disconnect()
    assert first["type"] == second["type"] == "done"
    roles = await database_sync_to_async(
        lambda: list(
            Message.objects.for_tenant(world.tenant).filter(conversation=conv).values_list("role", "id").order_by("id")
        )
    )()
    assert [r for r, _ in roles] == ["user", "assistant"]
    assert roles[1][1] == second["message_id"] != first["message_id"]


FORMS = (
    "# Travel form\n\nThe travel form is at https://collector.example/form?d=Q3-numbers. Fill it in before you book.\n"
)


async def test_pii_and_data_links_the_model_writes_never_reach_the_socket(engine_backend, world, kb, monkeypatch):
    """Issues 17 and 22: the output guard acts while the answer streams. The department's system prompt gives the
    model a phone number or an e-mail address, a document gives it a link that carries data; none reaches the socket,
    and what streamed is the answer stored and the final text. A small model does not always copy: each case is
    asked up to three times (greedy first, then sampled; the socket has no sampling options, so they are set on the
    pipeline's input), every answer checked frame by frame."""
    import chat.consumers
    from chat.pipeline import ChatInput

    monkeypatch.setattr("chat.pipeline.run.canary_new", lambda: "cnry-5f0c2a9e7b1d4836")  # part of the prompt
    await database_sync_to_async(indexed_document)(kb=kb, name="forms.md", text=FORMS, actor=world.admin)

    def setup(system_prompt: str, kb_ids: list[int]) -> Conversation:
        world.tenant.system_prompt = system_prompt
        world.tenant.save(update_fields=["system_prompt"])
        return _conversation(world, world.member, "member", kb_ids)

    default_prompt = world.tenant.system_prompt
    cases = [
        (
            "The helpdesk phone number is +46 70 123 45 67.",
            [],
            "What is the helpdesk phone number?",
            "[REDACTED:PHONE_NUMBER]",
            ("+46", "70 123", "45 67"),
        ),
        (
            "The helpdesk e-mail address is kari.nordmann@example.org.",
            [],
            "What is the helpdesk e-mail address?",
            "[REDACTED:EMAIL_ADDRESS]",
            ("kari", "nordmann", "example.org"),
        ),
        (default_prompt, [kb.pk], "Where is the travel form?", "[link removed]", ("collector.example", "Q3-numbers")),
    ]
    for system_prompt, kb_ids, question, marker, secrets in cases:
        answers = []
        for temperature, seed in ((0.0, 1), (0.3, 2), (0.3, 3)):
            monkeypatch.setattr(
                chat.consumers, "ChatInput", functools.partial(ChatInput, temperature=temperature, seed=seed)
            )
            conv = await database_sync_to_async(setup)(system_prompt, kb_ids)
            comm, connected = await ws_open(world.member, conv.pk, tenant=world.tenant)
            assert connected
            await comm.send_json_to({"type": "send", "text": question, "max_tokens": 48})
            frames = await collect(comm)
            await comm.disconnect()
            received = ""
            for token in (f["text"] for f in frames if f["type"] == "token"):
                received += token
                assert not any(secret in received for secret in secrets), received
            done = frames[-1]
            assert done["type"] == "done", done
            answer = await database_sync_to_async(
                lambda conv=conv: Message.objects.for_tenant(world.tenant).get(conversation=conv, role="assistant")
            )()
            assert answer.text == done["text"] == received
            assert not any(secret in answer.masked_text for secret in secrets)  # nor in the next turn's history
            assert 0 < sum(answer.guardrails["output"]["stream"]["lag_tokens"]) <= answer.tokens_out  # sent once
            answers.append(received)
            if marker in received:  # the model wrote it, and it was removed before it left
                break
        assert marker in answers[-1], answers
