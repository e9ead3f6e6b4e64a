"""Model steps: one model turn (``adapters.model_turn``, the service the chat pipeline uses too) that answers
with a tool call or the final answer, retried when the output is not a valid step.

Each attempt reserves quota for its upper bound, marks the bound in flight on the run (so a dying worker's tokens
are counted), streams on the worker's event loop (abandoned at once when the run is cancelled), settles its usage,
then parses the step. The turn's checkpoint records the thought and the tool call (or the answer) in one commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction

from adapters.model_turn import (
    ROUTER_POOL,
    QuotaHold,
    TurnPool,
    TurnReply,
    TurnTarget,
    bytes_upper_bound,
    model_turn_collect,
    turn_target_resolve,
)
from agents import protocol
from agents.checkpoints import (
    Abandon,
    Outcome,
    add_step,
    advance,
    checkpoint_commit,
    next_ordinal,
    run_end,
    run_finish,
    scope_key,
    settle_run_usage,
)
from agents.events import event_append
from agents.heartbeat import Heartbeat, event_loop
from agents.models import AgentDefinition, AgentRun, RunStatus, StepKind, StepStatus
from agents.prompting import PROMPT_RESULT_CHARS, TurnPrompt, available_tools, build_prompt, prompt_bound, prompt_steps
from agents.tools import ToolError, tool_get
from core.errors import ApplicationError, UpstreamError
from core.tracing import current_context
from guardrails.services import unmask
from inference_pool.types import ChatRequest
from tenants.models import UsageRecord

logger = logging.getLogger(__name__)

MIN_OUTPUT_TOKENS = 24


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def call_model(request: ChatRequest, beat: Heartbeat, timeout: float, pool: TurnPool = ROUTER_POOL) -> TurnReply:
    """Stream one completion on the process's event loop; a cancelled run abandons it at once."""
    loop = event_loop()
    # the loop runs in another thread: the step's span is handed over so that the model call is its child
    future = asyncio.run_coroutine_threadsafe(
        model_turn_collect(pool=pool, request=request, cancelled=beat.cancelled, trace_parent=current_context()), loop
    )
    beat.on_abort(future.cancel)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.CancelledError:
        return TurnReply(cancelled=True)
    except TimeoutError:
        future.cancel()
        raise UpstreamError(f"The model did not answer within {timeout:g} seconds.") from None
    except ApplicationError:
        raise
    except Exception as exc:  # a connection problem the pool did not classify: retried like an upstream error
        logger.warning("model call failed", extra={"error": type(exc).__name__})
        raise UpstreamError(f"The model server connection failed ({type(exc).__name__}).") from None


@dataclass
class _Turn:
    """What a model step has spent and decided so far (across its attempts)."""

    target: TurnTarget
    schema: dict[str, Any]
    offered: set[str]
    prompt: TurnPrompt
    messages: list[dict[str, str]]
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = field(default_factory=lambda: Decimal(0))
    backend: str = ""
    decision: protocol.Decision | None = None
    raw: str = ""
    last_error: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    prompt_messages: int = 0


def _turn_plan(run: AgentRun, role: str) -> _Turn:
    """The target, the tools offered at this step, the schema the answer must follow, the fitted prompt."""
    definition: AgentDefinition = run.definition
    default_model = str(
        _setting("AGENT_DEFAULT_MODEL", "") or _setting("CHAT_DEFAULT_MODEL", "") or settings.LLAMA_MODEL_NAME
    )
    target = turn_target_resolve(
        tenant=run.tenant,
        model=None,
        adapter=(definition.adapter or "").strip() or None,
        default_model=default_model,
        default_context=int(_setting("AGENT_DEFAULT_CONTEXT", 2048)),
    )
    tools = available_tools(run, role)
    tools_left = definition.max_tool_calls is None or run.tool_calls < definition.max_tool_calls
    offered = tools if tools_left else []
    allow_final = run.tool_calls >= definition.min_tool_calls or not offered
    schema = protocol.step_schema(
        tools=offered,
        argument_schemas={t.name: t.arguments(run.tenant) for t in offered},
        allow_final=allow_final,
        max_output_tokens=definition.max_output_tokens,
    )
    system = protocol.system_prompt(instructions=definition.instructions, tools=offered, allow_final=allow_final)
    prompt = build_prompt(
        run,
        system=system,
        steps=prompt_steps(run),
        context=target.context_length,
        reserve_out=definition.max_output_tokens,
        result_chars=PROMPT_RESULT_CHARS,
    )
    return _Turn(
        target=target,
        schema=schema,
        offered={t.name for t in offered},
        prompt=prompt,
        messages=list(prompt.messages),
        prompt_messages=prompt.count,
    )


