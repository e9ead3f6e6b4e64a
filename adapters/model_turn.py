"""One model turn for a department: the service the chat pipeline and the agent runner share.

A turn is: resolve the (base model, adapter) the department may use and the window a prompt must fit
(``turn_target_resolve``), bound the prompt's tokens (``bytes_upper_bound``, ``token_estimate``, ``turns_fit``),
reserve quota for that bound (``QuotaHold``), stream the completion from a pool (``model_turn_events`` or
``model_turn_collect``, which record usage, telemetry and errors on a ``TurnReply``), then settle the reservation
with the real counts (``QuotaHold.settle``) or release it.

Why here: the turn needs the adapter catalogue (which adapters a department may use), the pool and the quota, so it
belongs to the lowest layer that sees all three. ``adapters`` sits above ``inference_pool`` and ``tenants`` and
below both ``chat`` and ``agents``, which therefore stay independent of each other.

The pool is passed in (``TurnPool``: anything with ``stream(request=...)``), so callers can be tested against a
fake pool; ``ROUTER_POOL`` is the real one (``inference_pool.services.pool_stream``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.context import Context

from adapters.selectors import adapter_get_for_tenant, adapter_list_for_tenant
from core.errors import NotFound
from core.localcache import LocalCache
from core.tracing import model_call_span
from inference_pool import services as pool_services
from inference_pool.selectors import base_model_exists, model_context_length
from inference_pool.types import ChatRequest, DoneEvent, ErrorEvent, PoolEvent, TokenEvent, UsageEvent
from tenants.models import ApiKey, Tenant, UsageRecord
from tenants.quota import Reservation, quota_extend, quota_release, quota_reserve, quota_settle

# --- the target: model, adapter, window -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TurnTarget:
    model: str  # the base model
    adapter: str  # "" for the base model itself
    context_length: int  # the smallest window among the model's enabled backends


# Resolved targets by (department, model, adapter, defaults). Strict: a change of an adapter, an assignment, a base
# model or a backend (``adapters.signals``) applies to the very next turn in every process. Refusals are not cached.
TURN_TARGET_CACHE: LocalCache[TurnTarget] = LocalCache("adapters.turn_targets", ttl=60.0, strict=True)


def turn_target_resolve(
    *, tenant: Tenant, model: str | None, adapter: str | None, default_model: str, default_context: int
) -> TurnTarget:
    """The base model and adapter a turn runs on. ``adapter`` names an adapter the department may use; ``model``
    names a base model or such an adapter (the OpenAI-style door has only ``model``); neither: ``default_model``.
    Unknown or not the department's: 404 (``model_not_found`` for a model) with ``param`` naming the field."""
    return TURN_TARGET_CACHE.get_or_load(
        (tenant.pk, model, adapter, default_model, default_context),
        lambda: _turn_target_load(
            tenant=tenant, model=model, adapter=adapter, default_model=default_model, default_context=default_context
        ),
    )


def _turn_target_load(
    *, tenant: Tenant, model: str | None, adapter: str | None, default_model: str, default_context: int
) -> TurnTarget:
    if adapter:
        try:
            found = adapter_get_for_tenant(tenant=tenant, name=adapter)
        except NotFound as exc:
            raise NotFound(exc.message, details={"param": "adapter"}) from None
        base, name = found.base_model.name, found.name
    elif model:
        named = adapter_list_for_tenant(tenant=tenant).select_related("base_model").filter(name=model).first()
        if named is not None:
            base, name = named.base_model.name, named.name
        elif base_model_exists(name=model):
            base, name = model, ""
        else:
            raise NotFound(
                f"No model named '{model}' is available to your department.",
                code="model_not_found",
                details={"param": "model"},
            )
    else:
        base, name = default_model, ""
    return TurnTarget(model=base, adapter=name, context_length=model_context_length(model=base) or default_context)


# --- sizes ------------------------------------------------------------------------------------------------


def bytes_upper_bound(messages: list[dict[str, str]]) -> int:
    """An upper bound of a prompt's tokens: a byte-level BPE token covers at least one byte, plus the chat
    template's special tokens per message. What quota reservations use (never under-reserves)."""
    return sum(len(m["content"].encode()) + 8 for m in messages) + 16


def token_estimate(text: str) -> int:
    """A cautious estimate of tokens (English BPE averages about 4 characters a token) for fitting the window."""
    return math.ceil(len(text.encode()) / 3) + 4


def turns_fit(turns: list[dict[str, str]], *, budget: int) -> list[dict[str, str]]:
    """The most recent turns whose estimated tokens fit ``budget``, starting with a question (not an answer)."""
    fitted: list[dict[str, str]] = []
    for turn in reversed(turns):
        cost = token_estimate(turn["content"])
        if cost > budget:
            break
        fitted.append(turn)
        budget -= cost
    fitted.reverse()
    while fitted and fitted[0]["role"] == "assistant":
        fitted.pop(0)
    return fitted


# --- quota ------------------------------------------------------------------------------------------------


