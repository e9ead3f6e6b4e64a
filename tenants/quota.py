"""Quota accounting: tokens per day and per month, requests per minute, per tenant — atomic in PostgreSQL.

A request reserves its *maximum* (an upper bound of prompt tokens plus ``max_tokens``) before an engine is called
and settles the real counts afterwards, releasing the unused part. A reservation is one conditional UPDATE per
window (``used + reserved + n <= limit``); PostgreSQL re-checks the condition on the locked row, so concurrent
requests can never hold more than the limit between them. Settled usage therefore never exceeds the limit unless a
request uses more than it reserved (it cannot: the reservation is an upper bound).

Windows are fixed and UTC: the calendar minute, day and month. Reservations left behind by a crashed process are
released by :func:`quota_release_stale` (a periodic task).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from core.errors import InvalidInput, QuotaExceeded
from core.metrics import COST, QUOTA_REJECTIONS, TOKENS
from tenants.errors import QuotaReason
from tenants.models import ApiKey, ModelPrice, Quota, QuotaCounter, QuotaReservation, Tenant, UsageRecord

Period = QuotaCounter.Period


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens held for one request. Pass it back to settle, extend or release."""

    id: int
    tenant_id: int
    tenant_slug: str
    tokens: int
    day_start: datetime
    month_start: datetime


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    day_used: int
    day_reserved: int
    day_limit: int
    month_used: int
    month_reserved: int
    month_limit: int
    requests_this_minute: int
    requests_per_minute: int

    @property
    def day_left(self) -> int:
        return max(self.day_limit - self.day_used - self.day_reserved, 0)

    @property
    def month_left(self) -> int:
        return max(self.month_limit - self.month_used - self.month_reserved, 0)

    @property
    def day_percent(self) -> int:
        return (
            min(100, math.floor(100 * (self.day_used + self.day_reserved) / self.day_limit)) if self.day_limit else 100
        )

    @property
    def exhausted(self) -> bool:
        return self.day_left == 0 or self.month_left == 0


def _windows(now: datetime) -> tuple[datetime, datetime, datetime]:
    now = now.astimezone(UTC)
    minute = now.replace(second=0, microsecond=0)
    day = minute.replace(hour=0, minute=0)
    month = day.replace(day=1)
    return minute, day, month


def _next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _human_wait(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} minutes"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{round(hours / 24)} days"


def _quota_for(tenant: Tenant) -> Quota:
    quota = Quota.objects.filter(tenant_id=tenant.pk).first()
    return quota if quota is not None else Quota(tenant=tenant)


def _table() -> str:
    return connection.ops.quote_name(QuotaCounter._meta.db_table)


def _reject(*, tenant: Tenant, reason: str, message: str, retry_after: int) -> QuotaExceeded:
    QUOTA_REJECTIONS.labels(tenant=tenant.slug, reason=reason).inc()
    return QuotaExceeded(message, retry_after=retry_after, details={"reason": reason, "retry_after": retry_after})


