"""The FLOOR of a Python gateway, for ``make bench-gateway`` only: a bare ASGI app under the same uvicorn that
forwards ``/v1/chat/completions`` to the engine and streams its bytes back untouched (httpx2 with a pooled
connection, as the portal's engine client). No key, no quota, no guard, no parsing: whatever it adds over the engine
called directly is what one HTTP hop through a Python ASGI server costs on this machine, the least any Python
gateway (LiteLLM's proxy, the portal) can add. Run: ``uvicorn bench.floor_proxy:app`` with ``FLOOR_ENGINE_URL``."""

from __future__ import annotations

import os
from typing import Any

import httpx2

ENGINE = os.environ.get("FLOOR_ENGINE_URL", "http://127.0.0.1:8000").rstrip("/")
_client: httpx2.AsyncClient | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _client is not None:
                    await _client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if _client is None:
        _client = httpx2.AsyncClient(timeout=60, trust_env=False)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] in ("/healthz", "/health"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    async with _client.stream(
        "POST", ENGINE + scope["path"], content=body, headers={"content-type": "application/json"}
    ) as response:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", response.headers.get("content-type", "text/event-stream").encode())],
            }
        )
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
