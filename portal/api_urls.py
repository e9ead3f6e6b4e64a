"""/api/v1/: each app contributes ``<app>/api.py`` with ``urlpatterns``; the schema and its browsable UI."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.api import schema  # noqa: F401  (registers the authentication schemes with drf-spectacular)

API_APPS = ["tenants", "knowledge", "chat", "adapters", "inference_pool", "guardrails", "agents"]


def _app_patterns() -> list[Any]:
    patterns: list[Any] = []
    for app in API_APPS:
        try:
            module = import_module(f"{app}.api")
        except ModuleNotFoundError as exc:
            if exc.name != f"{app}.api":
                raise
            continue
        patterns.append(path("", include((module.urlpatterns, f"{app}-api"))))
    return patterns


@csrf_exempt  # no state changes here; without it an unknown POST/DELETE would get the HTML CSRF page
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Unknown /api/ paths (and ids that are not ids) answer the API's error body, not the HTML 404 page."""
    return JsonResponse({"code": "not_found", "message": "Not found.", "details": {}}, status=404)


urlpatterns = [
    path("v1/", include(_app_patterns())),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^(?P<rest>.*)$", api_not_found),
]
