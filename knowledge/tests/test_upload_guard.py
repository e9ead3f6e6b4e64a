"""The ASGI upload guard: an oversize upload is refused from its Content-Length before the body is read, only for a
caller verified as a member of the knowledge base's department (others reach Django's own 401/404 unchanged)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from knowledge.services import knowledge_base_create
from knowledge.upload_guard import UploadSizeGuard
from tenants.models import Quota
from tests.api_harness import make_api_keys

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1024 * 1024


class Downstream:
    """Stands for Django behind the guard: records that it was called and how much body it read."""

    def __init__(self) -> None:
        self.called = False
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(path: str, *, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[Downstream, list]:
    app = Downstream()
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    await UploadSizeGuard(app)(scope, receive, send)
    return app, sent


@pytest.fixture
def api_keys(world: Any) -> Any:
    return make_api_keys(world)


@pytest.fixture
def setup(world: Any, api_keys: Any) -> Any:
    Quota.objects.update_or_create(tenant=world.tenant, defaults={"max_upload_mb": 1})
    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Guarded")
    return kb


def _bearer(secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {secret}".encode())]


async def test_a_member_key_is_refused_from_the_declared_length_without_reading(setup, api_keys):
    headers = [*_bearer(api_keys.secrets["member"]), (b"content-length", str(38 * MB).encode())]
    app, sent = await call(f"/api/v1/knowledge-bases/{setup.pk}/documents/", headers=headers, chunks=[b"x" * 1000])
    assert not app.called
    assert sent[0]["status"] == 413
    body = json.loads(sent[1]["body"])
    assert body == {
        "code": "upload_too_large",
        "message": "The upload is 38.0 MB; your department's limit is 1 MB per file.",
        "details": {},
    }


async def test_a_body_without_length_stops_being_read_past_the_limit(setup, api_keys):
    chunks = [b"x" * (256 * 1024)] * 12  # 3 MB, no Content-Length
    app, sent = await call(
        f"/api/v1/knowledge-bases/{setup.pk}/documents/", headers=_bearer(api_keys.secrets["member"]), chunks=chunks
    )
    assert app.called and app.read <= MB + 64 * 1024
    assert next(m for m in sent if m["type"] == "http.response.start")["status"] == 413


async def test_an_upload_within_the_limit_goes_through(setup, api_keys):
    headers = [*_bearer(api_keys.secrets["member"]), (b"content-length", str(MB // 2).encode())]
    app, sent = await call(f"/api/v1/knowledge-bases/{setup.pk}/documents/", headers=headers, chunks=[b"x" * (MB // 2)])
    assert app.called and app.read == MB // 2 and sent[0]["status"] == 201


@pytest.mark.parametrize("who", ["anonymous", "other_tenant", "bad_key"])
async def test_callers_it_cannot_verify_reach_django_unchanged(setup, api_keys, who):
    """Fail closed: the limit of another department's knowledge base is never revealed; Django answers them."""
    secret = {"anonymous": None, "other_tenant": api_keys.secrets["other_tenant"], "bad_key": "pk_nope.nope"}[who]
    headers = [(b"content-length", str(38 * MB).encode())] + (_bearer(secret) if secret else [])
    app, sent = await call(f"/api/v1/knowledge-bases/{setup.pk}/documents/", headers=headers, chunks=[b"x"])
    assert app.called and sent[0]["status"] == 201


async def test_the_page_door_uses_the_session(setup, world, client):
    await sync_to_async(client.force_login)(world.member)
    session = client.cookies["sessionid"].value
    headers = [(b"cookie", f"sessionid={session}".encode()), (b"content-length", str(5 * MB).encode())]
    app, sent = await call(f"/knowledge/{setup.pk}/upload", headers=headers, chunks=[b"x"])
    assert not app.called and sent[0]["status"] == 413
    assert b"limit is 1 MB per file" in sent[1]["body"]
    await sync_to_async(client.force_login)(world.outsider)
    headers = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()), headers[1]]
    app, sent = await call(f"/knowledge/{setup.pk}/upload", headers=headers, chunks=[b"x"])
    assert app.called
