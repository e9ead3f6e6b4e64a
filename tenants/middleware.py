from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.logging import tenant_id_var, user_id_var
from tenants.models import Membership
from tenants.selectors import membership_list_for_user

SESSION_KEY = "tenant_id"


def resolve_membership(request: HttpRequest) -> Membership | None:
    """The browser session's current department: the one chosen in the session if the user still belongs to it
    and it is active, else the first active membership. Never a tenant the user is not a member of."""
    user = request.user
    if not user.is_authenticated:
        return None
    memberships = list(membership_list_for_user(user=user))
    chosen = request.session.get(SESSION_KEY)
    for m in memberships:
        if m.tenant_id == chosen:
            return m
    if memberships:
        request.session[SESSION_KEY] = memberships[0].tenant_id
        return memberships[0]
    return None


class CurrentTenantMiddleware:
    """Sets ``request.tenant``, ``request.membership`` and ``request.memberships`` lazily for browser sessions.
    API requests resolve their tenant from the API key in the API's authentication class instead.

    Sync and async. Under ASGI a request without a session cookie (an API call with a bearer key) has no signed-in
    user to resolve: it passes with no thread hop and no query; a browser session is resolved in a worker thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    @staticmethod
    def _resolve(request: HttpRequest) -> None:
        membership = resolve_membership(request)
        request.membership = membership  # type: ignore[attr-defined]
        request.tenant = membership.tenant if membership else None  # type: ignore[attr-defined]
        # for the JSON logs (RequestContextMiddleware resets both when the request ends)
        tenant_id_var.set(membership.tenant_id if membership else None)
        user_id_var.set(request.user.pk if request.user.is_authenticated else None)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.is_async:
            return self.__acall__(request)  # type: ignore[return-value]
        self._resolve(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            # the context variables set in the worker thread come back with it (asgiref copies the context)
            await sync_to_async(self._resolve)(request)
        else:
            request.membership = None  # type: ignore[attr-defined]
            request.tenant = None  # type: ignore[attr-defined]
        return await self.get_response(request)  # type: ignore[misc]
