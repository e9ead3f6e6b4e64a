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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from core.errors import InvalidInput, QuotaExceeded
from core.localcache import LocalCache
from core.metrics import COST, QUOTA_REJECTIONS, TOKENS
from tenants.budget import budget_crossings, budget_exceeded, budget_refuses
from tenants.errors import QuotaReason
from tenants.models import (
    ApiKey,
    BudgetEnforcement,
    ModelPrice,
    Quota,
    QuotaCounter,
    QuotaReservation,
    Tenant,
    UsageRecord,
)

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


def _limits_sql() -> str:
    """A one-row subquery of the tenant's limits and budget (the model's defaults when it has no Quota row)."""
    defaults = Quota()  # an unsaved row holds the fields' defaults
    fields: dict[str, str] = {
        name: str(int(getattr(defaults, name)))
        for name in ("tokens_per_day", "tokens_per_month", "requests_per_minute", "budget_alert_percent")
    }
    fields["monthly_budget"] = f"{Decimal(defaults.monthly_budget)}::numeric"
    fields["budget_enforcement"] = f"'{BudgetEnforcement(defaults.budget_enforcement)}'"
    quota = connection.ops.quote_name(Quota._meta.db_table)
    cols = ", ".join(
        f"COALESCE((SELECT {name} FROM {quota} WHERE tenant_id = %(t)s), {default}) AS {name}"  # noqa: S608
        for name, default in fields.items()
    )
    return f"SELECT {cols}"


# The month window takes a request only while the budget is not spent: no budget (0), alert-only, or spent < budget.
_BUDGET_ROOM = (
    "((SELECT monthly_budget FROM q) <= 0 OR (SELECT budget_enforcement FROM q) <> 'block' "
    "OR c.cost < (SELECT monthly_budget FROM q))"
)


def _refusal(
    *, tenant: Tenant, failed: str, max_tokens: int, now: datetime, day: datetime, month: datetime, minute: datetime
) -> QuotaExceeded:
    """The error for a refused reservation (the slow path: reads the limits again for the message)."""
    quota = _quota_for(tenant)
    if failed == Period.MINUTE:
        wait = _seconds_until(minute + timedelta(minutes=1), now)
        return _reject(
            tenant=tenant,
            reason=QuotaReason.REQUESTS_PER_MINUTE,
            message=(
                f"Your department has sent {quota.requests_per_minute:,} requests this minute, its limit. "
                f"Try again in {_human_wait(wait)}."
            ),
            retry_after=wait,
        )
    if max_tokens > quota.tokens_per_day or max_tokens > quota.tokens_per_month:
        limit = min(quota.tokens_per_day, quota.tokens_per_month)
        return _reject(
            tenant=tenant,
            reason=QuotaReason.REQUEST_TOO_LARGE,
            message=(
                f"This request may need up to {max_tokens:,} tokens, more than your department's quota of "
                f"{limit:,} tokens allows. Shorten the question or attach fewer knowledge bases."
            ),
            retry_after=_seconds_until(day + timedelta(days=1), now),
        )
    if failed == Period.MONTH:
        spent = QuotaCounter.objects.for_tenant(tenant).filter(period=Period.MONTH, window_start=month).first()
        if spent is not None and budget_refuses(quota=quota, spent=spent.cost):
            QUOTA_REJECTIONS.labels(tenant=tenant.slug, reason=QuotaReason.MONTHLY_BUDGET).inc()
            # a budget lowered below what was spent was crossed by no settlement: its alerts are raised here (once)
            budget_crossings(
                tenant_id=tenant.pk,
                tenant_slug=tenant.slug,
                month_start=month,
                before=spent.cost,
                after=spent.cost,
                budget=quota.monthly_budget,
                alert_percent=quota.budget_alert_percent,
                enforcement=quota.budget_enforcement,
            )
            return budget_exceeded(quota=quota, spent=spent.cost, resets=_next_month(month), now=now)
    if failed == Period.DAY:
        limit, label, resets = quota.tokens_per_day, "daily", day + timedelta(days=1)
    else:
        limit, label, resets = quota.tokens_per_month, "monthly", _next_month(month)
    wait = _seconds_until(resets, now)
    return _reject(
        tenant=tenant,
        reason=QuotaReason(f"tokens_per_{failed}"),
        message=(
            f"Your department has used its {label} quota of {limit:,} tokens. "
            f"It resets in {_human_wait(wait)}; an admin can raise the quota."
        ),
        retry_after=wait,
    )


