"""The pipeline's input and its events (what a door gets back)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.contrib.auth.models import User

from chat.models import Conversation
from tenants.models import ApiKey, Tenant, UsageRecord


@dataclass
class ChatInput:
    """One turn. The door resolved who is asking (``tenant``, ``role``, ``user`` or ``api_key``).

    Browser door: ``conversation`` set; ``text`` is the new question (or ``regenerate=True``); history, knowledge
    bases and adapter come from the conversation. API door: ``conversation`` None; ``history`` holds the client's
    earlier messages (``{"role", "content"}``), ``knowledge_base_ids`` and ``model``/``adapter`` come from the body.
    """

    tenant: Tenant
    role: str
    text: str = ""
    user: User | None = None
    api_key: ApiKey | None = None
    conversation: Conversation | None = None
    regenerate: bool = False
    history: list[dict[str, str]] | None = None
    knowledge_base_ids: list[int] | None = None
    model: str | None = None
    adapter: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    source: str = UsageRecord.Source.CHAT
    request_id: str = ""
    # the API door: ``Done`` comes as soon as the answer is guarded; its persistence and settlement follow in the
    # background, promised first in the settlement journal (``tenants.settlements``)
    finish_after_done: bool = False


@dataclass(slots=True)
class Started:
    request_id: str
    model: str
    adapter: str
    conversation_id: int | None
    message_id: int | None
    user_message_id: int | None
    type: Literal["started"] = "started"


@dataclass(slots=True)
class Citations:
    citations: list[dict[str, Any]]
    type: Literal["citations"] = "citations"


@dataclass(slots=True)
class Token:
    text: str
    type: Literal["token"] = "token"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class Done:
    """The answer is complete. ``text`` is the final display text (the output guard may have changed it)."""

    message_id: int | None
    text: str
    usage: Usage
    ttft_ms: float | None
    tpot_ms: float | None
    finish_reason: str
    citations: list[dict[str, Any]]
    guardrails: dict[str, Any]
    warnings: list[str]
    model: str
    adapter: str
    backend: str
    type: Literal["done"] = "done"


@dataclass(slots=True)
class Failed:
    """The engine failed after the first token: ``text`` (the partial answer) is kept."""

    code: str
    message: str
    message_id: int | None
    text: str
    usage: Usage
    type: Literal["error"] = "error"


PipelineEvent = Started | Citations | Token | Done | Failed
