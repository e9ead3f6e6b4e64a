"""The page door's error translator: domain errors become a readable page (or an htmx partial)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from core.errors import ApplicationError, NotAuthenticated


def render_error(request: HttpRequest, error: ApplicationError) -> HttpResponse:
    if isinstance(error, NotAuthenticated) and not getattr(request, "htmx", False):
        return redirect_to_login(request.get_full_path())
    template = "partials/error.html" if getattr(request, "htmx", False) else "error.html"
    response = render(request, template, {"error": error}, status=error.status)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    if getattr(request, "htmx", False):
        # show the message in the page's error slot even when the target was something else
        response["HX-Retarget"] = "#flash"
        response["HX-Reswap"] = "innerHTML"
    return response


def page_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApplicationError as error:
            return render_error(request, error)

    return wrapper