def _undo(cur: Any, *, tenant_id: int, applied: Sequence[tuple[str, datetime]], requests: int, tokens: int) -> None:
    """Give back what a refused one-statement reservation applied to some windows, one window at a time in the
    fixed order minute, day, month (each its own statement: no lock is held while waiting for the next)."""
    table = _table()
    for period, start in applied:
        cur.execute(
            f"UPDATE {table} SET requests = GREATEST(requests - %s, 0), "  # noqa: S608
            "reserved = GREATEST(reserved - %s, 0) WHERE tenant_id = %s AND period = %s AND window_start = %s",
            [
                requests if period == Period.MINUTE else 0,
                0 if period == Period.MINUTE else tokens,
                tenant_id,
                period,
                start,
            ],
        )


def quota_reserve(*, tenant: Tenant, max_tokens: int, request_id: str = "", now: datetime | None = None) -> Reservation:
    """Count one request against requests-per-minute and hold ``max_tokens`` against the day and the month.

    One statement, one round trip: an upsert of the three windows' counters, each conditional on its limit (read in
    the same statement), and the reservation row only when all three held. PostgreSQL re-checks each condition on
    the locked row, and the windows are always locked in the same order (minute, day, month), so concurrent
    requests can never hold more than a limit between them and cannot deadlock. A refusal gives back what the other
    windows took (a second statement, on that path only).

    Raises ``QuotaExceeded`` (429 with ``retry_after`` seconds) with a message a person understands, or its subclass
    ``BudgetExceeded`` when the month's budget is spent and the department refuses requests past it (the month's
    counter carries the settled cost, checked in the same statement); nothing is held when it raises.
    """
    if max_tokens < 1:
        raise InvalidInput("A request must reserve at least one token.")
    now = now or timezone.now()
    minute, day, month = _windows(now)
    table = _table()
    reservations = connection.ops.quote_name(QuotaReservation._meta.db_table)
    sql = (
        f"WITH q AS ({_limits_sql()}), "  # noqa: S608 (table names from the models, values as parameters)
        "w AS (SELECT * FROM (VALUES (1, 'minute', %(m)s::timestamptz, 0, 1), "
        "(2, 'day', %(d)s::timestamptz, %(n)s, 0), (3, 'month', %(mo)s::timestamptz, %(n)s, 0)) "
        "AS v(ord, period, window_start, reserved, requests)), "
        f"ins AS (INSERT INTO {table} AS c (tenant_id, period, window_start, used, reserved, requests) "
        "SELECT %(t)s, w.period, w.window_start, 0, w.reserved, w.requests FROM w, q "
        "WHERE (w.period = 'minute' AND q.requests_per_minute >= 1) "
        "OR (w.period = 'day' AND %(n)s <= q.tokens_per_day) OR (w.period = 'month' AND %(n)s <= q.tokens_per_month) "
        "ORDER BY w.ord "
        "ON CONFLICT (tenant_id, period, window_start) DO UPDATE "
        "SET requests = c.requests + EXCLUDED.requests, reserved = c.reserved + EXCLUDED.reserved "
        "WHERE (c.period = 'minute' AND c.requests < (SELECT requests_per_minute FROM q)) "
        "OR (c.period = 'day' AND c.used + c.reserved + %(n)s <= (SELECT tokens_per_day FROM q)) "
        "OR (c.period = 'month' AND c.used + c.reserved + %(n)s <= (SELECT tokens_per_month FROM q) "
        f"AND {_BUDGET_ROOM}) "
        "RETURNING c.period), "
        f"res AS (INSERT INTO {reservations} (tenant_id, tokens, day_start, month_start, request_id, created_at) "
        "SELECT %(t)s, %(n)s, %(d)s, %(mo)s, %(rid)s, %(now)s WHERE (SELECT count(*) FROM ins) = 3 RETURNING id) "
        "SELECT (SELECT id FROM res), ARRAY(SELECT period FROM ins)"
    )
    params: dict[str, Any] = {
        "t": tenant.pk,
        "m": minute,
        "d": day,
        "mo": month,
        "n": max_tokens,
        "rid": request_id[:64],
        "now": now,
    }
    with connection.cursor() as cur:
        cur.execute(sql, params)
        reservation_id, applied = cur.fetchone()
        if reservation_id is None:
            starts = {Period.MINUTE: minute, Period.DAY: day, Period.MONTH: month}
            done = [(p, starts[p]) for p in (Period.MINUTE, Period.DAY, Period.MONTH) if p in set(applied)]
            _undo(cur, tenant_id=tenant.pk, applied=done, requests=1, tokens=max_tokens)
            failed = next(p for p in (Period.MINUTE, Period.DAY, Period.MONTH) if p not in set(applied))
            raise _refusal(
                tenant=tenant, failed=failed, max_tokens=max_tokens, now=now, day=day, month=month, minute=minute
            )
    return Reservation(
        id=reservation_id,
        tenant_id=tenant.pk,
        tenant_slug=tenant.slug,
        tokens=max_tokens,
        day_start=day,
        month_start=month,
    )