def _mark_inflight(run: AgentRun, worker: str, hold: QuotaHold, tokens: int, attempt: int, max_tokens: int) -> None:
    """The attempt's bound is in flight on the run (counted if the worker dies); a cancelled run stops here."""
    with transaction.atomic():
        locked = AgentRun.unscoped.select_for_update(of=("self",)).get(pk=run.pk)
        if locked.lease_owner != worker or locked.is_terminal:
            hold.release()
            raise Abandon("cancelled before the model call")
        locked.inflight_tokens = tokens
        locked.save(update_fields=["inflight_tokens"])
        event_append(locked, "thinking", {"step": run.steps_used + 1, "attempt": attempt + 1, "max_tokens": max_tokens})


def _attempt(run: AgentRun, turn: _Turn, *, worker: str, beat: Heartbeat, max_tokens: int, bound: int) -> TurnReply:
    """One model call: reserve, mark in flight, stream, settle. Returns the reply (its usage already counted)."""
    hold = QuotaHold(tenant=run.tenant, request_id=run.request_id)
    hold.reserve(bound + max_tokens)
    _mark_inflight(run, worker, hold, bound + max_tokens, turn.attempts, max_tokens)
    request = ChatRequest(
        messages=turn.messages,
        model=turn.target.model,
        adapter=turn.target.adapter or None,
        max_tokens=max_tokens,
        temperature=float(_setting("AGENT_TEMPERATURE", 0.0)),
        seed=int(_setting("AGENT_SEED", 7)),
        tenant=run.tenant.slug,
        request_id=run.request_id,
        response_format={"type": "json_schema", "json_schema": {"name": "agent_step", "schema": turn.schema}},
    )
    try:
        reply = call_model(request, beat, float(_setting("AGENT_MODEL_TIMEOUT", 180.0)))
    except BaseException:
        hold.release()
        AgentRun.unscoped.filter(pk=run.pk, lease_owner=worker).update(inflight_tokens=0)
        raise
    tokens_in = reply.prompt_tokens if reply.usage_known else min(bound, bytes_upper_bound(turn.messages))
    record = hold.settle(
        tokens_in=tokens_in,
        tokens_out=reply.completion_tokens,
        source=UsageRecord.Source.AGENT,
        user=run.user,
        api_key=run.api_key,
        model=turn.target.model,
        adapter=turn.target.adapter,
        backend=reply.backend,
        outcome="cancelled" if reply.cancelled else ("error" if reply.error else "ok"),
    )
    reply.prompt_tokens = tokens_in
    turn.tokens_in += tokens_in
    turn.tokens_out += reply.completion_tokens
    turn.cost += record.cost if record is not None else Decimal(0)
    turn.backend = reply.backend or turn.backend
    return reply


def _parse(turn: _Turn, reply: TurnReply) -> None:
    """The reply as a step (``turn.decision``), or the reason it is not one (``turn.last_error``) and a correction
    appended to the messages for the next attempt."""
    try:
        if reply.error:
            raise protocol.InvalidStep(f"the model server failed mid-answer ({reply.error})")
        decision = protocol.parse_step(reply.text, schema=turn.schema)
        if not decision.is_final:
            tool = tool_get(decision.action)
            # a model without constrained decoding may still ask for a tool it was not offered
            if tool.name not in turn.offered:
                raise protocol.InvalidStep(f"the tool {tool.name} is not available at this step")
    except (protocol.InvalidStep, ToolError) as exc:
        turn.last_error = exc.reason if isinstance(exc, protocol.InvalidStep) else exc.message
        turn.decision = None
        turn.messages = [
            *turn.messages,
            {"role": "assistant", "content": reply.text[:1_000]},
            {
                "role": "user",
                "content": f"That was not a valid step: {turn.last_error}. Reply with one JSON object "
                "exactly as described.",
            },
        ]
        return
    turn.decision = decision
    turn.raw = json.dumps(
        {
            "thought": decision.thought,
            "action": decision.action,
            **({"answer": decision.answer} if decision.is_final else {"input": decision.arguments}),
        },
        ensure_ascii=False,
    )
    turn.prompt_tokens = reply.prompt_tokens
    turn.prompt_messages = len(turn.messages) if turn.attempts == 0 else turn.prompt.count


def _budget_spent(run: AgentRun, turn: _Turn, worker: str, bound: int) -> Outcome:
    settle_run_usage(run.pk, worker, turn.tokens_in, turn.tokens_out, turn.cost, turn.backend)
    definition = run.definition
    return run_end(
        run.pk,
        worker,
        RunStatus.FAILED,
        "token_budget",
        f"The run's token budget is spent: {run.tokens_used + turn.tokens_in + turn.tokens_out:,} of "
        f"{definition.token_budget:,} tokens used, and the next model turn could need up to "
        f"{bound + MIN_OUTPUT_TOKENS:,}.",
    )


