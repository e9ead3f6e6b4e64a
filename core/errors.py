"""Typed domain errors. Each door (pages, REST API, OpenAI endpoint, WebSocket) has one translator for them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The codes every door may answer (``{code, message, details}``). Each app adds its own in ``<app>/errors.py``
    (e.g. ``inference_pool.errors.PoolErrorCode``); the values are the wire contract (docs/contracts.md) and never
    change."""

    ERROR = "error"
    INVALID = "invalid"
    NOT_AUTHENTICATED = "not_authenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    QUOTA_EXCEEDED = "quota_exceeded"
    BUDGET_EXCEEDED = "budget_exceeded"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    GUARDRAIL_BLOCKED = "guardrail_blocked"
    GUARDRAIL_UNAVAILABLE = "guardrail_unavailable"
    UPSTREAM_ERROR = "upstream_error"
    TENANT_SUSPENDED = "tenant_suspended"
    METHOD_NOT_ALLOWED = "method_not_allowed"


class ApplicationError(Exception):
    code: str = ErrorCode.ERROR
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
    code = ErrorCode.INVALID
    status = 400
    default_message = "The request is not valid."


class NotAuthenticated(ApplicationError):
    code = ErrorCode.NOT_AUTHENTICATED
    status = 401
    default_message = "Sign in or send a valid API key."


class PermissionDenied(ApplicationError):
    code = ErrorCode.FORBIDDEN
    status = 403
    default_message = "Your role does not allow this."


class NotFound(ApplicationError):
    """Also used for objects of another tenant: "not found" and "not yours" answer the same."""

    code = ErrorCode.NOT_FOUND
    status = 404
    default_message = "Not found."


class Conflict(ApplicationError):
    code = ErrorCode.CONFLICT
    status = 409
    default_message = "The request conflicts with the current state."


class QuotaExceeded(ApplicationError):
    code = ErrorCode.QUOTA_EXCEEDED
    status = 429
    default_message = "Your department's quota is used up."


class BudgetExceeded(QuotaExceeded):
    """The department's monthly budget (cost, not tokens) is spent and the department refuses requests past it
    (``Quota.budget_enforcement == "block"``). A ``QuotaExceeded`` on purpose: callers that handle a used-up quota
    handle it too; the doors name it apart (``/v1``: ``insufficient_quota`` with code ``budget_exceeded``)."""

    code = ErrorCode.BUDGET_EXCEEDED
    status = 429
    default_message = "Your department's monthly budget is spent."


class Busy(ApplicationError):
    code = ErrorCode.BUSY
    status = 503
    default_message = "Every model server is busy. Try again shortly."


class GuardrailBlocked(ApplicationError):
    code = ErrorCode.GUARDRAIL_BLOCKED
    status = 400
    default_message = "The request was blocked by the content policy."


class GuardrailUnavailable(GuardrailBlocked):
    """A guard failed (error or timeout): the request fails closed. A subclass of GuardrailBlocked on purpose."""

    code = ErrorCode.GUARDRAIL_UNAVAILABLE
    status = 503
    default_message = "The safety checks are unavailable right now, so the request was not sent. Try again shortly."


class UpstreamError(ApplicationError):
    code = ErrorCode.UPSTREAM_ERROR
    status = 502
    default_message = "The model server failed."


class TenantSuspended(ApplicationError):
    code = ErrorCode.TENANT_SUSPENDED
    status = 403
    default_message = "This department is suspended."