def quota_extend(*, reservation: Reservation, tokens: int, tenant: Tenant) -> Reservation:
    """Raise a reservation to ``tokens`` (no-op when it already holds that many); ``QuotaExceeded`` if no room.

    Used once the prompt is built and its upper bound is known. One statement on success (the day and the month,
    locked in that order, each conditional on its limit; the reservation row only when both held). On refusal the
    original reservation stays held (release it)."""
    extra = tokens - reservation.tokens
    if extra <= 0:
        return reservation
    now = timezone.now()
    table = _table()
    reservations = connection.ops.quote_name(QuotaReservation._meta.db_table)
    sql = (
        f"WITH q AS ({_limits_sql()}), "  # noqa: S608 (table names from the models, values as parameters)
        f"r AS (SELECT id FROM {reservations} WHERE tenant_id = %(t)s AND id = %(id)s), "
        "w AS (SELECT * FROM (VALUES (1, 'day', %(d)s::timestamptz), (2, 'month', %(mo)s::timestamptz)) "
        "AS v(ord, period, window_start)), "
        f"ins AS (INSERT INTO {table} AS c (tenant_id, period, window_start, used, reserved, requests) "
        "SELECT %(t)s, w.period, w.window_start, 0, %(x)s, 0 FROM w, q WHERE EXISTS (SELECT 1 FROM r) AND ("
        "(w.period = 'day' AND %(x)s <= q.tokens_per_day) OR (w.period = 'month' AND %(x)s <= q.tokens_per_month)) "
        "ORDER BY w.ord "
        "ON CONFLICT (tenant_id, period, window_start) DO UPDATE SET reserved = c.reserved + EXCLUDED.reserved "
        "WHERE (c.period = 'day' AND c.used + c.reserved + %(x)s <= (SELECT tokens_per_day FROM q)) "
        "OR (c.period = 'month' AND c.used + c.reserved + %(x)s <= (SELECT tokens_per_month FROM q)) "
        "RETURNING c.period), "
        f"u AS (UPDATE {reservations} SET tokens = %(tokens)s WHERE tenant_id = %(t)s AND id = %(id)s "
        "AND (SELECT count(*) FROM ins) = 2 RETURNING id) "
        "SELECT EXISTS (SELECT 1 FROM r), (SELECT id FROM u), ARRAY(SELECT period FROM ins)"
    )
    params: dict[str, Any] = {
        "t": tenant.pk,
        "id": reservation.id,
        "d": reservation.day_start,
        "mo": reservation.month_start,
        "x": extra,
        "tokens": tokens,
    }
    with connection.cursor() as cur:
        cur.execute(sql, params)
        exists, updated, applied = cur.fetchone()
        if not exists:
            raise QuotaExceeded("The request's quota reservation expired; send it again.", retry_after=1)
        if updated is None:
            starts = {Period.DAY: reservation.day_start, Period.MONTH: reservation.month_start}
            done = [(p, starts[p]) for p in (Period.DAY, Period.MONTH) if p in set(applied)]
            _undo(cur, tenant_id=tenant.pk, applied=done, requests=0, tokens=extra)
            failed = next(p for p in (Period.DAY, Period.MONTH) if p not in set(applied))
            quota = _quota_for(tenant)
            if failed == Period.DAY:
                limit, label, resets = quota.tokens_per_day, "daily", reservation.day_start + timedelta(1)
            else:
                limit, label, resets = quota.tokens_per_month, "monthly", _next_month(reservation.month_start)
            wait = _seconds_until(resets, now)
            raise _reject(
                tenant=tenant,
                reason=QuotaReason(f"tokens_per_{failed}"),
                message=(
                    f"Your department's {label} quota of {limit:,} tokens has no room for this request "
                    f"(it may need up to {tokens:,} tokens). It resets in {_human_wait(wait)}."
                ),
                retry_after=wait,
            )
    return Reservation(
        id=reservation.id,
        tenant_id=reservation.tenant_id,
        tenant_slug=reservation.tenant_slug,
        tokens=tokens,
        day_start=reservation.day_start,
        month_start=reservation.month_start,
    )


