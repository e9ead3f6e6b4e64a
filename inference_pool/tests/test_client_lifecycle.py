"""Engine clients outlive registry changes while requests still use them (a real llama-server).

A registry refresh that drops a backend (disabled, draining, deleted) or changes its address or key must not close
the HTTP client of a request already running on it: the request finishes, and the old client is closed once its
last request ends. New requests get a fresh client."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from channels.db import database_sync_to_async

from inference_pool.health import backend_probe_all
from inference_pool.models import Backend
from inference_pool.router import Router
from inference_pool.tests.helpers import MODEL, drain, register
from inference_pool.types import ChatRequest, TokenEvent

pytestmark = [pytest.mark.engine]

# ~500 prompt tokens, unique to this file (no prompt cache hit): a few seconds before the first token.
SLOW_PROMPT = [
    {
        "role": "user",
        "content": " ".join(f"Note {i}: the audit of ledger {i * 7} found no missing invoices." for i in range(40))
        + " List the ledgers.",
    }
]


def _request(**kw) -> ChatRequest:
    return ChatRequest(
        **{
            "messages": [{"role": "user", "content": "Count from one to fifty."}],
            "model": MODEL,
            "temperature": 0,
            "seed": 3,
            "max_tokens": 48,
            **kw,
        }
    )


@pytest.fixture
def backend(llama_server, transactional_db) -> Backend:
    row = register(llama_server, "lifecycle-engine")
    backend_probe_all()
    row.refresh_from_db()
    return row


def _processing(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(r"^llamacpp:requests_processing ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_a_stream_survives_a_key_rotation_and_new_requests_get_a_fresh_client(backend):
    router = Router()
    try:
        events = router.stream(_request())
        first = await anext(events)
        assert isinstance(first, TokenEvent)
        old = router.clients[backend.pk]
        # An admin rotates the backend's key mid-stream (llama-server without --api-key accepts any).
        await database_sync_to_async(Backend.objects.filter(pk=backend.pk).update)(api_key="rotated-key")
        await router.refresh()
        await router.drain_background()
        new = router.clients[backend.pk]
        assert new is not old and new.target.api_key == "rotated-key"
        assert not old.http.is_closed  # still streaming the running request

        rest = await drain(events)
        assert rest.error is None and rest.done is not None
        t = rest.done.telemetry
        assert (t.outcome, t.backend) == ("ok", "lifecycle-engine")
        assert t.tokens_out == 1 + len(rest.tokens) == rest.usage.completion_tokens
        await router.drain_background()
        assert old.http.is_closed  # closed once its last request ended

        after = await drain(router.stream(_request(max_tokens=4)))
        assert after.done is not None and after.done.telemetry.outcome == "ok"
        assert router.clients[backend.pk] is new and not new.http.is_closed
    finally:
        await router.aclose()
    assert new.http.is_closed


async def test_a_request_waiting_for_its_first_token_finishes_on_a_backend_put_to_drain(backend, llama_server):
    router = Router()
    try:
        await router.refresh()
        client = router.clients[backend.pk]
        running = asyncio.ensure_future(drain(router.stream(_request(messages=SLOW_PROMPT, max_tokens=6))))
        for _ in range(200):  # until the engine is working on it (the prompt takes it a few seconds)
            if await database_sync_to_async(_processing)(llama_server.spec.base_url) >= 1:
                break
            await asyncio.sleep(0.02)
        assert not running.done()
        await database_sync_to_async(Backend.objects.filter(pk=backend.pk).update)(draining=True)
        await router.refresh()
        await router.drain_background()
        assert backend.pk not in router.clients
        assert not client.http.is_closed  # the running request still holds it

        result = await running
        assert result.error is None and result.done is not None
        assert result.done.telemetry.outcome == "ok" and result.done.telemetry.tokens_out == len(result.tokens) > 0
        await router.drain_background()
        assert client.http.is_closed  # no leak: closed after its last request
    finally:
        await router.aclose()


async def test_a_re_registered_backend_leaves_running_streams_alone(backend, llama_server):
    router = Router()
    try:
        events = router.stream(_request())
        assert isinstance(await anext(events), TokenEvent)
        old = router.clients[backend.pk]

        def re_register() -> Backend:
            Backend.objects.filter(pk=backend.pk).delete()
            return register(llama_server, "lifecycle-engine")

        fresh = await database_sync_to_async(re_register)()
        await router.refresh()
        assert backend.pk not in router.clients and router.clients[fresh.pk] is not old

        rest = await drain(events)
        assert rest.error is None and rest.done is not None and rest.done.telemetry.outcome == "ok"
        await router.drain_background()
        assert old.http.is_closed
        after = await drain(router.stream(_request(max_tokens=4)))
        assert after.done is not None and after.done.telemetry.outcome == "ok"
    finally:
        await router.aclose()
