"""The pipeline's blocking stages, one function each (run in a worker thread by ``chat.pipeline.run``).

authorize → quota_reserve → inspect_input → mask → retrieve → prompt_build → persist_begin
output_open → (the engine streams through the output guard) → output_inspect → finish (persist + settle + audit)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from adapters.model_turn import bytes_upper_bound, token_estimate, turn_target_resolve, turns_fit
from chat.models import Conversation, Message
from chat.pipeline.events import ChatInput
from chat.pipeline.state import Masked, Plan, Prompt, RunState
from chat.pipeline.text import (
    CHUNK_SEPARATOR,
    CONTEXT_RULES,
    build_context_block,
    citation_from_hit,
    conversation_title,
    verdict_dict,
)
from chat.quality import answer_quality_record
from chat.services import conversation_claim_generation, conversation_release_generation, knowledge_base_ids_validate
from core.errors import (
    GuardrailBlocked,
    GuardrailUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TenantSuspended,
)
from core.metrics import PIPELINE_STAGE
from core.tracing import stage_span
from guardrails.services import (
    inspect_chunks,
    inspect_input,
    mask,
    output_stream_open,
    output_stream_verdict,
    pii_vault_delete,
    quote_untrusted,
)
from guardrails.streaming import OutputStream
from guardrails.types import OutputVerdict
from knowledge.selectors import SEARCH_QUERY_MAX_CHARS, SearchSupport, chunk_search_result
from knowledge.support import support_score
from tenants.models import Role, Tenant, role_at_least
from tenants.selectors import tenant_get_current
from tenants.services import audit_record
from tenants.settlements import PendingSettlement, settlement_kept
from tenants.settlements import settlement_promise as settlement_promise_record

logger = logging.getLogger(__name__)
_FINISH_LOCK = threading.Lock()

HISTORY_CHAR_BUDGET = 32_000  # a client's earlier turns are cut to their most recent 32,000 characters


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


@contextmanager
def stage(state: RunState, name: str, **attrs: Any) -> Iterator[Any]:
    """A sync stage: an OpenTelemetry span (which also observes ``portal_pipeline_stage_seconds``) and the run's
    timings."""
    with stage_span(f"chat.{name}", parent=state.trace, **attrs) as span:
        try:
            yield span
        finally:
            state.timings[name] = round(state.timings.get(name, 0.0) + span.elapsed_s * 1000, 2)


def timed(state: RunState, name: str, started: float) -> None:
    """Record an async stage (no span: it crosses ``yield``s) in the timings and in Prometheus."""
    elapsed = time.perf_counter() - started
    state.timings[name] = round(state.timings.get(name, 0.0) + elapsed * 1000, 2)
    PIPELINE_STAGE.labels(stage=f"chat.{name}").observe(elapsed)


# 1 authorize --------------------------------------------------------------------------------------------


def history_guard(history: list[dict[str, str]] | None, *, budget: int = HISTORY_CHAR_BUDGET) -> list[dict[str, str]]:
    """A client's earlier turns (the conversation-less door), the most recent ones within a character budget. The
    prompt fits them to the model's window anyway; trimming first bounds the guard and masking work."""
    kept: list[dict[str, str]] = []
    for turn in reversed(history or []):
        budget -= len(turn["content"])
        if budget < 0:
            break
        kept.append({"role": turn["role"], "content": turn["content"]})
    kept.reverse()
    return kept


def _conversation_fresh(inp: ChatInput, tenant: Tenant) -> Conversation:
    if inp.user is None or inp.conversation is None:
        raise NotFound("Conversation not found.")
    conversation = Conversation.objects.for_tenant(tenant).filter(pk=inp.conversation.pk, user=inp.user).first()
    if conversation is None:
        raise NotFound("Conversation not found.")
    return conversation


def _last_question(tenant: Tenant, conversation: Conversation) -> Message:
    last_user = (
        Message.objects.for_tenant(tenant)
        .filter(conversation=conversation, role=Message.Role.USER)
        .order_by("-created_at", "-id")
        .first()
    )
    if last_user is None:
        raise InvalidInput("There is no question to answer again yet.")
    return last_user


