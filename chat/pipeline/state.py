"""The state of one pipeline run.

What the early stages decide is immutable (``Plan``: authorize; ``Masked``: the masked question and history;
``Prompt``: what the engine will see). What the run produces as it goes is ``RunState``: mutable on purpose, since it
is written while tokens stream and read afterwards, even after a cancellation (the door tells what happened).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.model_turn import QuotaHold, TurnReply, TurnTarget
from chat.models import Conversation
from guardrails.streaming import OutputStream


@dataclass(frozen=True, slots=True)
class Plan:
    """Stage 1's decision: where the turn runs, what it may read, how long the answer may be."""

    target: TurnTarget
    max_tokens: int
    kb_ids: tuple[int, ...]
    conversation: Conversation | None
    user_text: str  # raw: retrieval only (never to the engine)
    history: tuple[dict[str, str], ...] = ()  # the client's earlier turns (conversation-less door), guarded
    regenerate_user_message_id: int | None = None
    stored_user_masked: str = ""  # regenerate: the question as it was masked when first asked


@dataclass(frozen=True, slots=True)
class Masked:
    user: str
    history: tuple[dict[str, str], ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Prompt:
    messages: list[dict[str, str]]
    citations: list[dict[str, Any]]
    sources: list[str]  # the masked passages cited, for the groundedness check

    @property
    def chars(self) -> int:
        return sum(len(m["content"]) for m in self.messages)


@dataclass
class RunState:
    """The outcome so far. ``text`` is the display text (unmasked) of what was sent; ``reply`` holds the engine's
    masked text (once the stream ends: the masked text that was sent), usage, backend and timings; ``output`` is
    the output guard the tokens stream through; ``status`` is pending → streaming → complete | stopped | error |
    cancelled."""

    request_id: str
    scope_key: str  # the PII vault's scope: the conversation's, or a server-made one per request
    canary: str
    quota: QuotaHold
    status: str = "pending"
    error_code: str = ""
    error_message: str = ""
    model: str = ""
    adapter: str = ""
    conversation_id: int | None = None
    message_id: int | None = None
    user_message_id: int | None = None
    lease: bool = False  # this run holds the conversation's one-generation lease
    citations: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""
    reply: TurnReply = field(default_factory=TurnReply)
    finish_reason: str = "stop"
    guard: dict[str, Any] = field(default_factory=dict)
    mask_counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    prompt_chars: int = 0
    output: OutputStream | None = None
    finished: bool = False
    finishing: bool = False  # a finish is running (another one returns at once)
    promise: str = ""  # the settlement journal entry of a run finished after its ``Done``
    trace: Any = None  # the request's root span context (core.tracing.request_span): every stage's span is its child
    abstain: bool = False  # the knowledge bases do not support an answer: the pipeline abstains, no engine call