def _settle_sql(*, insert_usage: bool, once: bool = False) -> tuple[str, list[str]]:
    """One statement: drop the reservation row and move its hold to ``used`` and its cost to ``cost`` (only once: a
    row already swept holds nothing; the day then the month, in the fixed lock order), and insert the usage record
    when there is one. With the usage record it also returns the month's cost after this settlement and the
    department's budget, so that crossing an alert level is seen by exactly one settlement (the row lock orders
    them). ``once``: count and record only if the reservation row still existed (a replayed settlement changes
    nothing)."""
    table = _table()
    counted = "EXISTS (SELECT 1 FROM d)" if once else "(%(used)s > 0 OR EXISTS (SELECT 1 FROM d))"
    reservations = connection.ops.quote_name(QuotaReservation._meta.db_table)
    sql = (
        f"WITH d AS (DELETE FROM {reservations} WHERE tenant_id = %(t)s AND id = %(id)s RETURNING tokens), "  # noqa: S608
        # the rows are locked day first, then month (a plain UPDATE of both would lock them in heap order, which a
        # concurrent reservation, locking minute, day, month, could meet the other way round: a deadlock)
        f"lk AS (SELECT id FROM {table} WHERE tenant_id = %(t)s AND ((period = 'day' AND window_start = %(d)s) "
        "OR (period = 'month' AND window_start = %(mo)s)) ORDER BY period = 'month' FOR UPDATE), "
        f"c AS (UPDATE {table} SET used = used + %(used)s, cost = cost + %(cost)s, "
        "reserved = GREATEST(reserved - COALESCE((SELECT tokens FROM d), 0), 0) "
        "WHERE id IN (SELECT id FROM lk) "
        f"AND {counted} RETURNING period, cost)"
    )
    columns: list[str] = []
    if insert_usage:
        fields = [f for f in UsageRecord._meta.concrete_fields if not f.primary_key]
        columns = [f.attname for f in fields]
        usage = connection.ops.quote_name(UsageRecord._meta.db_table)
        names = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
        values = ", ".join(f"%(f_{c})s" for c in columns)
        sql += f", q AS ({_limits_sql()})"
        if once:
            sql += (
                f", u AS (INSERT INTO {usage} ({names}) SELECT {values} "  # noqa: S608
                "WHERE EXISTS (SELECT 1 FROM d) RETURNING id) "
            )
        else:
            sql += f", u AS (INSERT INTO {usage} ({names}) VALUES ({values}) RETURNING id) "  # noqa: S608
        sql += (
            "SELECT (SELECT id FROM u), (SELECT count(*) FROM c), (SELECT cost FROM c WHERE period = 'month'), "
            "q.monthly_budget, q.budget_alert_percent, q.budget_enforcement FROM q"
        )
    else:
        sql += " SELECT NULL, (SELECT count(*) FROM c)"
    return sql, columns


