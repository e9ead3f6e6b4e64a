"""The OpenAI-compatible door at /v1/: chat completions (streaming and not), models, embeddings.

Thin: it parses OpenAI-shaped requests, resolves the caller (``tenants.auth.caller_from_bearer``, as every door
does), runs the chat pipeline in its conversation-less mode (``ChatInput(conversation=None, history=<the client's
earlier messages>, text=<the last user message>, ...)``), lists models (``chat.selectors.model_list_for_tenant``)
and embeds (``chat.services.embedding_create``), and frames the answers. The pipeline trims the client's history,
passes every client turn through the input guard, keeps the PII vault per request under a server-made id and
deletes it when the answer is out. The response ends as soon as the last token is guarded: the answer's
persistence and the quota settlement follow in the background, promised first in the settlement journal
(``tenants.settlements``), so a process that dies in between loses no usage.

Authentication: ``Authorization: Bearer <api key>`` only (no cookies, so no CSRF); the key needs the ``chat`` scope.
Every request counts against the key's rate (``tenants.throttling``), and the pipeline counts it against the
department's quota. Errors answer in OpenAI's format ``{"error": {"message", "type", "param", "code"}}`` through
one translator (``error_response``); a used-up quota, a key over its rate and a saturated pool answer 429 with
``Retry-After``; ``param`` comes from the typed error (``details["param"]``), never from its message.

Extra fields (ignored by OpenAI clients unless asked for): the request may name ``knowledge_bases: [ids]`` to ground
the answer; the response then carries ``citations``: the passages the answer used (in the non-streaming body and the
last chunk of a stream; the first chunk lists the passages the model was given) and ``warnings`` (guardrail notes a
person should see). When the knowledge bases do not support an answer, it says so and cites nothing.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from chat.pipeline import ChatInput, ChatRun, Citations, Done, Failed, Started, Token
from chat.selectors import model_list_for_tenant
from chat.services import embedding_create
from core.errors import (
    ApplicationError,
    BudgetExceeded,
    Busy,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    UpstreamError,
)
from core.logging import request_id_var
from tenants.auth import Caller, caller_from_bearer
from tenants.models import ApiKey, UsageRecord
from tenants.throttling import api_key_throttle_check

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
    if isinstance(exc, BudgetExceeded):
        return "insufficient_quota"  # OpenAI's answer when the account's spending limit is reached
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


def _server_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "internal_error"}}


def _status(exc: ApplicationError) -> int:
    return 429 if isinstance(exc, Busy) else exc.status  # a saturated pool: retry after Retry-After, like a limit


def error_payload(exc: ApplicationError) -> dict[str, Any]:
    """A domain error as OpenAI's error object. ``param`` is the typed error's ``details["param"]``; an unknown
    model is ``model_not_found`` on ``model`` whichever layer found it."""
    code: str | None = exc.code
    param = exc.details.get("param") if isinstance(exc.details.get("param"), str) else None
    if isinstance(exc, NotAuthenticated):
        code = "invalid_api_key"
    elif isinstance(exc, Busy):
        code = "engine_overloaded"
    elif isinstance(exc, NotFound) and (code in ("model_not_found", "adapter_not_found") or param == "model"):
        code, param = "model_not_found", "model"
    return {"error": {"message": exc.message, "type": _error_type(exc), "param": param, "code": code}}


def error_response(exc: ApplicationError) -> JsonResponse:
    """The /v1/ door's one translator of domain errors into OpenAI's error JSON (and its headers)."""
    status = _status(exc)
    response = JsonResponse(error_payload(exc), status=status)
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    elif status == 429:
        response["Retry-After"] = "1"
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="v1"'
    return response


def _invalid(message: str, param: str | None = None) -> InvalidInput:
    return InvalidInput(message, details={"param": param} if param else None)


# --- the door -------------------------------------------------------------------------------------------


def _caller_sync(header: str, scope: str, address: str) -> Caller:
    close_old_connections()
    try:
        caller = caller_from_bearer(header=header, scope=scope, address=address)  # failures limited per address
        api_key_throttle_check(key=caller.key)
        return caller
    finally:
        close_old_connections()


async def authenticate(request: HttpRequest, *, scope: str = ApiKey.Scope.CHAT) -> Caller:
    header = request.headers.get("Authorization", "")
    address = request.META.get("REMOTE_ADDR", "")
    return await sync_to_async(_caller_sync, thread_sensitive=False)(header, scope, address)


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
                message = "The server failed to answer; try again. The request id is in the X-Request-ID header."
                return JsonResponse(_server_error(message), status=500)

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


def _plain(x: float) -> str:
    """1,000,000 rather than 1e+06 in a message a person reads."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def _number(body: dict[str, Any], name: str, *, lo: float, hi: float, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kind_ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not kind_ok or not (lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise _invalid(f"'{name}' must be {kind} between {_plain(lo)} and {_plain(hi)}.", name)
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
        "history": turns[:-1],
        "text": turns[-1]["content"],
        "max_tokens": max_tokens,
        "temperature": float(temperature) if temperature is not None else None,
        "seed": seed,
        "stop": stop or None,
        "stream": stream,
        "knowledge_base_ids": kb_ids,
    }


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


