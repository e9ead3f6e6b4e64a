"""Chat test helpers: the real llama-server registered in the pool, sessions for sockets, frame collection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from inference_pool.models import Backend
from inference_pool.services import backend_register
from tenants.middleware import SESSION_KEY

ORIGIN = (b"origin", b"http://testserver")


def register_engine(engine: Any, *, name: str, max_concurrent: int = 8) -> Backend:
    """Register a running llama-server as a pool Backend (its context per slot is the window the prompt fits)."""
    spec = engine.spec
    backend = backend_register(
        name=name,
        kind="llamacpp",
        base_url=spec.base_url,
        model=settings.LLAMA_MODEL_NAME,
        served_name=settings.LLAMA_MODEL_NAME,
        max_concurrent=max_concurrent,
        context_length=spec.context // spec.slots,
    )
    Backend.objects.filter(pk=backend.pk).update(health="up")
    return backend


@pytest.fixture
def engine_backend(llama_server: Any, transactional_db: Any) -> Backend:
    return register_engine(llama_server, name="shared-engine")


def session_cookie(user: Any, tenant: Any = None) -> str:
    client = Client()
    client.force_login(user)
    if tenant is not None:
        session = client.session
        session[SESSION_KEY] = tenant.pk
        session.save()
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def ws_open(
    user: Any, conversation_id: Any, *, tenant: Any = None, origin: tuple[bytes, bytes] = ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    from portal.asgi import application

    headers = [origin]
    if user is not None:
        cookie = await database_sync_to_async(session_cookie)(user, tenant)
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/chat/{conversation_id}/", headers=headers)
    connected, _ = await comm.connect(timeout=10)
    return comm, connected


async def collect(comm: WebsocketCommunicator, *, wait_s: float = 90) -> list[dict[str, Any]]:
    """Frames until the answer ends (``done`` or ``error``)."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await comm.receive_json_from(timeout=wait_s)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            return frames


async def ask_together(
    user: Any, tenant: Any, conversations: list[Any], *, text: str, max_tokens: int
) -> list[dict[str, Any]]:
    """One socket per conversation, every one asks ``text`` at the same moment: the last frame of each answer."""
    sockets = []
    for conv in conversations:
        comm, connected = await ws_open(user, conv.pk, tenant=tenant)
        assert connected
        sockets.append(comm)

    async def ask(comm: WebsocketCommunicator) -> dict[str, Any]:
        await comm.send_json_to({"type": "send", "text": text, "max_tokens": max_tokens})
        return (await collect(comm, wait_s=180))[-1]

    finals = await asyncio.gather(*(ask(c) for c in sockets))
    for comm in sockets:
        await comm.disconnect()
    return list(finals)


async def receive_until_tokens(comm: WebsocketCommunicator, n: int, *, wait_s: float = 90) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while sum(1 for f in frames if f["type"] == "token") < n:
        frame = await comm.receive_json_from(timeout=wait_s)
        frames.append(frame)
        assert frame["type"] not in ("done", "error"), frames
    return frames


async def wait_for(predicate: Any, *, wait_s: float = 20.0) -> Any:
    """Poll a sync predicate (run in a thread) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        value = await database_sync_to_async(predicate)()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def indexed_document(*, kb: Any, name: str, text: str, actor: Any) -> Any:
    """Upload and ingest a document in-process (the real parse → chunk → embed → index path, without a worker)."""
    from knowledge.models import Document
    from knowledge.services import document_ingest, document_upload

    [result] = document_upload(knowledge_base=kb, actor=actor, files=[SimpleUploadedFile(name, text.encode())])
    document_ingest(document_id=result.document.pk)
    doc = Document.objects.for_tenant(kb.tenant_id).get(pk=result.document.pk)
    assert doc.status == Document.Status.INDEXED, doc.error
    return doc