class QuotaHold:
    """A turn's quota reservation: ``reserve`` an upper bound (again to extend it), then ``settle`` with the real
    counts (no tokens: released) or ``release``. Idempotent once settled or released."""

    def __init__(self, *, tenant: Tenant, request_id: str) -> None:
        self.tenant = tenant
        self.request_id = request_id
        self.reservation: Reservation | None = None

    def reserve(self, tokens: int) -> None:
        if self.reservation is None:
            self.reservation = quota_reserve(tenant=self.tenant, max_tokens=tokens, request_id=self.request_id)
        else:
            self.reservation = quota_extend(reservation=self.reservation, tokens=tokens, tenant=self.tenant)

    def release(self) -> None:
        if self.reservation is not None:
            quota_release(reservation=self.reservation)
            self.reservation = None

    def settle(
        self,
        *,
        tokens_in: int,
        tokens_out: int,
        source: str,
        user: Any,
        api_key: ApiKey | None,
        model: str,
        adapter: str,
        backend: str,
        outcome: str,
    ) -> UsageRecord | None:
        """Record usage with its cost (returned); a turn that used no tokens only gives its reservation back."""
        if self.reservation is None:
            return None
        if not (tokens_in or tokens_out):
            self.release()
            return None
        record = quota_settle(
            reservation=self.reservation,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            source=source,
            user=user,
            api_key=api_key,
            model=model,
            adapter=adapter,
            backend=backend,
            request_id=self.request_id,
            outcome=outcome,
        )
        self.reservation = None
        return record


# --- the stream -------------------------------------------------------------------------------------------


class TurnPool(Protocol):
    """What a turn streams from: the router's pool in production, a fake in fast tests."""

    def stream(self, *, request: ChatRequest) -> AsyncIterator[PoolEvent]: ...


class _RouterPool:
    def stream(self, *, request: ChatRequest) -> AsyncIterator[PoolEvent]:
        return pool_services.pool_stream(request=request)  # looked up per call: tests may wrap it


ROUTER_POOL: TurnPool = _RouterPool()


@dataclass
class TurnReply:
    """What the engine said and how: the (masked) text, token counts, backend, timings, finish or error."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_known: bool = False  # the counts come from the engine (else completion_tokens counts the tokens seen)
    backend: str = ""
    finish: str = ""
    error_code: str = ""
    error: str = ""
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    cancelled: bool = False

    def absorb(self, event: PoolEvent) -> str | None:
        """Record one pool event; a token's text is returned."""
        if isinstance(event, TokenEvent):
            self.text += event.text
            if not self.usage_known:
                self.completion_tokens += 1
            return event.text
        if isinstance(event, UsageEvent):
            self.prompt_tokens, self.completion_tokens = event.prompt_tokens, event.completion_tokens
            self.usage_known = True
        elif isinstance(event, DoneEvent | ErrorEvent):
            t = event.telemetry
            self.backend = t.backend or self.backend
            if t.ttft_s is not None:
                self.ttft_ms = round(t.ttft_s * 1000, 2)
            if t.tpot_s is not None:
                self.tpot_ms = round(t.tpot_s * 1000, 3)
            if not self.usage_known and (t.tokens_in or t.tokens_out):
                self.prompt_tokens, self.completion_tokens, self.usage_known = t.tokens_in, t.tokens_out, True
            if isinstance(event, DoneEvent):
                self.finish = event.finish_reason or "stop"
            else:
                self.error_code = event.code or "upstream_error"
                self.error = event.message or "The model server failed while answering."
        return None

    def counts(self, *, prompt_estimate: int) -> tuple[int, int]:
        """(tokens in, tokens out) to settle: the engine's counts, else the prompt's estimate and the tokens seen
        (nothing seen and nothing reported: nothing used)."""
        if self.usage_known:
            return self.prompt_tokens, self.completion_tokens
        if self.completion_tokens:
            return prompt_estimate, self.completion_tokens
        return 0, 0


async def model_turn_events(
    *, pool: TurnPool, request: ChatRequest, reply: TurnReply, trace_parent: Context | None = None
) -> AsyncGenerator[str, None]:
    """Stream one completion: yields each token's text and records everything else on ``reply``. Closing this
    generator (a stop, a break) closes the engine's stream.

    The call is a span (``chat <model>``, a child of ``trace_parent``, else of the current span) with the GenAI
    attributes: the request's model and sampling, the usage, the finish reason, TTFT and TPOT, the department."""
    span = model_call_span(
        parent=trace_parent,
        model=request.model,
        adapter=request.adapter,
        tenant=request.tenant,
        request_id=request.request_id,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        seed=request.seed,
        stream=True,
    )
    span.messages(request.messages)
    ended = ""
    try:
        async with aclosing(pool.stream(request=request)) as events:  # type: ignore[type-var]
            async for event in events:
                text = reply.absorb(event)
                if text is not None:
                    span.first_token()
                    yield text
    except GeneratorExit:
        ended = "stopped"  # the consumer stopped reading (a stop, the canary cut): not an error
        raise
    except BaseException as exc:
        ended = f"error:{type(exc).__qualname__}"
        raise
    finally:
        error = ended.removeprefix("error:") if ended.startswith("error:") else reply.error_code
        span.finish(
            input_tokens=reply.prompt_tokens,
            output_tokens=reply.completion_tokens,
            finish_reason=reply.finish or ("error" if error else ended or "stop"),
            backend=reply.backend,
            ttft_s=reply.ttft_ms / 1000 if reply.ttft_ms is not None else None,
            tpot_s=reply.tpot_ms / 1000 if reply.tpot_ms is not None else None,
            error=error,
            output_text=reply.text,
        )


async def model_turn_collect(
    *,
    pool: TurnPool,
    request: ChatRequest,
    cancelled: threading.Event | None = None,
    trace_parent: Context | None = None,
) -> TurnReply:
    """Stream one completion to its end (or until ``cancelled`` is set) and return the reply."""
    reply = TurnReply()
    events = model_turn_events(pool=pool, request=request, reply=reply, trace_parent=trace_parent)
    async with aclosing(events) as tokens:
        async for _ in tokens:
            if cancelled is not None and cancelled.is_set():
                reply.cancelled = True
                break
    return reply
