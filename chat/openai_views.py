"""The OpenAI-compatible door at /v1/: chat completions (streaming and not), models, embeddings.

Pipeline note (for the chat engineer): this door runs the one chat pipeline, ``chat.pipeline.ChatRun``, in its
conversation-less mode: ``ChatInput(conversation=None, history=<the client's earlier messages>, text=<the last user
message>, knowledge_base_ids=..., model=..., api_key=<the key>, user=<the key's creator>, source="api")``. The
pipeline keeps the PII vault per request (``request:<request_id>``) and records the key on the usage record, so no
second pipeline and no extension were needed. The client's earlier messages are not in a conversation that the
input guard already saw, so this door also asks ``guardrails.services.inspect_input`` about each client-supplied
system and user turn before the pipeline runs; a block there answers like a blocked question. The history is first
trimmed to its most recent 32,000 characters (the pipeline fits it to the model's window anyway).

Authentication: ``Authorization: Bearer <api key>`` only (no cookies, so no CSRF); the key needs the ``chat`` scope.
Every request counts against the key's rate (``tenants.throttling``), and the pipeline counts it against the
department's quota. Errors answer in OpenAI's format ``{"error": {"message", "type", "param", "code"}}``; a used-up
quota, a key over its rate and a saturated pool answer 429 with ``Retry-After``.

Extra fields (ignored by OpenAI clients unless asked for): the request may name ``knowledge_bases: [ids]`` to ground
the answer; the response then carries ``citations`` (in the non-streaming body, and in the first and the last chunk
of a stream) and ``warnings`` (guardrail notes a person should see).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat.pipeline import ChatInput, ChatRun, Citations, Done, Failed, Started, Token
from core.errors import (
    ApplicationError,
    Busy,
    GuardrailBlocked,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
)
from core.logging import request_id_var
from tenants.models import ApiKey, Role, UsageRecord, role_at_least

logger = logging.getLogger(__name__)

MAX_MESSAGES = 200
MAX_STOP = 4
MAX_EMBEDDING_INPUTS = 256
MAX_EMBEDDING_CHARS = 32_000
HISTORY_CHAR_BUDGET = 32_000
_FINISH_REASONS = {"stop", "length", "content_filter"}

# --- errors ---------------------------------------------------------------------------------------------


def _error_type(exc: ApplicationError) -> str:
    if isinstance(exc, NotAuthenticated):
        return "authentication_error"
    if isinstance(exc, PermissionDenied) or exc.status == 403:
        return "permission_error"
    if isinstance(exc, QuotaExceeded):
        return "insufficient_quota" if exc.code == "quota_exceeded" else "rate_limit_error"
    if isinstance(exc, Busy):
        return "rate_limit_error"
    if exc.status >= 500:
        return "server_error"
    if exc.status == 404:
        return "not_found_error"
    return "invalid_request_error"


def openai_error(message: str, *, status: int, type_: str, code: str | None, param: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status=status)


def error_response(exc: ApplicationError) -> JsonResponse:
    """The /v1/ door's one translator of domain errors into OpenAI's error JSON."""
    status = exc.status
    code: str | None = exc.code
    param = exc.details.get("param") if isinstance(exc.details.get("param"), str) else None
    if isinstance(exc, NotAuthenticated):
        code = "invalid_api_key"
    if isinstance(exc, Busy):
        status = 429  # a saturated pool: try again after Retry-After, like a rate limit
        code = "engine_overloaded"
    if isinstance(exc, NotFound) and param == "model":
        code = "model_not_found"
    response = openai_error(exc.message, status=status, type_=_error_type(exc), code=code, param=param)
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    elif status == 429:
        response["Retry-After"] = "1"
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="v1"'
    return response


def _invalid(message: str, param: str | None = None) -> InvalidInput:
    return InvalidInput(message, details={"param": param} if param else None)


# --- authentication -------------------------------------------------------------------------------------


def _authenticate_sync(raw: str, address: str = "") -> ApiKey:
    from tenants.selectors import api_key_authenticate
    from tenants.services import api_key_touch
    from tenants.throttling import api_key_throttle_check

    close_old_connections()
    try:
        key = api_key_authenticate(raw_key=raw, address=address)  # failures limited per address
        api_key_touch(key=key)
        api_key_throttle_check(key=key)
        # the creator is the actor of audit events and the user of usage records
        if key.created_by_id is not None:
            key.created_by  # noqa: B018  (load it here, off the event loop)
        return key
    finally:
        close_old_connections()


async def authenticate(request: HttpRequest, *, scope: str = ApiKey.Scope.CHAT) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise NotAuthenticated("Send your API key as 'Authorization: Bearer <key>'.")
    address = request.META.get("REMOTE_ADDR", "")
    key = await sync_to_async(_authenticate_sync, thread_sensitive=False)(raw.strip(), address)
    if not role_at_least(key.role, Role.VIEWER) or scope not in (key.scopes or []):
        raise PermissionDenied(f"This API key lacks the '{scope}' scope.")
    return key


def openai_door(*methods: str) -> Callable[[Callable[..., Awaitable[HttpResponseBase]]], Callable[..., Any]]:
    """Wrap an async /v1/ view: allowed methods, no CSRF (bearer keys only), errors in OpenAI's format."""

    def decorate(view: Callable[..., Awaitable[HttpResponseBase]]) -> Callable[..., Any]:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                response = openai_error(
                    f"Use {' or '.join(methods)} for this endpoint.",
                    status=405,
                    type_="invalid_request_error",
                    code="method_not_allowed",
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return await view(request, *args, **kwargs)
            except ApplicationError as exc:
                return error_response(exc)
            except Exception:
                logger.exception("openai door failed", extra={"path": request.path})
                return openai_error(
                    "The server failed to answer; try again. The request id is in the X-Request-ID header.",
                    status=500,
                    type_="server_error",
                    code="internal_error",
                )

        return csrf_exempt(wrapper)

    return decorate


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        raise _invalid("Send a JSON body.")
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.")
    return body


# --- chat completions: request parsing ------------------------------------------------------------------


def _text_of(content: Any, index: int) -> str:
    """A message's content as text: a string, or a list of text parts (other part types are not supported)."""
    param = f"messages.[{index}].content"
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _invalid("Only text content parts are supported (no images, audio or files).", param)
            texts.append(part["text"])
        return "\n".join(texts)
    raise _invalid("A message's content must be a string or a list of text parts.", param)


def _number(body: dict[str, Any], name: str, *, lo: float, hi: float, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not kind_ok or not (lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise _invalid(f"'{name}' must be {kind} between {lo:g} and {hi:g}.", name)
    return value


def parse_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("'model' is required: a base model or an adapter your department may use.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _invalid(f"Send at most {MAX_MESSAGES} messages.", "messages")
    turns: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _invalid("Each message must be an object with 'role' and 'content'.", f"messages.[{i}]")
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise _invalid(
                "Message roles are 'system', 'developer', 'user' and 'assistant' (tools are not supported).",
                f"messages.[{i}].role",
            )
        turns.append({"role": role, "content": _text_of(m.get("content"), i)})
    if turns[-1]["role"] != "user":
        raise _invalid("The last message must be the user's question.", "messages")
    if not turns[-1]["content"].strip():
        raise _invalid("The last message is empty.", f"messages.[{len(turns) - 1}].content")
    for unsupported in ("tools", "functions", "tool_choice", "function_call", "audio"):
        if body.get(unsupported):
            raise _invalid(f"'{unsupported}' is not supported by this endpoint.", unsupported)
    if body.get("logprobs"):
        raise _invalid("'logprobs' is not supported by this endpoint.", "logprobs")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise _invalid("Only the 'text' response format is supported.", "response_format")
    n = _number(body, "n", lo=1, hi=1, integer=True)
    del n  # only one choice per request
    max_tokens = _number(body, "max_completion_tokens", lo=1, hi=1_000_000, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", lo=1, hi=1_000_000, integer=True)
    temperature = _number(body, "temperature", lo=0, hi=2)
    _number(body, "top_p", lo=0, hi=1)
    seed = _number(body, "seed", lo=-(2**63), hi=2**63 - 1, integer=True)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop)
    ):
        raise _invalid(f"'stop' must be a string or a list of at most {MAX_STOP} non-empty strings.", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("'stream' must be true or false.", "stream")
    kb_ids = body.get("knowledge_bases", [])
    if kb_ids is None:
        kb_ids = []
    if not isinstance(kb_ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in kb_ids):
        raise _invalid("'knowledge_bases' must be a list of knowledge base ids.", "knowledge_bases")
    return {
        "model": model.strip(),
        "history": fit_history(turns[:-1]),
        "text": turns[-1]["content"],
        "max_tokens": max_tokens,
        "temperature": float(temperature) if temperature is not None else None,
        "seed": seed,
        "stop": stop or None,
        "stream": stream,
        "knowledge_base_ids": kb_ids,
    }


def fit_history(history: list[dict[str, str]], *, budget: int = HISTORY_CHAR_BUDGET) -> list[dict[str, str]]:
    """The most recent earlier turns within a character budget. The pipeline fits the history to the model's
    window anyway; trimming first bounds the masking and guard work a long client history could cause."""
    kept: list[dict[str, str]] = []
    for turn in reversed(history):
        budget -= len(turn["content"])
        if budget < 0:
            break
        kept.append(turn)
    kept.reverse()
    return kept


def _inspect_client_history_sync(key: ApiKey, history: list[dict[str, str]]) -> None:
    """The client's own earlier system and user turns pass the input guard too: the browser's history consists
    of questions the guard already saw, a client's history does not."""
    from guardrails.services import inspect_input

    close_old_connections()
    try:
        for turn in history:
            if turn["role"] not in ("system", "user") or not turn["content"].strip():
                continue
            verdict = inspect_input(tenant=key.tenant, text=turn["content"])
            if verdict.decision == "block":
                reasons = "; ".join(list(verdict.reasons)[:2])
                raise GuardrailBlocked(
                    "An earlier message was blocked by the content policy" + (f": {reasons}." if reasons else "."),
                    details={"param": "messages", "score": round(float(verdict.score), 3)},
                )
    finally:
        close_old_connections()


# --- chat completions: responses -----------------------------------------------------------------------


def _finish_reason(reason: str) -> str:
    return reason if reason in _FINISH_REASONS else "stop"


def _usage(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _public_citations(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("n", "document_id", "document_name", "knowledge_base_id", "page", "heading", "snippet", "chunk_id")
    return [{k: c.get(k) for k in keys} for c in citations]


async def _forget_request_vault(run: ChatRun) -> None:
    """The request's PII vault (``request:<id>``) is of no use once the answer is out: delete it."""
    from guardrails.services import pii_vault_delete

    def forget() -> None:
        close_old_connections()
        try:
            pii_vault_delete(tenant=run.inp.tenant, scope_key=run.scope_key)
        finally:
            close_old_connections()

    try:
        await sync_to_async(forget, thread_sensitive=False)()
    except Exception:
        logger.exception("could not delete a request's PII vault", extra={"request_id": run.request_id})


class _Completion:
    """Identity and framing of one completion's chunks."""

    def __init__(self, run: ChatRun, model: str) -> None:
        self.id = f"chatcmpl-{run.request_id}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
            **extra,
        }
        return _sse(payload)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _stream_events(
    run: ChatRun, events: AsyncIterator[Any], first: Any, frame: _Completion
) -> AsyncIterator[bytes]:
    """Pipeline events → OpenAI chunks: a role chunk (with citations), content chunks, a finish chunk, a usage
    chunk (``choices: []``), then ``data: [DONE]``. A failure after the first token is an ``error`` event."""
    citations: list[dict[str, Any]] = []
    opened = False
    event: Any = first
    try:
        while True:
            if isinstance(event, Citations):
                citations = _public_citations(event.citations)
            elif isinstance(event, Token | Done | Failed) and not opened:
                opened = True
                yield frame.chunk({"role": "assistant", "content": ""}, citations=citations)
            if isinstance(event, Token) and event.text:
                yield frame.chunk({"content": event.text})
            elif isinstance(event, Done):
                yield frame.chunk(
                    {}, _finish_reason(event.finish_reason), citations=citations, warnings=list(event.warnings)
                )
                usage_chunk = {
                    "id": frame.id,
                    "object": "chat.completion.chunk",
                    "created": frame.created,
                    "model": frame.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": _usage(event.usage),
                }
                yield _sse(usage_chunk)
                yield b"data: [DONE]\n\n"
                return
            elif isinstance(event, Failed):
                yield _sse(
                    {
                        "error": {
                            "message": event.message or "The model server failed while answering.",
                            "type": "server_error",
                            "param": None,
                            "code": event.code or "upstream_error",
                        },
                        "usage": _usage(event.usage),
                    }
                )
                return
            try:
                event = await events.__anext__()
            except StopAsyncIteration:
                return
    except ApplicationError as exc:
        yield _sse(json.loads(error_response(exc).content))
    except Exception:
        logger.exception("openai stream failed", extra={"request_id": run.request_id})
        yield _sse(
            {
                "error": {
                    "message": "The server failed while answering.",
                    "type": "server_error",
                    "param": None,
                    "code": "internal_error",
                }
            }
        )
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await _forget_request_vault(run)


async def _complete(run: ChatRun, events: AsyncIterator[Any], first: Any, model: str) -> JsonResponse:
    event: Any = first
    citations: list[dict[str, Any]] = []
    try:
        while not isinstance(event, Done | Failed):
            if isinstance(event, Citations):
                citations = _public_citations(event.citations)
            event = await events.__anext__()
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        await _forget_request_vault(run)
    if isinstance(event, Failed):
        response = openai_error(
            event.message or "The model server failed while answering.",
            status=502,
            type_="server_error",
            code=event.code or "upstream_error",
        )
        return response
    frame = _Completion(run, model)
    return JsonResponse(
        {
            "id": frame.id,
            "object": "chat.completion",
            "created": frame.created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": event.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": _finish_reason(event.finish_reason),
                }
            ],
            "usage": _usage(event.usage),
            "citations": citations or _public_citations(event.citations),
            "warnings": list(event.warnings),
        }
    )


@openai_door("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    key = await authenticate(request)
    req = parse_chat_request(_json_body(request))
    await sync_to_async(_inspect_client_history_sync, thread_sensitive=False)(key, req["history"])
    run = ChatRun(
        ChatInput(
            tenant=key.tenant,
            role=key.role,
            text=req["text"],
            user=key.created_by,
            api_key=key,
            history=req["history"],
            knowledge_base_ids=req["knowledge_base_ids"],
            model=req["model"],
            max_tokens=req["max_tokens"],
            temperature=req["temperature"],
            seed=req["seed"],
            stop=req["stop"],
            source=UsageRecord.Source.API,
            request_id=request_id_var.get() or "",
        )
    )
    events = run.stream()
    try:
        # errors before the first event (quota, guardrails, unknown model, busy pool) answer as HTTP errors
        first = await events.__anext__()
        while isinstance(first, Started):
            first = await events.__anext__()
    except NotFound as exc:
        await _forget_request_vault(run)
        named = exc.code in ("model_not_found", "adapter_not_found") or "model" in exc.message.lower()
        if named or "adapter" in exc.message.lower():
            exc.details = {**exc.details, "param": "model"}
        elif req["knowledge_base_ids"]:
            exc.details = {**exc.details, "param": "knowledge_bases"}
        raise
    except StopAsyncIteration:
        await _forget_request_vault(run)
        raise ApplicationError("The pipeline ended without an answer.") from None
    except Exception:
        await _forget_request_vault(run)
        raise
    if req["stream"]:
        response = StreamingHttpResponse(
            _stream_events(run, events, first, _Completion(run, req["model"])),
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return await _complete(run, events, first, req["model"])


# --- models ---------------------------------------------------------------------------------------------


def _models_for_sync(key: ApiKey) -> list[dict[str, Any]]:
    """Base models that can be routed now, the adapters this department may use that are loaded somewhere, and the
    embedding models."""
    from adapters.selectors import adapter_list_for_tenant
    from inference_pool.models import BaseModel
    from inference_pool.selectors import served_model_list
    from knowledge.embeddings import embedding_models

    close_old_connections()
    try:
        served = served_model_list()
        allowed = {a.name: a for a in adapter_list_for_tenant(tenant=key.tenant).select_related("owner_tenant")}
        created = dict(BaseModel.objects.values_list("name", "created_at"))
        out: dict[str, dict[str, Any]] = {}
        for s in served:
            if s.adapter is None:
                when = created.get(s.model)
                out[s.model] = {
                    "id": s.model,
                    "object": "model",
                    "created": int(when.timestamp()) if when else 0,
                    "owned_by": "portal",
                    "type": "chat",
                    "context_length": s.context_length,
                }
            elif s.adapter in allowed and s.adapter not in out:
                adapter = allowed[s.adapter]
                out[s.adapter] = {
                    "id": s.adapter,
                    "object": "model",
                    "created": int(adapter.created_at.timestamp()),
                    "owned_by": adapter.owner_tenant.slug if adapter.owner_tenant else "portal",
                    "type": "chat",
                    "parent": s.model,
                    "context_length": s.context_length,
                }
        for model_id, spec in embedding_models().items():
            out.setdefault(
                model_id,
                {
                    "id": model_id,
                    "object": "model",
                    "created": 0,
                    "owned_by": "portal",
                    "type": "embedding",
                    "dimensions": int(spec.get("dimension", 0)),
                },
            )
        return sorted(out.values(), key=lambda m: (m["type"], m["id"]))
    finally:
        close_old_connections()


@openai_door("GET")
async def models_list(request: HttpRequest) -> HttpResponse:
    key = await authenticate(request)
    data = await sync_to_async(_models_for_sync, thread_sensitive=False)(key)
    return JsonResponse({"object": "list", "data": data})


@openai_door("GET")
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    key = await authenticate(request)
    data = await sync_to_async(_models_for_sync, thread_sensitive=False)(key)
    for entry in data:
        if entry["id"] == model:
            return JsonResponse(entry)
    raise NotFound(f"No model named '{model}' is available to your department.", details={"param": "model"})


# --- embeddings -----------------------------------------------------------------------------------------


def parse_embedding_request(body: dict[str, Any]) -> dict[str, Any]:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("'model' is required: an embedding model listed by GET /v1/models.", "model")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise _invalid("'input' must be a string or a non-empty list of strings.", "input")
    if not all(isinstance(t, str) for t in texts):
        raise _invalid("'input' must hold text; token arrays are not supported.", "input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise _invalid(f"Send at most {MAX_EMBEDDING_INPUTS} inputs per request.", "input")
    for i, t in enumerate(texts):
        if not t.strip():
            raise _invalid(f"Input {i} is empty.", "input")
        if len(t) > MAX_EMBEDDING_CHARS:
            raise _invalid(f"Input {i} is longer than {MAX_EMBEDDING_CHARS:,} characters.", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _invalid("'encoding_format' is 'float' or 'base64'.", "encoding_format")
    dimensions = _number(body, "dimensions", lo=1, hi=100_000, integer=True)
    return {"model": model.strip(), "texts": texts, "encoding": encoding, "dimensions": dimensions}


def _count_tokens(embedder: Any, texts: list[str]) -> tuple[list[int], int | None]:
    """Tokens per input with the embedder's own tokenizer when it has one (else a cautious estimate), and the
    model's input limit when known."""
    model = getattr(embedder, "model", None)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        return counts, getattr(model, "max_seq_length", None)
    return [math.ceil(len(t.encode()) / 3) + 2 for t in texts], None


def _embed_sync(key: ApiKey, req: dict[str, Any], request_id: str) -> dict[str, Any]:
    from knowledge.embeddings import embedding_models, get_embedder
    from tenants.quota import quota_release, quota_reserve, quota_settle
    from tenants.services import audit_record

    close_old_connections()
    try:
        if req["model"] not in embedding_models():
            raise NotFound(
                f"No embedding model named '{req['model']}' is available; see GET /v1/models.",
                details={"param": "model"},
            )
        embedder = get_embedder(req["model"])
        if req["dimensions"] is not None and req["dimensions"] != embedder.dimension:
            raise _invalid(f"This model returns {embedder.dimension} dimensions; it cannot shorten them.", "dimensions")
        texts: list[str] = req["texts"]
        counts, limit = _count_tokens(embedder, texts)
        if limit:
            for i, n in enumerate(counts):
                if n > limit:
                    raise _invalid(f"Input {i} is {n} tokens; this model reads at most {limit}.", "input")
        tokens = sum(counts)
        reservation = quota_reserve(tenant=key.tenant, max_tokens=max(tokens, 1), request_id=request_id)
        try:
            vectors = np.asarray(embedder.embed_array(texts), dtype=np.float32)
        except BaseException:
            quota_release(reservation=reservation)
            raise
        quota_settle(
            reservation=reservation,
            tokens_in=tokens,
            tokens_out=0,
            source=UsageRecord.Source.EMBEDDING,
            user=key.created_by,
            api_key=key,
            model=req["model"],
            request_id=request_id,
        )
        audit_record(
            action="embeddings.create",
            tenant=key.tenant,
            actor=key.created_by,
            actor_label=f"api-key:{key.prefix}",
            details={"request_id": request_id, "model": req["model"], "inputs": len(texts), "tokens": tokens},
        )
        data = []
        for i, row in enumerate(vectors):
            embedding: Any
            if req["encoding"] == "base64":
                embedding = base64.b64encode(row.astype("<f4").tobytes()).decode()
            else:
                embedding = row.tolist()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return {
            "object": "list",
            "data": data,
            "model": req["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    finally:
        close_old_connections()


@openai_door("POST")
async def embeddings(request: HttpRequest) -> HttpResponse:
    key = await authenticate(request)
    req = parse_embedding_request(_json_body(request))
    result = await sync_to_async(_embed_sync, thread_sensitive=False)(key, req, request_id_var.get() or "")
    return JsonResponse(result)


@openai_door("GET", "POST", "PUT", "PATCH", "DELETE")
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise NotFound(
        f"Unknown endpoint {request.method} {request.path}; this portal serves /v1/chat/completions, "
        "/v1/models and /v1/embeddings."
    )