def model_step(run: AgentRun, *, role: str, worker: str, beat: Heartbeat) -> Outcome:
    definition: AgentDefinition = run.definition
    if run.steps_used >= definition.max_steps:
        return run_end(
            run.pk,
            worker,
            RunStatus.FAILED,
            "step_limit",
            f"The agent used all {definition.max_steps} steps without finishing.",
        )
    turn = _turn_plan(run, role)
    steps = prompt_steps(run)
    last_thought = next((s for s in reversed(steps) if s.kind == StepKind.THOUGHT), None)
    attempts = 1 + int(_setting("AGENT_MODEL_RETRIES", 2))
    started = time.monotonic()
    for attempt in range(attempts):
        turn.attempts = attempt
        current = TurnPrompt(turn.messages, bytes_upper_bound(turn.messages), len(turn.messages), turn.prompt.trimmed)
        bound = prompt_bound(current, last_thought if attempt == 0 else None)
        left = definition.token_budget - run.tokens_used - turn.tokens_in - turn.tokens_out
        max_tokens = min(definition.max_output_tokens, left - bound)
        if max_tokens < MIN_OUTPUT_TOKENS:
            return _budget_spent(run, turn, worker, bound)
        reply = _attempt(run, turn, worker=worker, beat=beat, max_tokens=max_tokens, bound=bound)
        if reply.cancelled or beat.aborted:
            settle_run_usage(run.pk, worker, turn.tokens_in, turn.tokens_out, turn.cost, turn.backend)
            raise Abandon("cancelled during the model call")
        _parse(turn, reply)
        if turn.decision is not None:
            break
    return _record(run, turn, worker, attempts=attempts, duration_ms=int((time.monotonic() - started) * 1000))


def _record(run: AgentRun, turn: _Turn, worker: str, *, attempts: int, duration_ms: int) -> Outcome:
    """The turn's checkpoint: usage on the run, then the thought and the tool call, the answer or the failure."""
    definition: AgentDefinition = run.definition
    decision = turn.decision
    with checkpoint_commit(run.pk, worker) as locked:
        locked.tokens_in += turn.tokens_in
        locked.tokens_out += turn.tokens_out
        locked.cost += turn.cost
        locked.inflight_tokens = 0
        locked.model, locked.adapter, locked.backend = turn.target.model, turn.target.adapter, turn.backend
        locked.steps_used += 1
        if locked.is_terminal:
            return Outcome("finished", locked.checkpoint)
        usage = {"tokens_in": turn.tokens_in, "tokens_out": turn.tokens_out, "duration_ms": duration_ms}
        if decision is None:
            message = f"The model did not produce a valid step after {attempts} attempts: {turn.last_error}."
            add_step(locked, kind=StepKind.ERROR, status=StepStatus.FAILED, **usage,
                     payload={"code": "invalid_output", "message": message})  # fmt: skip
            run_finish(locked, status=RunStatus.FAILED, error_code="invalid_output", error=message)
            return Outcome("finished", locked.checkpoint)
        add_step(
            locked,
            kind=StepKind.THOUGHT,
            **usage,
            payload={
                "text": decision.thought,
                "raw": turn.raw,
                "action": decision.action,
                "prompt_tokens": turn.prompt_tokens,
                "prompt_messages": turn.prompt_messages,
                "prompt_trimmed": turn.prompt.trimmed,
                "attempts": turn.attempts + 1,
            },
        )
        if decision.is_final:
            add_step(locked, kind=StepKind.FINAL, payload={"answer": decision.answer})
            result = unmask(tenant=locked.tenant, scope_key=scope_key(locked.pk), text=decision.answer)
            run_finish(locked, status=RunStatus.SUCCEEDED, result=result)
            return Outcome("finished", locked.checkpoint)
        tool = tool_get(decision.action)
        add_step(
            locked,
            kind=StepKind.TOOL_CALL,
            status=StepStatus.PENDING,
            tool=tool.name,
            idempotency_key=f"{locked.request_id}-{next_ordinal(locked)}",
            payload={
                "tool": tool.name,
                "arguments": decision.arguments,
                "idempotent": bool(tool.idempotent(locked.tenant, decision.arguments)),
                "needs_approval": tool.name in (definition.approval_tools or []),
            },
        )
        checkpoint = advance(locked)
    return Outcome("advanced", checkpoint)
