from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from core.localcache import generations_per_request
from core.logging import request_id_var, tenant_id_var, user_id_var

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestContextMiddleware:
    """Gives every request an id (kept from X-Request-ID when well-formed) for logs and the response header.

    Sync and async: under ASGI an async view (``/v1/``) runs with no thread hop for this middleware."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.is_async:
            return self.__acall__(request)  # type: ignore[return-value]
        rid = _request_id(request)
        rid_token = request_id_var.set(rid)
        tenant_token = tenant_id_var.set(None)
        user_token = user_id_var.set(None)
        try:
            with generations_per_request():  # the in-process caches' generations: one round trip per request
                response = self.get_response(request)
        finally:
            request_id_var.reset(rid_token)
            tenant_id_var.reset(tenant_token)
            user_id_var.reset(user_token)
        response["X-Request-ID"] = rid
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        rid = _request_id(request)
        rid_token = request_id_var.set(rid)
        tenant_token = tenant_id_var.set(None)
        user_token = user_id_var.set(None)
        try:
            with generations_per_request():  # the in-process caches' generations: one round trip per request
                response = await self.get_response(request)  # type: ignore[misc]
        finally:
            request_id_var.reset(rid_token)
            tenant_id_var.reset(tenant_token)
            user_id_var.reset(user_token)
        response["X-Request-ID"] = rid
        return response


def _request_id(request: HttpRequest) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
