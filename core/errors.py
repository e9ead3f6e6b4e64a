"""Typed domain errors. Each door (pages, REST API, OpenAI endpoint, WebSocket) has one translator for them."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code = "error"
    status = 400
    default_message = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details = details or {}
        if code:
            self.code = code
        self.retry_after = retry_after
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidInput(ApplicationError):
    code = "invalid"
    status = 400
    default_message = "The request is not valid."


class NotAuthenticated(ApplicationError):
    code = "not_authenticated"
    status = 401
    default_message = "Sign in or send a valid API key."


class PermissionDenied(ApplicationError):
    code = "forbidden"
    status = 403
    default_message = "Your role does not allow this."


class NotFound(ApplicationError):
    """Also used for objects of another tenant: "not found" and "not yours" answer the same."""

    code = "not_found"
    status = 404
    default_message = "Not found."


class Conflict(ApplicationError):
    code = "conflict"
    status = 409
    default_message = "The request conflicts with the current state."


class QuotaExceeded(ApplicationError):
    code = "quota_exceeded"
    status = 429
    default_message = "Your department's quota is used up."


class Busy(ApplicationError):
    code = "busy"
    status = 503
    default_message = "Every model server is busy. Try again shortly."


class GuardrailBlocked(ApplicationError):
    code = "guardrail_blocked"
    status = 400
    default_message = "The request was blocked by the content policy."


class GuardrailUnavailable(GuardrailBlocked):
    """A guard failed (error or timeout): the request fails closed. A subclass of GuardrailBlocked on purpose."""

    code = "guardrail_unavailable"
    status = 503
    default_message = "The safety checks are unavailable right now, so the request was not sent. Try again shortly."


class UpstreamError(ApplicationError):
    code = "upstream_error"
    status = 502
    default_message = "The model server failed."


class TenantSuspended(ApplicationError):
    code = "tenant_suspended"
    status = 403
    default_message = "This department is suspended."
