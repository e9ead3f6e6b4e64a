"""Failed API-key authentications are limited per client address: after ``API_KEY_FAILURES_PER_ADDRESS`` failures
within ``API_KEY_FAILURE_WINDOW_S`` seconds the address gets 429 for the rest of the window, whatever key it tries
(guessing keys or replaying a revoked one stops being cheap). Counters live in the shared cache. Password logins
are locked per account and per address by django-axes (settings ``AXES_*``)."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from core.errors import QuotaExceeded


def _key(address: str) -> str:
    return f"apikey-failures:{address or 'unknown'}"


def _limit() -> tuple[int, int]:
    return (
        int(getattr(settings, "API_KEY_FAILURES_PER_ADDRESS", 20)),
        int(getattr(settings, "API_KEY_FAILURE_WINDOW_S", 300)),
    )


def api_key_failures_check(*, address: str) -> None:
    """429 when the address used up its failed attempts."""
    limit, window = _limit()
    if int(cache.get(_key(address), 0)) >= limit:
        raise QuotaExceeded(
            f"Too many failed API-key attempts from your address; try again in {window // 60 or 1} minutes.",
            code="too_many_failed_attempts",
            retry_after=window,
            details={"reason": "api_key_failures", "retry_after": window},
        )


def api_key_failure_record(*, address: str) -> None:
    _, window = _limit()
    key = _key(address)
    if cache.add(key, 1, timeout=window):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)
