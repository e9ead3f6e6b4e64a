"""OpenAPI schema quality for /api/v1/: the two ways to authenticate and the one error body on every operation.

- ``ApiKeyScheme`` / ``PortalSessionScheme`` describe ``tenants.auth``'s authentication classes.
- ``add_error_responses`` (a drf-spectacular postprocessing hook) documents ``{code, message, details}`` for the
  error statuses every operation can answer (400, 401, 403, 404, 429; 409 for writes), so clients and schemathesis
  know the shape.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object

ERROR_COMPONENT = "Error"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error of the REST API has this body.",
    "properties": {
        "code": {"type": "string", "description": "machine-readable, e.g. not_found, forbidden, invalid"},
        "message": {"type": "string", "description": "a sentence a person understands"},
        "details": {
            "type": "object",
            "additionalProperties": True,
            "description": "per-field messages for invalid input; empty otherwise",
        },
    },
    "required": ["code", "message", "details"],
}

_ERROR_STATUSES = {
    "400": "The request is not valid.",
    "401": "No valid API key or session (unknown, revoked or expired key).",
    "403": "The role or the key's scopes do not allow this, or the department is suspended.",
    "404": "Not found (also: it belongs to another department).",
    "429": "Too many requests for this key, or the department's quota is used up (see Retry-After).",
}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        definition = build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer")
        definition["description"] = "An API key of the department: `Authorization: Bearer ep_…`"
        return dict(definition)


class PortalSessionScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.PortalSessionAuthentication"
    name = "sessionAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_COMPONENT] = ERROR_SCHEMA
    ref = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            statuses = dict(_ERROR_STATUSES)
            if method != "get":
                statuses["409"] = "The request conflicts with the current state (e.g. work still in progress)."
            for status, description in sorted(statuses.items()):
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": ref}}}
                )
    return result