def _settle_counters(*, tenant_id: int, reservation: Reservation, used: int) -> None:
    sql, _ = _settle_sql(insert_usage=False)
    params: dict[str, Any] = {
        "t": tenant_id,
        "id": reservation.id,
        "used": used,
        "cost": Decimal(0),
        "d": reservation.day_start,
        "mo": reservation.month_start,
    }
    with connection.cursor() as cur:
        cur.execute(sql, params)


# Prices by model name; a change of any price (console, admin) drops them in every process (``tenants.signals``).
PRICE_CACHE: LocalCache[dict[str, tuple[Decimal, Decimal]]] = LocalCache("tenants.prices", ttl=60.0, strict=False)


def _prices() -> dict[str, tuple[Decimal, Decimal]]:
    return PRICE_CACHE.get_or_load(
        "all",
        lambda: {p.model: (p.input_per_1k, p.output_per_1k) for p in ModelPrice.objects.all()},
    )


def usage_cost(*, model: str, adapter: str, tokens_in: int, tokens_out: int) -> Decimal:
    """Cost from ``ModelPrice``: the adapter's own price when it has one, else the base model's; 0 when unpriced."""
    prices = _prices()
    price = (prices.get(adapter) if adapter else None) or (prices.get(model) if model else None)
    if price is None:
        return Decimal(0)
    cost = price[0] * tokens_in / 1000 + price[1] * tokens_out / 1000
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
    once: bool = False,
) -> UsageRecord:
    """Settle a request with its real token counts: release the unused part, record usage and its cost (one
    statement, one round trip). ``once``: only if its reservation is still held (a replay from the settlement
    journal); when it was settled already, nothing changes and the returned record has no ``pk``."""
    tokens_in, tokens_out = max(int(tokens_in), 0), max(int(tokens_out), 0)
    cost = usage_cost(model=model, adapter=adapter, tokens_in=tokens_in, tokens_out=tokens_out)
    record = UsageRecord(
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
    sql, columns = _settle_sql(insert_usage=True, once=once)
    params: dict[str, Any] = {
        "t": reservation.tenant_id,
        "id": reservation.id,
        "used": tokens_in + tokens_out,
        "cost": cost,
        "d": reservation.day_start,
        "mo": reservation.month_start,
    }
    for f in UsageRecord._meta.concrete_fields:
        if f.attname in columns:
            params[f"f_{f.attname}"] = f.get_db_prep_save(f.pre_save(record, add=True), connection)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        record.pk, _, month_cost, budget, alert_percent, enforcement = cur.fetchone()
    if record.pk is None:  # ``once``, and it had been settled already
        return record
    record._state.adding = False
    if month_cost is not None and cost > 0:
        budget_crossings(
            tenant_id=reservation.tenant_id,
            tenant_slug=reservation.tenant_slug,
            month_start=reservation.month_start,
            before=Decimal(month_cost) - cost,
            after=Decimal(month_cost),
            budget=Decimal(budget),
            alert_percent=int(alert_percent),
            enforcement=str(enforcement),
        )
    labels: dict[str, Any] = {"tenant": reservation.tenant_slug, "model": model, "adapter": adapter or "-"}
    TOKENS.labels(direction="in", **labels).inc(tokens_in)
    TOKENS.labels(direction="out", **labels).inc(tokens_out)
    COST.labels(tenant=reservation.tenant_slug).inc(float(cost))
    return record


def quota_release(*, reservation: Reservation) -> None:
    """Give back a reservation that used no tokens (the request failed before the engine produced any)."""
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