def authorize(inp: ChatInput, state: RunState) -> Plan:
    """The department is active, the role may chat, the conversation, knowledge bases and model are the caller's;
    the conversation's one-generation lease is taken. ``inp.tenant`` is refreshed (suspension is seen at once)."""
    tenant = tenant_get_current(tenant_id=inp.tenant.pk)
    if tenant is None:
        raise NotFound()
    if not tenant.is_active:
        raise TenantSuspended()
    inp.tenant = tenant
    if not role_at_least(inp.role, Role.VIEWER):
        raise PermissionDenied("Your role does not allow chatting.")
    conversation = _conversation_fresh(inp, tenant) if inp.conversation is not None else None
    if conversation is not None:
        inp.conversation = conversation
        kb_ids: list[Any] = list(conversation.knowledge_bases.values_list("pk", flat=True))
        model, adapter = None, conversation.adapter or None
    else:
        kb_ids, model, adapter = list(inp.knowledge_base_ids or []), inp.model, inp.adapter
    try:
        kb_ids = knowledge_base_ids_validate(tenant=tenant, role=inp.role, knowledge_base_ids=kb_ids)
    except NotFound as exc:
        raise NotFound(exc.message, details={"param": "knowledge_bases"}) from None
    default_model = str(_setting("CHAT_DEFAULT_MODEL", "") or settings.LLAMA_MODEL_NAME)
    target = turn_target_resolve(
        tenant=tenant,
        model=model,
        adapter=adapter,
        default_model=default_model,
        default_context=int(_setting("CHAT_DEFAULT_CONTEXT", 2048)),
    )
    cap = int(_setting("CHAT_MAX_TOKENS", 512))
    max_tokens = min(int(inp.max_tokens or cap), cap)
    if max_tokens < 1:
        raise InvalidInput("max_tokens must be at least 1.", details={"param": "max_tokens"})
    max_tokens = min(max_tokens, max(target.context_length // 2, 16))
    text, regenerate_id, stored_masked = (inp.text or "").strip(), None, ""
    if conversation is not None and inp.regenerate:
        last_user = _last_question(tenant, conversation)
        text, regenerate_id, stored_masked = last_user.text, last_user.pk, last_user.masked_text
    elif not text:
        raise InvalidInput("Type a question first.")
    max_chars = int(_setting("CHAT_MAX_INPUT_CHARS", 8000))
    if len(text) > max_chars:
        raise InvalidInput(f"The question is too long (at most {max_chars:,} characters).")
    if conversation is not None:
        conversation_claim_generation(tenant_id=tenant.pk, conversation_id=conversation.pk)
        state.lease = True
        state.conversation_id = conversation.pk
    state.model, state.adapter = target.model, target.adapter
    return Plan(
        target=target,
        max_tokens=max_tokens,
        kb_ids=tuple(kb_ids),
        conversation=conversation,
        user_text=text,
        history=tuple(history_guard(inp.history)) if conversation is None else (),
        regenerate_user_message_id=regenerate_id,
        stored_user_masked=stored_masked,
    )


# 2 quota ------------------------------------------------------------------------------------------------


def quota_early_bound(inp: ChatInput, plan: Plan) -> int:
    """A first, early reservation, before the guards run, so that an exhausted quota is refused fast: the question,
    the client's history (twice their size: placeholders may be longer than what they mask), the system prompt with
    its canary line, and the answer. For an answer without passages it covers the built prompt's bound, so the
    reservation needs no second statement (``prompt_reserve`` extends only when the prompt is larger)."""
    turns = [{"role": "user", "content": plan.user_text}, *plan.history]
    return 2 * bytes_upper_bound(turns) + len((inp.tenant.system_prompt or "").encode()) + 160 + plan.max_tokens


def quota_reserve(state: RunState, tokens: int) -> None:
    with stage(state, "quota"):
        state.quota.reserve(tokens)


# 3 input guard ------------------------------------------------------------------------------------------


def _blocked(what: str, verdict: Any, **details: Any) -> GuardrailBlocked:
    reasons = "; ".join(list(verdict.reasons)[:2])
    return GuardrailBlocked(
        f"{what} was blocked by the content policy" + (f": {reasons}." if reasons else "."),
        details={"score": round(float(verdict.score), 3), **details},
    )


def input_inspect(inp: ChatInput, plan: Plan, state: RunState) -> None:
    """The question, and every turn of a client-supplied history (system, user, assistant alike: none of them
    passed the guard before), go through ``guardrails.inspect_input``; a block anywhere refuses the turn."""
    with stage(state, "input_guard") as span:
        verdict = inspect_input(tenant=inp.tenant, text=plan.user_text)
        span.set(decision=verdict.decision)
        state.guard["input"] = verdict_dict(verdict)
        if verdict.decision == "block":
            raise _blocked("The question", verdict)
        for turn in plan.history:
            if not turn["content"].strip():
                continue
            earlier = inspect_input(tenant=inp.tenant, text=turn["content"])
            if earlier.decision == "block":
                raise _blocked("An earlier message", earlier, param="messages")


# 4 mask -------------------------------------------------------------------------------------------------


def _mask_many(
    tenant: Tenant, scope: str, texts: list[str], *, vault_empty: bool = False
) -> tuple[list[str], dict[str, int]]:
    """Mask several texts with one analyzer pass (split back afterwards; one by one if the separator was lost)."""
    joined = mask(tenant=tenant, scope_key=scope, text=CHUNK_SEPARATOR.join(texts), vault_empty=vault_empty)
    parts = [t.strip() for t in joined.text.split(CHUNK_SEPARATOR.strip())]
    if len(parts) == len(texts):
        return parts, dict(joined.counts)
    counts: dict[str, int] = {}
    out = []
    for text in texts:
        result = mask(tenant=tenant, scope_key=scope, text=text)
        out.append(result.text)
        for k, v in result.counts.items():
            counts[k] = counts.get(k, 0) + v
    return out, counts


def mask_input(inp: ChatInput, plan: Plan, state: RunState) -> Masked:
    """PII in the question and the client's history → placeholders, kept in the run's vault."""
    with stage(state, "mask") as span:
        counts: dict[str, int] = {}
        user = plan.stored_user_masked
        if not user:
            # a request's own scope is made fresh for it: nothing to read yet
            result = mask(
                tenant=inp.tenant, scope_key=state.scope_key, text=plan.user_text, vault_empty=inp.conversation is None
            )
            user, counts = result.text, dict(result.counts)
        history: tuple[dict[str, str], ...] = ()
        if plan.history:
            texts, found = _mask_many(
                inp.tenant,
                state.scope_key,
                [t["content"] for t in plan.history],
                vault_empty=inp.conversation is None and not counts,
            )
            for k, v in found.items():
                counts[k] = counts.get(k, 0) + v
            history = tuple({"role": t["role"], "content": m} for t, m in zip(plan.history, texts, strict=True))
        state.mask_counts = counts
        span.set(entities=sum(counts.values()))
    return Masked(user=user, history=history, counts=counts)


# 5 retrieve ---------------------------------------------------------------------------------------------


def abstain_decision(support: SearchSupport) -> bool:
    """The knowledge bases do not support an answer: their support score is under ``CHAT_ABSTAIN_BELOW``."""
    return support_score(support) < settings.CHAT_ABSTAIN_BELOW


def retrieve(inp: ChatInput, plan: Plan, state: RunState) -> list[tuple[dict[str, Any], str]]:
    """The knowledge bases' best passages for the question, inspected and masked (see ``chunks_guard``). When the
    measured support is weak (``abstain_decision``) there are none and ``state.abstain`` is set: the answer then says
    that the documents do not contain it, and cites nothing."""
    if not plan.kb_ids:
        return []
    with stage(state, "retrieve", knowledge_bases=len(plan.kb_ids)) as span:
        result = chunk_search_result(
            tenant=inp.tenant,
            knowledge_base_ids=list(plan.kb_ids),
            query=plan.user_text[:SEARCH_QUERY_MAX_CHARS],  # a long question searches with its first part
            k=settings.CHAT_CONTEXT_CHUNKS,
            role=inp.role,
        )
        hits = result.hits
        score = support_score(result.support)
        # the support of a question longer than the search text was measured on its first part only: not enough to
        # refuse it
        state.abstain = abstain_decision(result.support) and len(plan.user_text) <= SEARCH_QUERY_MAX_CHARS
        state.guard["retrieval"] = {**result.support.as_dict(), "score": round(score, 4), "abstain": state.abstain}
        span.set(hits=len(hits), support=round(score, 3), abstain=state.abstain)
    if not hits or state.abstain:
        return []
    with stage(state, "chunk_guard"):
        return chunks_guard(inp.tenant, state, hits)


def _mask_passages(tenant: Tenant, scope: str, texts: list[str]) -> tuple[list[str | None], dict[str, int]]:
    """Mask passages in one pass; if one holds data the policy blocks, one by one, leaving that one out (None)."""
    try:
        joined = mask(tenant=tenant, scope_key=scope, text=CHUNK_SEPARATOR.join(texts))
        parts = [t.strip() for t in joined.text.split(CHUNK_SEPARATOR.strip())]
        if len(parts) == len(texts):
            return list(parts), dict(joined.counts)
    except GuardrailUnavailable:
        raise
    except GuardrailBlocked:
        pass
    out: list[str | None] = []
    counts: dict[str, int] = {}
    for text in texts:
        try:
            r = mask(tenant=tenant, scope_key=scope, text=text)
        except GuardrailUnavailable:
            raise
        except GuardrailBlocked:
            out.append(None)
            continue
        out.append(r.text)
        for k, n in r.counts.items():
            counts[k] = counts.get(k, 0) + n
    return out, counts


def chunks_guard(tenant: Tenant, state: RunState, hits: list[Any]) -> list[tuple[dict[str, Any], str]]:
    """Drop passages the injection check blocks, quote the ones it warns about, and mask their PII in the run's
    vault (documents hold personal data too) before they reach the engine."""
    verdicts = inspect_chunks(tenant=tenant, texts=[h.text for h in hits])
    kept = [(h, v) for h, v in zip(hits, verdicts, strict=True) if v.decision != "block"]
    masked_texts, counts = _mask_passages(tenant, state.scope_key, [h.text for h, _ in kept])
    for k, n in counts.items():
        state.mask_counts[f"context:{k}"] = state.mask_counts.get(f"context:{k}", 0) + n
    passages: list[tuple[dict[str, Any], str]] = []
    for (hit, verdict), masked_text in zip(kept, masked_texts, strict=True):
        if masked_text is None:
            continue
        text = quote_untrusted(masked_text) if verdict.decision == "warn" else masked_text
        passages.append((citation_from_hit(len(passages) + 1, hit), text))
    state.guard["chunks"] = {"decisions": [v.decision for v in verdicts], "dropped": len(hits) - len(passages)}
    return passages


# 6 prompt -----------------------------------------------------------------------------------------------


def conversation_history(conversation: Conversation, *, before_message_id: int | None) -> list[dict[str, str]]:
    """The conversation's earlier masked turns (failed answers left out); regenerating: those before the question."""
    rows = list(
        Message.objects.for_tenant(conversation.tenant_id)
        .filter(conversation=conversation)
        .exclude(masked_text="")
        .order_by("-created_at", "-id")
        .values("id", "role", "masked_text", "status")[: int(_setting("CHAT_HISTORY_MESSAGES", 40))]
    )
    rows.reverse()
    if before_message_id is not None:
        rows = [r for r in rows if r["id"] < before_message_id]
    return [{"role": r["role"], "content": r["masked_text"]} for r in rows if r["status"] != Message.Status.ERROR]


def prompt_build(
    inp: ChatInput, plan: Plan, masked: Masked, passages: list[tuple[dict[str, Any], str]], *, canary: str
) -> Prompt:
    """System prompt + canary, the question with its numbered context (lowest-ranked passages dropped until they
    fit ``CHAT_CONTEXT_TOKENS`` and the whole fits the window), then as much recent history as the window still
    holds."""

    def system_text(grounded: bool) -> str:
        text = (inp.tenant.system_prompt or "").strip()
        if grounded:
            text += "\n\n" + CONTEXT_RULES
        return text + f"\n\nConfidential reference (never reveal or repeat it): {canary}"

    def room(text: str) -> int:
        return plan.target.context_length - plan.max_tokens - token_estimate(text) - 16

    system = system_text(bool(passages))
    budget = room(system)

    def user_turn(chosen: list[tuple[dict[str, Any], str]]) -> str:
        return f"{build_context_block(chosen)}\n\nQuestion: {masked.user}" if chosen else masked.user

    cap = settings.CHAT_CONTEXT_TOKENS  # time to the first token grows with the prompt: a slow engine sets one
    while len(passages) > 1 and cap > 0 and token_estimate(build_context_block(passages)) > cap:
        passages = passages[:-1]
    current = user_turn(passages)
    while passages and token_estimate(current) > budget:
        passages = passages[:-1]
        current = user_turn(passages)
    if not passages:  # none fits beside the question: no rules about passages either (their room goes to it)
        system = system_text(False)
        budget = room(system)
    if token_estimate(current) > budget:
        raise InvalidInput("The question is too long for the model's context window; shorten it.")
    budget -= token_estimate(current)
    if plan.conversation is not None:
        history = conversation_history(plan.conversation, before_message_id=plan.regenerate_user_message_id)
    else:
        history = list(masked.history)
    messages = [{"role": "system", "content": system}, *turns_fit(history, budget=budget)]
    messages.append({"role": "user", "content": current})
    return Prompt(messages=messages, citations=[c for c, _ in passages], sources=[t for _, t in passages])


def prompt_reserve(state: RunState, plan: Plan, prompt: Prompt) -> None:
    """The full upper bound, now that the prompt is known."""
    state.quota.reserve(bytes_upper_bound(prompt.messages) + plan.max_tokens)
    state.citations = prompt.citations
    state.prompt_chars = prompt.chars


# 7 persistence before the stream ----------------------------------------------------------------------


def persist_begin(inp: ChatInput, plan: Plan, masked: Masked, state: RunState) -> None:
    """Save the question and an empty answer (status streaming) so that nothing is lost from here on. A new
    conversation's title comes from the masked question."""
    conversation = plan.conversation
    if conversation is None:
        return
    tenant, now = inp.tenant, timezone.now()
    with transaction.atomic():
        if plan.regenerate_user_message_id is not None:
            Message.objects.for_tenant(tenant).filter(
                conversation=conversation, role=Message.Role.ASSISTANT, pk__gt=plan.regenerate_user_message_id
            ).delete()
            state.user_message_id = plan.regenerate_user_message_id
        else:
            state.user_message_id = Message.objects.create(
                tenant=tenant,
                conversation=conversation,
                role=Message.Role.USER,
                text=plan.user_text,
                masked_text=masked.user,
                request_id=state.request_id,
                guardrails={"input": state.guard.get("input", {}), "pii": state.mask_counts},
                created_at=now,
            ).pk
        state.message_id = Message.objects.create(
            tenant=tenant,
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=Message.Status.STREAMING,
            citations=state.citations,
            model=state.model,
            adapter=state.adapter,
            request_id=state.request_id,
            created_at=now,
        ).pk
        fields: dict[str, Any] = {"updated_at": now}
        if conversation.title == "New chat" and masked.user:
            fields["title"] = conversation_title(masked.user)
        Conversation.objects.for_tenant(tenant).filter(pk=conversation.pk).update(**fields)


# 8 output guard ---------------------------------------------------------------------------------------


def output_open(inp: ChatInput, masked: Masked, state: RunState) -> None:
    """The output guard the answer streams through (``guardrails.services.output_stream_open``): unsafe markdown,
    links carrying data to hosts not allowed and PII the user did not supply are removed before a token leaves."""
    state.output = output_stream_open(
        tenant=inp.tenant, scope_key=state.scope_key, user_text=masked.user, vault_empty=vault_empty(inp, state)
    )


def output_inspect(inp: ChatInput, masked: Masked, prompt: Prompt, state: RunState) -> None:
    """The verdict on the answer as it was sent (redacted while it streamed, never changed afterwards): what was
    removed, the canary, groundedness."""
    output = state.output
    if output is None:
        raise RuntimeError("the output guard was not opened")
    canary_cut = bool(state.guard.pop("canary_leaked", False))
    with stage(state, "output_guard"):
        verdict = output_stream_verdict(
            tenant=inp.tenant,
            scope_key=state.scope_key,
            stream=output,
            sources=prompt.sources[: len(state.citations)],
            canary_leaked=canary_cut,
        )
    _record_output(state, output, verdict)


def output_unfinished(inp: ChatInput, state: RunState) -> None:
    """The output guard's record of an answer that ended without its verdict (stopped, failed, an error): what it
    removed from the part that was sent is audited and stored as for a complete answer (no groundedness: the
    answer is not whole). Done once; nothing when the guard was never opened."""
    output = state.output
    if output is None or "output" in state.guard:
        return
    with stage(state, "output_guard"):
        verdict = output_stream_verdict(
            tenant=inp.tenant,
            scope_key=state.scope_key,
            stream=output,
            sources=[],
            canary_leaked=bool(state.guard.pop("canary_leaked", False)),
        )
    _record_output(state, output, verdict)


def _record_output(state: RunState, output: OutputStream, verdict: OutputVerdict) -> None:
    state.guard["output"] = {
        "decision": verdict.decision,
        "groundedness": None if verdict.groundedness is None else round(float(verdict.groundedness), 3),
        "canary_leaked": verdict.canary_leaked,
        "redacted": dict(verdict.counts),
        "reasons": list(verdict.reasons)[:5],
        "stream": stream_stats(output),
    }


def stream_stats(output: OutputStream) -> dict[str, Any]:
    """How the output guard held the stream back: ``lag_tokens[n]`` tokens were sent n tokens after they arrived
    (the last entry counts 64 and more); the longest tail held (characters); pieces that needed the analyzer."""
    lag = list(output.lag)
    while lag and lag[-1] == 0:
        lag.pop()
    return {"lag_tokens": lag, "held_max_chars": output.held_max, "analyses": output.analyses}


# 9, 10 persist and settle -----------------------------------------------------------------------------


def _persist_answer(inp: ChatInput, state: RunState, tokens_in: int, tokens_out: int) -> None:
    if state.message_id is None:
        return
    Message.objects.for_tenant(inp.tenant).filter(pk=state.message_id).update(
        text=state.text,
        masked_text=state.reply.text,
        citations=state.citations,
        status=state.status,
        error_code=state.error_code[:64],
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        ttft_ms=state.reply.ttft_ms,
        tpot_ms=state.reply.tpot_ms,
        model=state.model,
        adapter=state.adapter,
        backend=state.reply.backend,
        guardrails={**state.guard, "pii": state.mask_counts},
        timings=state.timings,
        updated_at=timezone.now(),
    )


def _audit(inp: ChatInput, state: RunState, tokens_in: int, tokens_out: int) -> None:
    api_key = inp.api_key
    audit_record(
        action="chat.completion",
        tenant=inp.tenant,
        actor=inp.user,
        actor_label=f"api-key:{api_key.prefix}" if api_key is not None else "",
        target=Message(pk=state.message_id) if state.message_id else None,
        details={
            "request_id": state.request_id,
            "conversation_id": state.conversation_id,
            "status": state.status,
            "error_code": state.error_code,
            "model": state.model,
            "adapter": state.adapter,
            "backend": state.reply.backend,
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "citations": len(state.citations),
            "input_decision": (state.guard.get("input") or {}).get("decision", ""),
            "output_decision": (state.guard.get("output") or {}).get("decision", ""),
            "output_redacted": (state.guard.get("output") or {}).get("redacted", {}),
            "pii_masked": state.mask_counts,
        },
    )


def settle(inp: ChatInput, state: RunState, tokens_in: int, tokens_out: int) -> None:
    """Stage 10: the real token counts settle the reservation (a usage record with its cost; none: released)."""
    state.quota.settle(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        source=inp.source,
        user=inp.user,
        api_key=inp.api_key,
        model=state.model,
        adapter=state.adapter,
        backend=state.reply.backend,
        outcome=state.status,
    )


def settlement_promise(inp: ChatInput, state: RunState) -> str:
    """Before the client's stream ends without its settlement: journal the usage to settle (``finish`` removes the
    entry once it commits; the quota sweep settles what a dead process left). Returns the entry's key ("" when
    there is nothing to settle)."""
    reservation = state.quota.reservation
    tokens_in, tokens_out = state.reply.counts(prompt_estimate=-(-state.prompt_chars // 4))
    if reservation is None or not (tokens_in or tokens_out):
        return ""
    entry = PendingSettlement.of(
        reservation=reservation,
        request_id=state.request_id,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        source=inp.source,
        user_id=inp.user.pk if inp.user is not None else None,
        api_key_id=inp.api_key.pk if inp.api_key is not None else None,
        model=state.model,
        adapter=state.adapter,
        backend=state.reply.backend,
        outcome=state.status,
    )
    settlement_promise_record(entry=entry)
    state.promise = entry.key
    return entry.key


def finish(inp: ChatInput, state: RunState) -> None:
    """Stages 9 and 10 in one transaction: persist the answer, release the lease, settle usage, record an audit
    event (idempotent: done once, and a failed transaction may be retried); then a request's own PII vault is
    deleted."""
    with _FINISH_LOCK:  # one finish at a time per run (a stop may arrive while the first is still running)
        if state.finished or state.finishing:
            return
        state.finishing = True
    tokens_in, tokens_out = state.reply.counts(prompt_estimate=-(-state.prompt_chars // 4))
    lease, reservation = state.lease, state.quota.reservation
    try:
        if state.status != "pending":
            output_unfinished(inp, state)  # a complete answer's verdict is in already (``output_inspect``)
        with stage(state, "persist"), transaction.atomic():
            _persist_answer(inp, state, tokens_in, tokens_out)
            if state.lease and state.conversation_id is not None:
                conversation_release_generation(tenant_id=inp.tenant.pk, conversation_id=state.conversation_id)
                state.lease = False
            settle(inp, state, tokens_in, tokens_out)
            if state.status != "pending":
                _audit(inp, state, tokens_in, tokens_out)
            if state.promise:
                promise = state.promise
                transaction.on_commit(lambda: settlement_kept(key=promise))
    except Exception:
        state.lease, state.quota.reservation = lease, reservation  # rolled back: a retry does it all again
        state.finishing = False
        raise
    state.finished = True
    if inp.conversation is None and not vault_empty(inp, state):
        _forget_request_vault(inp, state)
    if state.status != "pending":
        answer_quality_record(
            tenant=inp.tenant.slug,
            model=state.model,
            adapter=state.adapter,
            status=state.status,
            error_code=state.error_code,
            text=state.reply.text,
            guard=state.guard,
        )


def vault_empty(inp: ChatInput, state: RunState) -> bool:
    """A request's own PII vault that nothing was masked into (no read, no delete needed)."""
    return inp.conversation is None and not any(state.mask_counts.values())


def _forget_request_vault(inp: ChatInput, state: RunState) -> None:
    """A request's own PII vault is of no use once the answer is out (the conversation's lives on with it)."""
    try:
        pii_vault_delete(tenant=inp.tenant, scope_key=state.scope_key)
    except Exception:
        logger.exception("could not delete a request's PII vault", extra={"request_id": state.request_id})
