"""/api/v1/: each app contributes ``<app>/api.py`` with ``urlpatterns``; the schema and its browsable UI."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from adapters import api as adapters_api
from agents import api as agents_api
from chat import api as chat_api
from core.api import schema  # noqa: F401  (registers the authentication schemes with drf-spectacular)
from core.errors import ErrorCode
from guardrails import api as guardrails_api
from inference_pool import api as inference_pool_api
from knowledge import api as knowledge_api
from tenants import api as tenants_api

# Each app's ``<app>/api.py`` and its URL namespace, named here: a missing module fails at start-up, never silently.
API_MODULES: list[tuple[str, Any]] = [
    ("tenants", tenants_api),
    ("knowledge", knowledge_api),
    ("chat", chat_api),
    ("adapters", adapters_api),
    ("inference_pool", inference_pool_api),
    ("guardrails", guardrails_api),
    ("agents", agents_api),
]


def _app_patterns() -> list[Any]:
    return [path("", include((module.urlpatterns, f"{app}-api"))) for app, module in API_MODULES]


@csrf_exempt  # no state changes here; without it an unknown POST/DELETE would get the HTML CSRF page
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Unknown /api/ paths (and ids that are not ids) answer the API's error body, not the HTML 404 page."""
    return JsonResponse({"code": ErrorCode.NOT_FOUND, "message": "Not found.", "details": {}}, status=404)


urlpatterns = [
    path("v1/", include(_app_patterns())),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^(?P<rest>.*)$", api_not_found),
]
