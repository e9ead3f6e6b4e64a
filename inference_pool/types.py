"""The pool's request and event types (see docs/contracts.md). Plain dataclasses: no Django, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "error", "cancelled", "busy", "unavailable"]


@dataclass(slots=True)
class ChatRequest:
    """One chat completion to run on the pool.

    ``messages`` are OpenAI-style ``{"role", "content"}`` dicts (already masked: raw PII never reaches an engine).
    ``model`` is a base model name; ``adapter`` an adapter name served on top of it (None: the base model).
    ``tenant`` is the department's slug (used for metrics labels only); ``request_id`` correlates logs.
    """

    messages: list[dict[str, str]]
    model: str
    adapter: str | None = None
    max_tokens: int = 512
    temperature: float = 0.7
    seed: int | None = None
    stop: list[str] | None = None
    tenant: str = ""
    request_id: str = ""
    # OpenAI-style constrained output, e.g. {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}
    # (llama-server and vLLM decode with the schema as a grammar); None: free text.
    response_format: dict[str, Any] | None = None


@dataclass(slots=True)
class Telemetry:
    ttft_s: float | None
    tpot_s: float | None
    tokens_in: int
    tokens_out: int
    backend: str
    model: str
    adapter: str | None
    outcome: Outcome
    attempts: int = 1
    duration_s: float = 0.0
    usage_from_engine: bool = True


@dataclass(slots=True)
class TokenEvent:
    text: str
    type: Literal["token"] = "token"


@dataclass(slots=True)
class UsageEvent:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False  # True when the engine reported no usage and the pool counted itself
    type: Literal["usage"] = "usage"


@dataclass(slots=True)
class DoneEvent:
    telemetry: Telemetry
    finish_reason: str = "stop"
    type: Literal["done"] = "done"


@dataclass(slots=True)
class ErrorEvent:
    """A failure after the first token: the caller keeps the text it already has."""

    code: str
    message: str
    telemetry: Telemetry
    type: Literal["error"] = "error"


PoolEvent = TokenEvent | UsageEvent | DoneEvent | ErrorEvent


@dataclass(slots=True)
class ServedModel:
    """A routable model: a base model (``adapter`` None) or a confirmed adapter on top of one."""

    model: str
    adapter: str | None
    backends: list[str] = field(default_factory=list)
    context_length: int = 0
