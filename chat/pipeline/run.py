"""One pass through the pipeline: ``ChatRun(inp, pool=...)`` then ``async for event in run.stream(): ...``.

The blocking stages (``chat.pipeline.stages``) run in one worker thread before the engine is called; then the
model turn streams (``adapters.model_turn``), tokens are unmasked for display as they arrive, and the output guard,
persistence and settlement run after it. The pool is passed in (``adapters.model_turn.TurnPool``): the router's pool
by default, a fake one in fast tests.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from adapters.model_turn import ROUTER_POOL, QuotaHold, TurnPool, model_turn_events
from chat.models import Message
from chat.pipeline import stages
from chat.pipeline.events import ChatInput, Citations, Done, Failed, PipelineEvent, Started, Token, Usage
from chat.pipeline.state import Masked, Plan, Prompt, RunState
from chat.pipeline.text import ABSTAIN_TEXT, PLACEHOLDER_RE, StreamUnmasker, citations_used
from core.errors import ApplicationError
from core.localcache import generations_per_request
from core.logging import request_id_var, tenant_id_var, user_id_var
from core.tracing import RequestSpan, request_span
from guardrails.output import CanaryWatch, canary_new
from guardrails.services import unmask
from inference_pool.types import ChatRequest

logger = logging.getLogger(__name__)

T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _blocking_executor() -> ThreadPoolExecutor:
    """A small pool for the pipeline's blocking stages. Small on purpose: only one thread of a process runs Python
    at a time (the GIL), so more threads add no throughput, and every CPU-bound thread (Presidio, the ORM) is one more
    competitor of the event loop that relays tokens to the sockets."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                workers = int(getattr(settings, "CHAT_BLOCKING_WORKERS", 2))
                _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat-pipeline")
    return _executor


_redaction_executor: ThreadPoolExecutor | None = None


def run_redaction(fn: Callable[..., T]) -> Callable[..., Any]:
    """Run the output guard's PII analysis of a released piece off the event loop, on threads of its own (they
    wait on the guardrails pool, which does the work under its deadline), so that a token never queues behind
    another session's blocking stages."""
    global _redaction_executor
    if _redaction_executor is None:
        with _executor_lock:
            if _redaction_executor is None:
                _redaction_executor = ThreadPoolExecutor(
                    max_workers=settings.GUARDRAIL_WORKERS, thread_name_prefix="chat-redaction"
                )
    return sync_to_async(fn, thread_sensitive=False, executor=_redaction_executor)


