"""/api/v1/: each app contributes ``<app>/api.py`` with ``urlpatterns``; the schema and its browsable UI."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

API_APPS = ["tenants", "knowledge", "chat", "adapters", "inference_pool", "agents"]


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


urlpatterns = [
    path("v1/", include(_app_patterns())),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
