"""The console's one door: refuse the wrong method, resolve the caller's scope, translate domain errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache

from console.access import ConsoleScope, scope_from_request
from core.pages import page_errors

ConsoleView = Callable[..., Any]  # views return HttpResponse or StreamingHttpResponse


def console_view(*, methods: tuple[str, ...] = ("GET",), staff_only: bool = False) -> Callable[[ConsoleView], Any]:
    """Wrap a view ``view(request, scope, *args)``; staff-only views refuse department admins with 403."""

    def decorate(view: ConsoleView) -> Callable[..., HttpResponse]:
        @never_cache
        @functools.wraps(view)
        @page_errors
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            scope: ConsoleScope = scope_from_request(request)
            if staff_only:
                scope.require_staff()
            return view(request, scope, *args, **kwargs)

        return wrapper

    return decorate


def is_htmx(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


def back(request: HttpRequest, fallback: str) -> HttpResponse:
    """After a plain (non-htmx) form post: back to the page the form was on (same host only)."""
    target = request.POST.get("next") or fallback
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = fallback
    return redirect(target)