class _Completion:
    """Identity and framing of one completion's chunks."""

    def __init__(self, request_id: str, model: str) -> None:
        self.id = f"chatcmpl-{request_id}"
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

    def usage_chunk(self, usage: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": _usage(usage),
        }


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


async def _stream_events(events: AsyncGenerator[Any, None], first: Any, frame: _Completion) -> AsyncIterator[bytes]:
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
                # the first chunk offered the passages the model saw; the last names those the answer used
                yield frame.chunk(
                    {},
                    _finish_reason(event.finish_reason),
                    citations=_public_citations(event.citations),
                    warnings=list(event.warnings),
                )
                yield _sse(frame.usage_chunk(event.usage))
                yield b"data: [DONE]\n\n"
                return
            elif isinstance(event, Failed):
                yield _sse({**error_payload(_failure(event)), "usage": _usage(event.usage)})
                return
            try:
                event = await events.__anext__()
            except StopAsyncIteration:
                return
    except ApplicationError as exc:
        yield _sse(error_payload(exc))
    except Exception:
        logger.exception("openai stream failed")
        yield _sse(_server_error("The server failed while answering."))
    finally:
        await events.aclose()


def _failure(event: Failed) -> UpstreamError:
    """The engine failed after the first token: as a typed error, for the one translator."""
    return UpstreamError(event.message or "The model server failed while answering.", code=event.code or None)


async def _complete(events: AsyncGenerator[Any, None], first: Any, frame: _Completion) -> JsonResponse:
    event: Any = first
    try:
        while not isinstance(event, Done | Failed):
            event = await events.__anext__()
    finally:
        await events.aclose()
    if isinstance(event, Failed):
        raise _failure(event)
    return JsonResponse(
        {
            "id": frame.id,
            "object": "chat.completion",
            "created": frame.created,
            "model": frame.model,
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
            "citations": _public_citations(event.citations),  # the passages the answer used
            "warnings": list(event.warnings),
        }
    )


@openai_door("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    caller = await authenticate(request)
    req = parse_chat_request(_json_body(request))
    run = ChatRun(
        ChatInput(
            tenant=caller.tenant,
            role=caller.role,
            text=req["text"],
            user=caller.user,
            api_key=caller.key,
            history=req["history"],
            knowledge_base_ids=req["knowledge_base_ids"],
            model=req["model"],
            max_tokens=req["max_tokens"],
            temperature=req["temperature"],
            seed=req["seed"],
            stop=req["stop"],
            source=UsageRecord.Source.API,
            request_id=request_id_var.get() or "",
            finish_after_done=True,  # [DONE] as soon as the answer is guarded; persistence and settlement follow
        )
    )
    events = run.stream()
    try:
        # errors before the first event (quota, guardrails, unknown model, busy pool) answer as HTTP errors
        first = await events.__anext__()
        while isinstance(first, Started):
            first = await events.__anext__()
    except StopAsyncIteration:
        raise ApplicationError("The pipeline ended without an answer.") from None
    frame = _Completion(run.request_id, req["model"])
    if req["stream"]:
        response = StreamingHttpResponse(
            _stream_events(events, first, frame), content_type="text/event-stream; charset=utf-8"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return await _complete(events, first, frame)


# --- models ---------------------------------------------------------------------------------------------


def _models_sync(caller: Caller) -> list[dict[str, Any]]:
    close_old_connections()
    try:
        return model_list_for_tenant(tenant=caller.tenant)
    finally:
        close_old_connections()


@openai_door("GET")
async def models_list(request: HttpRequest) -> HttpResponse:
    caller = await authenticate(request)
    data = await sync_to_async(_models_sync, thread_sensitive=False)(caller)
    return JsonResponse({"object": "list", "data": data})


@openai_door("GET")
async def model_detail(request: HttpRequest, model: str) -> HttpResponse:
    caller = await authenticate(request)
    data = await sync_to_async(_models_sync, thread_sensitive=False)(caller)
    for entry in data:
        if entry["id"] == model:
            return JsonResponse(entry)
    raise NotFound(
        f"No model named '{model}' is available to your department.",
        code="model_not_found",
        details={"param": "model"},
    )


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


def _embed_sync(caller: Caller, req: dict[str, Any], request_id: str) -> dict[str, Any]:
    close_old_connections()
    try:
        result = embedding_create(
            caller=caller, model=req["model"], texts=req["texts"], dimensions=req["dimensions"], request_id=request_id
        )
    finally:
        close_old_connections()
    data = []
    for i, row in enumerate(result.vectors):
        embedding: Any
        if req["encoding"] == "base64":
            embedding = base64.b64encode(row.astype("<f4").tobytes()).decode()
        else:
            embedding = row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": result.tokens, "total_tokens": result.tokens}
    return {"object": "list", "data": data, "model": req["model"], "usage": usage}


@openai_door("POST")
async def embeddings(request: HttpRequest) -> HttpResponse:
    caller = await authenticate(request, scope=ApiKey.Scope.CHAT)
    req = parse_embedding_request(_json_body(request))
    result = await sync_to_async(_embed_sync, thread_sensitive=False)(caller, req, request_id_var.get() or "")
    return JsonResponse(result)


@openai_door("GET", "POST", "PUT", "PATCH", "DELETE")
async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    raise NotFound(
        f"Unknown endpoint {request.method} {request.path}; this portal serves /v1/chat/completions, "
        "/v1/models and /v1/embeddings."
    )
