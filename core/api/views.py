"""Small shared pieces for the apps' API views."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework import viewsets
from rest_framework.parsers import JSONParser

# Object ids in paths: digits only and within bigint range, so a wild id is a 404 and never a database error.
ID_PATTERN = "[0-9]{1,18}"
MAX_ID = 999_999_999_999_999_999


def id_parameter(name: str, description: str) -> OpenApiParameter:
    """An integer path parameter documented with the bounds that ``ID_PATTERN`` accepts."""
    return OpenApiParameter(
        name,
        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        OpenApiParameter.PATH,
        description=description,
    )


class JsonViewSet(viewsets.GenericViewSet[Any]):
    """A viewset whose bodies are JSON only (uploads use their own multipart views)."""

    parser_classes = [JSONParser]
    lookup_value_regex = ID_PATTERN
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        """Views read through selectors; the browsable API asks for a queryset only to draw filter forms."""
        return []