def run_blocking(fn: Callable[..., T]) -> Callable[..., Any]:
    """Run blocking work (ORM, Presidio, embeddings) off the event loop, each call on its own fresh DB connection so
    that sessions do not queue behind one shared connection."""

    def call(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(call, thread_sensitive=False, executor=_blocking_executor())


class ChatRun:
    """One pass through the pipeline; ``state`` (and the properties below) describe the outcome even after a
    cancellation."""

    def __init__(self, inp: ChatInput, *, pool: TurnPool = ROUTER_POOL) -> None:
        self.inp = inp
        self.pool = pool
        request_id = inp.request_id or uuid.uuid4().hex
        # the PII vault: the conversation's own, or one made here per request (never a client-chosen id, which two
        # callers could share)
        scope = inp.conversation.scope_key if inp.conversation is not None else f"request:{uuid.uuid4().hex}"
        self.state = RunState(
            request_id=request_id,
            scope_key=scope,
            canary=canary_new(),
            quota=QuotaHold(tenant=inp.tenant, request_id=request_id),
            conversation_id=inp.conversation.pk if inp.conversation is not None else None,
        )
        self._canary = CanaryWatch(self.state.canary)

    # what the doors read ------------------------------------------------------------------------------------
    @property
    def request_id(self) -> str:
        return self.state.request_id

    @property
    def scope_key(self) -> str:
        return self.state.scope_key

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def error_code(self) -> str:
        return self.state.error_code

    @property
    def message_id(self) -> int | None:
        return self.state.message_id

    @property
    def user_message_id(self) -> int | None:
        return self.state.user_message_id

    @property
    def text(self) -> str:
        return self.state.text

    @property
    def citations(self) -> list[dict[str, Any]]:
        return self.state.citations

    @property
    def ttft_ms(self) -> float | None:
        return self.state.reply.ttft_ms

    @property
    def tpot_ms(self) -> float | None:
        return self.state.reply.tpot_ms

    @property
    def usage(self) -> Usage:
        tokens_in, tokens_out = self.state.reply.counts(prompt_estimate=-(-self.state.prompt_chars // 4))
        return Usage(tokens_in, tokens_out)

    # stages -------------------------------------------------------------------------------------------------
    def _prepare(self) -> tuple[Plan, Masked, Prompt]:
        """Stages 1-6 (blocking work, run in one worker thread): everything before the engine is called."""
        inp, state = self.inp, self.state
        with generations_per_request():  # the door's snapshot of the cache generations, or one taken here
            with stages.stage(state, "authorize"):
                plan = stages.authorize(inp, state)
            stages.quota_reserve(state, stages.quota_early_bound(inp, plan))
            stages.input_inspect(inp, plan, state)
            masked = stages.mask_input(inp, plan, state)
            passages = stages.retrieve(inp, plan, state)
            with stages.stage(state, "prompt"):
                prompt = stages.prompt_build(inp, plan, masked, passages, canary=state.canary)
                stages.prompt_reserve(state, plan, prompt)
                stages.persist_begin(inp, plan, masked, state)
                stages.output_open(inp, masked, state)
        return plan, masked, prompt

    def _request(self, plan: Plan, prompt: Prompt) -> ChatRequest:
        inp = self.inp
        return ChatRequest(
            messages=prompt.messages,
            model=plan.target.model,
            adapter=plan.target.adapter or None,
            max_tokens=plan.max_tokens,
            temperature=inp.temperature if inp.temperature is not None else 0.3,
            seed=inp.seed,
            stop=inp.stop,
            tenant=inp.tenant.slug,
            request_id=self.state.request_id,
        )

    def _opening(self) -> list[PipelineEvent]:
        s = self.state
        events: list[PipelineEvent] = [
            Started(
                request_id=s.request_id,
                model=s.model,
                adapter=s.adapter,
                conversation_id=s.conversation_id,
                message_id=s.message_id,
                user_message_id=s.user_message_id,
            )
        ]
        if s.citations:
            events.append(Citations(citations=s.citations))
        return events

    async def _display(self, piece: str) -> str:
        if piece and PLACEHOLDER_RE.search(piece) and not stages.vault_empty(self.inp, self.state):
            return str(await run_blocking(unmask)(tenant=self.inp.tenant, scope_key=self.state.scope_key, text=piece))
        return piece

    def _canary_cut(self, token: str) -> bool:
        """The model is quoting the system prompt (the canary, also spelled out or spaced): end the answer here."""
        if not self._canary.feed(token):
            return False
        self.state.guard["canary_leaked"] = True
        self.state.finish_reason = "content_filter"
        return True

    async def _redacted(self, released: str | None) -> str:
        """What the output guard released. A piece that may hold personal data is analysed first: with patterns only
        (a digit, an "@": well under a millisecond) right here, with the NER (a name) off the event loop."""
        if released is not None:
            return released
        output = self.state.output
        assert output is not None
        if not output.heavy:
            return output.resolve()
        return str(await run_redaction(output.resolve)())

    async def _relay(self, tokens: AsyncIterator[str]) -> AsyncGenerator[PipelineEvent, None]:
        """Stage 7: the engine's tokens through the output guard (only the tail that may still grow into an entity
        or a link is held back), then unmasked for display (a placeholder split across tokens is held back too).
        What is sent is final: the stored and the final text are the same."""
        state, unmasker = self.state, StreamUnmasker()
        output = state.output
        assert output is not None
        state.status = Message.Status.STREAMING
        t_pool, t_first = time.perf_counter(), None
        opened = False
        sent: list[str] = []  # the masked text released, as it was sent
        try:
            async for token in tokens:
                if t_first is None:
                    t_first = time.perf_counter()
                    stages.timed(state, "ttft", t_pool)
                if self._canary_cut(token):
                    output.discard()  # the held tail may hold the canary's beginning: never sent
                    break
                released = await self._redacted(output.feed(token))
                sent.append(released)
                piece = await self._display(unmasker.feed(released))
                if not opened:
                    opened = True
                    for ev in self._opening():
                        yield ev
                if piece:
                    state.text += piece
                    yield Token(text=piece)
            if t_first is not None:
                stages.timed(state, "generate", t_first)
            rest = "" if state.guard.get("canary_leaked") else await self._redacted(output.finish())
            sent.append(rest)
            tail = await self._display(unmasker.feed(rest) + unmasker.flush())
            if tail:
                state.text += tail
                if opened:
                    yield Token(text=tail)
            if not opened and state.reply.error_code == "":
                for ev in self._opening():  # the engine answered without a single token
                    yield ev
        finally:
            state.reply.text = "".join(sent)  # the masked text that was sent (stored with the answer)

    def _done(self) -> Done:
        s = self.state
        return Done(
            message_id=s.message_id,
            text=s.text,
            usage=self.usage,
            ttft_ms=s.reply.ttft_ms,
            tpot_ms=s.reply.tpot_ms,
            finish_reason=s.finish_reason,
            citations=s.citations,
            guardrails=s.guard,
            warnings=Message(guardrails=s.guard, citations=s.citations).guard_warnings,
            model=s.model,
            adapter=s.adapter,
            backend=s.reply.backend,
        )

    async def _finish(self) -> None:
        # shielded: a second cancellation (a closing socket) must not interrupt the bookkeeping
        await asyncio.shield(run_blocking(stages.finish)(self.inp, self.state))

    def _finish_retrying(self) -> None:
        """The background finish of a run whose ``Done`` was sent (on a thread of its own, so that no event loop's
        end can cancel it): retried while the database is away; what is still not settled after the last try is
        settled from the journal by the quota sweep."""
        for attempt, pause in enumerate((*FINISH_RETRY_PAUSES, None)):
            close_old_connections()
            try:
                stages.finish(self.inp, self.state)
                return
            except Exception:
                if pause is None:
                    logger.exception(
                        "could not persist and settle an answer after its stream ended; the quota sweep settles it",
                        extra={"request_id": self.state.request_id, "attempt": attempt + 1},
                    )
                    return
                logger.warning("persisting an answer failed; retrying", exc_info=True)
                time.sleep(pause)
            finally:
                close_old_connections()

    def _finish_in_background(self) -> None:
        context = contextvars.copy_context()  # the request's log fields and trace travel with it
        future = _finish_executor().submit(context.run, self._finish_retrying)
        with _finishing_lock:
            _FINISHING.add(future)
        future.add_done_callback(_finished)

    async def _conclude(self, masked: Masked, prompt: Prompt) -> PipelineEvent:
        """Stages 8-10 once the engine stopped: a failure keeps the partial answer; else the output guard."""
        state = self.state
        if state.reply.error_code:
            state.status = Message.Status.ERROR
            state.error_code, state.error_message = state.reply.error_code, state.reply.error
            await self._finish()
            return Failed(
                code=state.error_code,
                message=state.error_message,
                message_id=state.message_id,
                text=state.text,
                usage=self.usage,
            )
        if state.finish_reason != "content_filter":
            state.finish_reason = state.reply.finish or "stop"
        if self.inp.finish_after_done:
            await run_blocking(self._guard_and_promise)(masked, prompt)
            self._finish_in_background()
            return self._done()
        # one thread hop after the last token: the output guard, then persistence and settlement (shielded: a
        # closing socket must not interrupt the bookkeeping)
        await asyncio.shield(run_blocking(self._guard_and_finish)(masked, prompt))
        return self._done()

    def _guard(self, masked: Masked, prompt: Prompt) -> None:
        """The output guard, then the citations the answer used (its [n], else its sentences' attribution; none when
        it abstains)."""
        stages.output_inspect(self.inp, masked, prompt, self.state)
        self.state.citations = citations_used(
            self.state.reply.text, self.state.citations, prompt.sources, question=masked.user
        )

    def _guard_and_finish(self, masked: Masked, prompt: Prompt) -> None:
        self._guard(masked, prompt)
        self.state.status = Message.Status.COMPLETE
        stages.finish(self.inp, self.state)

    def _guard_and_promise(self, masked: Masked, prompt: Prompt) -> None:
        """One thread hop after the last token: the output guard, then the journal entry of the settlement that
        follows the client's ``Done``."""
        self._guard(masked, prompt)
        self.state.status = Message.Status.COMPLETE
        stages.settlement_promise(self.inp, self.state)

    async def _fail(self, status: str, code: str = "", message: str = "") -> None:
        self.state.status = status
        if code:
            self.state.error_code, self.state.error_message = code, message
        await self._finish()

    async def stream(self) -> AsyncGenerator[PipelineEvent, None]:
        inp, state = self.inp, self.state
        # log lines of this run carry its request, tenant and user ids (never text)
        request_id_var.set(state.request_id)
        tenant_id_var.set(inp.tenant.pk)
        user_id_var.set(inp.user.pk if inp.user is not None else None)
        tokens: Any = None
        relay: Any = None
        concluded = False
        root = self._trace_start()
        try:
            plan, masked, prompt = await run_blocking(self._prepare)()
            request = self._request(plan, prompt)
            tokens = (
                _abstention(state.reply)
                if state.abstain
                else model_turn_events(pool=self.pool, request=request, reply=state.reply, trace_parent=state.trace)
            )
            relay = self._relay(tokens)
            async for event in relay:
                yield event
            await tokens.aclose()
            last = await self._conclude(masked, prompt)
            concluded = True
            yield last
        except (asyncio.CancelledError, GeneratorExit):
            if concluded:  # the door closed the stream after the last event: the run is already finished
                raise
            # stop or disconnect: keep what was said so far (closing the relay closes the engine's stream)
            await _close(relay, tokens)
            state.finish_reason = "stopped"
            await self._fail(Message.Status.STOPPED if state.message_id is not None else "cancelled")
            raise
        except ApplicationError as exc:
            await self._fail(Message.Status.ERROR, exc.code, exc.message)
            raise
        except Exception:
            logger.exception("chat pipeline failed")
            await self._fail(Message.Status.ERROR, "internal_error")
            raise
        finally:
            await _close(relay, tokens)
            self._trace_end(root)

    def _trace_start(self) -> RequestSpan:
        """The request's root span: one trace per request, whichever door it came through."""
        inp, state = self.inp, self.state
        root = request_span(
            "chat.request",
            door=inp.source,
            tenant=inp.tenant.slug,
            request_id=state.request_id,
            conversation_id=str(state.conversation_id) if state.conversation_id is not None else None,
        )
        state.trace = root.context
        return root

    def _trace_end(self, root: RequestSpan) -> None:
        state = self.state
        tokens_in, tokens_out = self.usage.prompt_tokens, self.usage.completion_tokens
        root.set(
            model=state.model or None,
            adapter=state.adapter or None,
            status=state.status,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            backend=state.reply.backend or None,
            finish_reasons=[state.finish_reason] if state.status == Message.Status.COMPLETE else None,
        )
        root.end(error=state.error_code if state.status == Message.Status.ERROR else "")


# Background finishes of runs whose ``Done`` was sent (the API door): threads of their own, not event-loop tasks, so
# that neither the end of a loop (a test client's, a worker's) nor a closing socket can cancel the bookkeeping.
_FINISHING: set[Future[None]] = set()
_finishing_lock = threading.Lock()
_finish_pool: ThreadPoolExecutor | None = None
FINISH_RETRY_PAUSES = (0.2, 1.0, 3.0)


def _finish_executor() -> ThreadPoolExecutor:
    global _finish_pool
    if _finish_pool is None:
        with _executor_lock:
            if _finish_pool is None:
                _finish_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chat-finish")
    return _finish_pool


def _finished(future: Future[None]) -> None:
    with _finishing_lock:
        _FINISHING.discard(future)


def finishes_pending() -> int:
    """How many answers of this process are still being persisted and settled after their stream ended."""
    with _finishing_lock:
        return len(_FINISHING)


async def finishes_wait(*, grace_s: float = 10.0) -> bool:
    """Wait for this process's background finishes (a graceful shutdown); False if some are still running."""
    with _finishing_lock:
        pending = [asyncio.wrap_future(f) for f in _FINISHING]
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=grace_s)
    return not still


async def _abstention(reply: Any) -> AsyncGenerator[str, None]:
    """The answer when the knowledge bases do not support one: said by the pipeline, the engine is not called."""
    reply.text, reply.finish = ABSTAIN_TEXT, "stop"
    yield ABSTAIN_TEXT


async def _close(*generators: Any) -> None:
    for generator in generators:
        if generator is not None:
            await generator.aclose()


async def chat_stream(*, inp: ChatInput, pool: TurnPool = ROUTER_POOL) -> AsyncIterator[PipelineEvent]:
    """Convenience: the events of one ``ChatRun``."""
    async for event in ChatRun(inp, pool=pool).stream():
        yield event
