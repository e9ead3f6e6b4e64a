"""Django's own middleware, with their request and response hooks run on the event loop.

Under ASGI, Django's ``MiddlewareMixin`` runs each sync ``process_request`` and ``process_response`` through
``sync_to_async(thread_sensitive=True)``: a hop to the one thread the whole process shares for sync work, and back.
The nine middleware below cost every request 15 such hops: about 1.9 ms of the 14 ms the portal added to a streamed
``/v1`` request (``make bench-gateway``, the same run with and without them), and under concurrency each request
queued for that one thread. Their hooks read and write headers, cookies and lazy objects; none touches the database
or the network, so here they run inline. The exceptions go to the thread as before, and only then: the session's
response hook when it saves the session, the messages' when messages were stored or read (they may write the
session), and CSRF's hooks when the token lives in the session (``CSRF_USE_SESSIONS``). ``process_view`` hooks are
called by Django's handler, not here, and keep their thread.

A hook that did reach the database here would fail loudly (Django raises ``SynchronousOnlyOperation`` for the ORM on
the event loop), never silently.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.checks import CheckMessage, Warning
from django.http import HttpRequest, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware as DjangoXFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django.utils.module_loading import import_string
from django_prometheus.middleware import PrometheusAfterMiddleware as DjangoPrometheusAfterMiddleware
from django_prometheus.middleware import PrometheusBeforeMiddleware as DjangoPrometheusBeforeMiddleware


class InlineHooks:
    """``MiddlewareMixin.__acall__`` with the hooks called directly, unless one says it needs the thread."""

    get_response: Any

    def request_needs_thread(self, request: HttpRequest) -> bool:
        return False

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response = None
        process_request = getattr(self, "process_request", None)
        if process_request is not None:
            if self.request_needs_thread(request):
                response = await sync_to_async(process_request, thread_sensitive=True)(request)
            else:
                response = process_request(request)
        response = response or await self.get_response(request)
        process_response = getattr(self, "process_response", None)
        if process_response is not None:
            if self.response_needs_thread(request, response):
                response = await sync_to_async(process_response, thread_sensitive=True)(request, response)
            else:
                response = process_response(request, response)
        return response


class PrometheusBeforeMiddleware(InlineHooks, DjangoPrometheusBeforeMiddleware):
    pass


class PrometheusAfterMiddleware(InlineHooks, DjangoPrometheusAfterMiddleware):
    pass


class SecurityMiddleware(InlineHooks, DjangoSecurityMiddleware):
    pass


class CommonMiddleware(InlineHooks, DjangoCommonMiddleware):
    pass


class XFrameOptionsMiddleware(InlineHooks, DjangoXFrameOptionsMiddleware):
    pass


class AuthenticationMiddleware(InlineHooks, DjangoAuthenticationMiddleware):
    """Sets a lazy ``request.user`` and ``request.auser``: the user is read only when a view asks."""


class SessionMiddleware(InlineHooks, DjangoSessionMiddleware):
    """A lazy session store per request; the response hook saves it in the thread when it changed."""

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (bool(session.modified) or settings.SESSION_SAVE_EVERY_REQUEST)


class MessageMiddleware(InlineHooks, DjangoMessageMiddleware):
    """A lazy message storage per request; its response hook runs in the thread when messages were stored or read."""

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and bool(storage.used or storage.added_new)


class CsrfViewMiddleware(InlineHooks, DjangoCsrfViewMiddleware):
    """The CSRF cookie read and set inline; with the token in the session both hooks keep the thread."""

    def request_needs_thread(self, request: HttpRequest) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)

    def response_needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        return bool(settings.CSRF_USE_SESSIONS)


# Django's deploy checks look for its own middleware by dotted path (security.W001, W002, W003) and cannot see the
# subclasses above; settings silence those three and this check stands in for them, by class.
_REQUIRED = (
    (DjangoSecurityMiddleware, "portal.W001", "the SECURE_* settings (HSTS, SSL redirect, nosniff) have no effect"),
    (DjangoXFrameOptionsMiddleware, "portal.W002", "pages are served without an X-Frame-Options header"),
    (DjangoCsrfViewMiddleware, "portal.W003", "forms are not protected against cross-site request forgery"),
)


def middleware_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """A warning for each of Django's security middleware that MIDDLEWARE holds neither as itself nor as a
    subclass."""
    classes = [import_string(path) for path in settings.MIDDLEWARE]
    return [
        Warning(f"No {required.__name__} (or subclass) in MIDDLEWARE: {effect}.", id=check_id)
        for required, check_id, effect in _REQUIRED
        if not any(isinstance(c, type) and issubclass(c, required) for c in classes)
    ]