def quota_reserve(*, tenant: Tenant, max_tokens: int, request_id: str = "", now: datetime | None = None) -> Reservation:
    """Count one request against requests-per-minute and hold ``max_tokens`` against the day and the month.

    Raises ``QuotaExceeded`` (429 with ``retry_after`` seconds) with a message a person understands; nothing is
    held when it raises.
    """
    if max_tokens < 1:
        raise InvalidInput("A request must reserve at least one token.")
    now = now or timezone.now()
    quota = _quota_for(tenant)
    minute, day, month = _windows(now)
    if max_tokens > quota.tokens_per_day or max_tokens > quota.tokens_per_month:
        limit = min(quota.tokens_per_day, quota.tokens_per_month)
        raise _reject(
            tenant=tenant,
            reason=QuotaReason.REQUEST_TOO_LARGE,
            message=(
                f"This request may need up to {max_tokens:,} tokens, more than your department's quota of "
                f"{limit:,} tokens allows. Shorten the question or attach fewer knowledge bases."
            ),
            retry_after=_seconds_until(day + timedelta(days=1), now),
        )
    table = _table()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} (tenant_id, period, window_start, used, reserved, requests) "  # noqa: S608
            "VALUES (%s, 'minute', %s, 0, 0, 0), (%s, 'day', %s, 0, 0, 0), (%s, 'month', %s, 0, 0, 0) "
            "ON CONFLICT (tenant_id, period, window_start) DO NOTHING",
            [tenant.pk, minute, tenant.pk, day, tenant.pk, month],
        )
        # Always lock in the same order (minute, day, month) so that concurrent requests cannot deadlock.
        cur.execute(
            f"UPDATE {table} SET requests = requests + 1 "  # noqa: S608
            "WHERE tenant_id = %s AND period = 'minute' AND window_start = %s AND requests < %s",
            [tenant.pk, minute, quota.requests_per_minute],
        )
        if cur.rowcount != 1:
            wait = _seconds_until(minute + timedelta(minutes=1), now)
            raise _reject(
                tenant=tenant,
                reason=QuotaReason.REQUESTS_PER_MINUTE,
                message=(
                    f"Your department has sent {quota.requests_per_minute:,} requests this minute, its limit. "
                    f"Try again in {_human_wait(wait)}."
                ),
                retry_after=wait,
            )
        for period, start, limit, label, resets in (
            (Period.DAY, day, quota.tokens_per_day, "daily", day + timedelta(days=1)),
            (Period.MONTH, month, quota.tokens_per_month, "monthly", _next_month(month)),
        ):
            cur.execute(
                f"UPDATE {table} SET reserved = reserved + %s "  # noqa: S608
                "WHERE tenant_id = %s AND period = %s AND window_start = %s AND used + reserved + %s <= %s",
                [max_tokens, tenant.pk, period, start, max_tokens, limit],
            )
            if cur.rowcount != 1:
                wait = _seconds_until(resets, now)
                raise _reject(
                    tenant=tenant,
                    reason=QuotaReason(f"tokens_per_{period}"),
                    message=(
                        f"Your department has used its {label} quota of {limit:,} tokens. "
                        f"It resets in {_human_wait(wait)}; an admin can raise the quota."
                    ),
                    retry_after=wait,
                )
        row = QuotaReservation.objects.create(
            tenant=tenant, tokens=max_tokens, day_start=day, month_start=month, request_id=request_id[:64]
        )
    return Reservation(
        id=row.pk, tenant_id=tenant.pk, tenant_slug=tenant.slug, tokens=max_tokens, day_start=day, month_start=month
    )


def quota_extend(*, reservation: Reservation, tokens: int, tenant: Tenant) -> Reservation:
    """Raise a reservation to ``tokens`` (no-op when it already holds that many); ``QuotaExceeded`` if no room.

    Used once the prompt is built and its upper bound is known. On refusal the original reservation stays held
    (release it)."""
    extra = tokens - reservation.tokens
    if extra <= 0:
        return reservation
    quota = _quota_for(tenant)
    now = timezone.now()
    table = _table()
    with transaction.atomic(), connection.cursor() as cur:
        if not QuotaReservation.objects.for_tenant(tenant).filter(pk=reservation.id).exists():
            raise QuotaExceeded("The request's quota reservation expired; send it again.", retry_after=1)
        for period, start, limit, label, resets in (
            (Period.DAY, reservation.day_start, quota.tokens_per_day, "daily", reservation.day_start + timedelta(1)),
            (
                Period.MONTH,
                reservation.month_start,
                quota.tokens_per_month,
                "monthly",
                _next_month(reservation.month_start),
            ),
        ):
            cur.execute(
                f"UPDATE {table} SET reserved = reserved + %s "  # noqa: S608
                "WHERE tenant_id = %s AND period = %s AND window_start = %s AND used + reserved + %s <= %s",
                [extra, tenant.pk, period, start, extra, limit],
            )
            if cur.rowcount != 1:
                wait = _seconds_until(resets, now)
                raise _reject(
                    tenant=tenant,
                    reason=QuotaReason(f"tokens_per_{period}"),
                    message=(
                        f"Your department's {label} quota of {limit:,} tokens has no room for this request "
                        f"(it may need up to {tokens:,} tokens). It resets in {_human_wait(wait)}."
                    ),
                    retry_after=wait,
                )
        QuotaReservation.objects.for_tenant(tenant).filter(pk=reservation.id).update(tokens=tokens)
    return Reservation(
        id=reservation.id,
        tenant_id=reservation.tenant_id,
        tenant_slug=reservation.tenant_slug,
        tokens=tokens,
        day_start=reservation.day_start,
        month_start=reservation.month_start,
    )


def _settle_counters(*, tenant_id: int, reservation: Reservation, used: int) -> None:
    """Drop the reservation row and move its hold to ``used`` (only once: a row already swept holds nothing)."""
    deleted, _ = QuotaReservation.objects.for_tenant(tenant_id).filter(pk=reservation.id).delete()
    held = reservation.tokens if deleted else 0
    if not held and not used:
        return
    table = _table()
    with connection.cursor() as cur:
        for period, start in ((Period.DAY, reservation.day_start), (Period.MONTH, reservation.month_start)):
            cur.execute(
                f"UPDATE {table} SET used = used + %s, reserved = GREATEST(reserved - %s, 0) "  # noqa: S608
                "WHERE tenant_id = %s AND period = %s AND window_start = %s",
                [used, held, tenant_id, period, start],
            )


