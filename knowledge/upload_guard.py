"""Refuse an oversize upload before its body is received (ASGI middleware, in front of Django).

Django's ASGI handler reads a request's whole body before any view runs, so a 38 MB file sent to a department with
a 25 MB limit used to be received, spooled to disk, and only then refused. This middleware looks at the two upload
doors (the knowledge page's ``/knowledge/<kb>/upload`` and the REST ``/api/v1/knowledge-bases/<kb>/documents/``):
for a caller it can verify as a member of the knowledge base's department (session cookie or API key), a
``Content-Length`` over that department's per-file limit is answered at once with 413 and the reason, and a body
without a length stops being read once it passes the limit. A caller it cannot verify goes on to Django unchanged,
which answers 401/404 as before (the limit of another department's knowledge base is never revealed).

One upload request carries at most the per-file limit (plus the multipart envelope): the knowledge page sends each
file in its own request, and API clients send large files one per request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PAGE = re.compile(r"^/knowledge/(?P<kb>[0-9]{1,18})/upload/?$")
_API = re.compile(r"^/api/v1/knowledge-bases/(?P<kb>[0-9]{1,18})/documents/$")
ENVELOPE_BYTES = 64 * 1024  # multipart boundaries and part headers around the file


def upload_limit_message(*, size_bytes: int, limit_mb: int) -> str:
    return f"The upload is {size_bytes / 1048576:.1f} MB; your department's limit is {limit_mb:,} MB per file."


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


def upload_limit_mb_for_caller(*, kb_id: int, session_key: str, bearer: str) -> int | None:
    """The per-file limit (MB) of the knowledge base's department when the caller is one of its members (by session
    or API key); None when that cannot be established (Django's own checks answer then)."""
    from importlib import import_module

    from django.contrib.auth import SESSION_KEY

    from core.errors import ApplicationError
    from knowledge.models import KnowledgeBase
    from tenants.models import Membership, Quota
    from tenants.selectors import api_key_authenticate

    tenant_ids: list[int] = []
    if bearer:
        try:
            tenant_ids = [api_key_authenticate(raw_key=bearer).tenant_id]
        except ApplicationError:
            return None
    elif session_key:
        user_id = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key).get(SESSION_KEY)
        if user_id is None:
            return None
        # the caller's own departments first (fail closed: a knowledge base is looked up only inside them)
        tenant_ids = list(Membership.unscoped.filter(user_id=user_id).values_list("tenant_id", flat=True))
    tenant_id = next(
        (t for t in tenant_ids if KnowledgeBase.objects.for_tenant(t).filter(pk=kb_id).exists()),
        None,
    )
    if tenant_id is None:
        return None
    quota = Quota.objects.filter(tenant_id=tenant_id).first()
    return int(quota.max_upload_mb if quota is not None else Quota._meta.get_field("max_upload_mb").default)


class UploadSizeGuard:
    def __init__(self, app: Any) -> None:  # an ASGI application (Django's ASGIHandler)
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        match = _PAGE.match(scope.get("path", "")) or _API.match(scope.get("path", ""))
        if match is None:
            return await self.app(scope, receive, send)
        bearer = ""
        authorization = _header(scope, b"authorization").split()
        if len(authorization) == 2 and authorization[0].lower() == "bearer":
            bearer = authorization[1]
        cookie = SimpleCookie()
        try:
            cookie.load(_header(scope, b"cookie"))
        except Exception:  # a malformed cookie header: Django deals with it
            cookie = SimpleCookie()
        morsel = cookie.get(settings.SESSION_COOKIE_NAME)
        limit_mb = await database_sync_to_async(upload_limit_mb_for_caller)(
            kb_id=int(match["kb"]), session_key=morsel.value if morsel else "", bearer=bearer
        )
        if limit_mb is None:
            return await self.app(scope, receive, send)
        cap = limit_mb * 1024 * 1024 + ENVELOPE_BYTES
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > cap:
            return await _refuse(scope, send, upload_limit_message(size_bytes=int(declared), limit_mb=limit_mb))

        received = 0
        over = False

        async def bounded_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:  # no (or a false) Content-Length: stop reading here
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not over:
                await send(message)

        await self.app(scope, bounded_receive, guarded_send)
        if over:
            await _refuse(scope, send, upload_limit_message(size_bytes=received, limit_mb=limit_mb))


async def _refuse(scope: Scope, send: Send, message: str) -> None:
    """413 in the door's own form: JSON ``{code, message, details}`` for the API, the page's error fragment else."""
    if scope["path"].startswith("/api/"):
        body = json.dumps({"code": "upload_too_large", "message": message, "details": {}}).encode()
        content_type = b"application/json"
    else:
        from django.utils.html import escape

        body = f'<div class="flash error" role="alert" data-testid="upload-error">{escape(message)}</div>'.encode()
        content_type = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
