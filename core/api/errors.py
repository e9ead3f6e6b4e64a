"""The REST API's one error translator: every error body is ``{code, message, details}``."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ApplicationError, ErrorCode


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        response = Response(exc.as_dict(), status=exc.status)
        if exc.retry_after:
            response["Retry-After"] = str(exc.retry_after)
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    if isinstance(exc, Http404):
        return Response({"code": ErrorCode.NOT_FOUND, "message": "Not found.", "details": {}}, status=404)
    handled = drf_exception_handler(exc, context)
    if handled is None:
        return None
    code: str = ErrorCode.ERROR
    message = "The request could not be completed."
    details: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        code, message = ErrorCode.INVALID, "The request is not valid."
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
    elif isinstance(exc, exceptions.APIException):
        code = str(exc.default_code)
        detail = exc.detail
        message = str(detail) if not isinstance(detail, dict | list) else message
        if handled.status_code == status.HTTP_401_UNAUTHORIZED:
            code = ErrorCode.NOT_AUTHENTICATED
        if isinstance(exc, exceptions.Throttled):
            code = ErrorCode.RATE_LIMITED
    handled.data = {"code": code, "message": message, "details": details}
    return handled