def usage_cost(*, model: str, adapter: str, tokens_in: int, tokens_out: int) -> Decimal:
    """Cost from ``ModelPrice``: the adapter's own price when it has one, else the base model's; 0 when unpriced."""
    prices = {p.model: p for p in ModelPrice.objects.filter(model__in=[m for m in (adapter, model) if m])}
    price = prices.get(adapter) or prices.get(model)
    if price is None:
        return Decimal(0)
    cost = price.input_per_1k * tokens_in / 1000 + price.output_per_1k * tokens_out / 1000
    return cost.quantize(Decimal("0.000001"))


def quota_settle(
    *,
    reservation: Reservation,
    tokens_in: int,
    tokens_out: int,
    source: str = UsageRecord.Source.CHAT,
    user: User | None = None,
    api_key: ApiKey | None = None,
    model: str = "",
    adapter: str = "",
    backend: str = "",
    request_id: str = "",
    outcome: str = "ok",
) -> UsageRecord:
    """Settle a request with its real token counts: release the unused part, record usage and its cost."""
    tokens_in, tokens_out = max(int(tokens_in), 0), max(int(tokens_out), 0)
    cost = usage_cost(model=model, adapter=adapter, tokens_in=tokens_in, tokens_out=tokens_out)
    with transaction.atomic():
        _settle_counters(tenant_id=reservation.tenant_id, reservation=reservation, used=tokens_in + tokens_out)
        record = UsageRecord.objects.create(
            tenant_id=reservation.tenant_id,
            user=user if user is not None and getattr(user, "pk", None) else None,
            api_key=api_key,
            source=source,
            model=model[:200],
            adapter=adapter[:200],
            backend=backend[:200],
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost,
            request_id=request_id[:64],
            outcome=outcome[:32],
        )
    labels: dict[str, Any] = {"tenant": reservation.tenant_slug, "model": model, "adapter": adapter or "-"}
    TOKENS.labels(direction="in", **labels).inc(tokens_in)
    TOKENS.labels(direction="out", **labels).inc(tokens_out)
    COST.labels(tenant=reservation.tenant_slug).inc(float(cost))
    return record


def quota_release(*, reservation: Reservation) -> None:
    """Give back a reservation that used no tokens (the request failed before the engine produced any)."""
    with transaction.atomic():
        _settle_counters(tenant_id=reservation.tenant_id, reservation=reservation, used=0)


def quota_release_stale(*, older_than: timedelta = timedelta(hours=1)) -> int:
    """Release reservations of requests that never settled (their process died). Returns how many."""
    cutoff = timezone.now() - older_than
    released = 0
    stale = list(
        QuotaReservation.unscoped.filter(created_at__lt=cutoff).values_list(
            "id", "tenant_id", "tokens", "day_start", "month_start"
        )[:1000]
    )
    for rid, tenant_id, tokens, day, month in stale:
        reservation = Reservation(
            id=rid, tenant_id=tenant_id, tenant_slug="", tokens=tokens, day_start=day, month_start=month
        )
        with transaction.atomic():
            _settle_counters(tenant_id=tenant_id, reservation=reservation, used=0)
        released += 1
    # Minute counters are only needed for their minute.
    QuotaCounter.unscoped.filter(period=Period.MINUTE, window_start__lt=cutoff).delete()
    return released


def quota_status(*, tenant: Tenant, now: datetime | None = None) -> QuotaStatus:
    """Usage of the current windows, for pages and the API."""
    now = now or timezone.now()
    quota = _quota_for(tenant)
    minute, day, month = _windows(now)
    rows = {
        (c.period, c.window_start): c
        for c in QuotaCounter.objects.for_tenant(tenant).filter(window_start__in=[minute, day, month])
    }
    d = rows.get((Period.DAY, day))
    m = rows.get((Period.MONTH, month))
    r = rows.get((Period.MINUTE, minute))
    return QuotaStatus(
        day_used=d.used if d else 0,
        day_reserved=d.reserved if d else 0,
        day_limit=quota.tokens_per_day,
        month_used=m.used if m else 0,
        month_reserved=m.reserved if m else 0,
        month_limit=quota.tokens_per_month,
        requests_this_minute=r.requests if r else 0,
        requests_per_minute=quota.requests_per_minute,
    )
