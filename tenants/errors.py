"""The tenants app's error codes and quota refusal reasons (the values are the wire contract: docs/contracts.md)."""

from __future__ import annotations

from enum import StrEnum


class TenantErrorCode(StrEnum):
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"  # an API key's request budget (API_RATE_PER_KEY) is spent


class QuotaReason(StrEnum):
    """``details.reason`` of a ``quota_exceeded`` error: which limit refused the request."""

    REQUEST_TOO_LARGE = "request_too_large"
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_DAY = "tokens_per_day"
    TOKENS_PER_MONTH = "tokens_per_month"
    MONTHLY_BUDGET = "monthly_budget"  # ``budget_exceeded``: the month's cost reached the budget
    API_KEY_RATE = "api_key_rate"
