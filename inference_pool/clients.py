"""One streaming client interface for every engine.

``EngineClient.stream_chat(request, adapter_ref=...)`` yields ``TokenEvent``s, at most one ``UsageEvent`` and one
``Finish``; it raises ``EngineError`` (with ``retryable``/``trips_breaker``) when the engine fails.

- OpenAI-compatible servers (vLLM, llama.cpp ``llama-server``, TGI's ``/v1``, any ``openai`` kind) go through
  ``huggingface_hub.AsyncInferenceClient``: its provider helper builds the ``/v1/chat/completions`` request (URL,
  headers, payload with ``stream_options.include_usage``) and its transport streams the server-sent events. The
  SSE lines are parsed here with ``json.loads`` instead of the client's typed dataclasses, which cost ~110 µs of CPU
  per chunk (the relay budget is 50 µs per token).
- TGI with an adapter uses the native ``/generate_stream`` with ``parameters.adapter_id``; the prompt is rendered
  with the server's own chat template through ``/chat_tokenize`` (which also gives the prompt's token count).

Adapter selection: vLLM/openai ``model=<adapter>``; TGI ``adapter_id``; llama.cpp ``lora: [{"id": N, "scale": 1}]``
with every other loaded adapter listed at scale 0 (an empty list would apply all of them: see llamacpp_lora_field).
When an engine reports no usage, tokens are counted here (one streamed chunk is one token; the prompt estimated).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError
from huggingface_hub.inference._providers import get_provider_helper

from inference_pool.types import ChatRequest, TokenEvent, UsageEvent


@dataclass(frozen=True, slots=True)
class BackendTarget:
    """An immutable snapshot of a ``Backend`` row: what the router and the clients need, without the ORM."""

    id: int
    name: str
    kind: str
    base_url: str
    model: str  # the base model name clients ask for
    model_id: str  # what the engine expects as ``model``
    max_concurrent: int = 8
    weight: float = 1.0
    context_length: int = 4096
    api_key: str = ""
    adapters: dict[str, str] = field(default_factory=dict)  # confirmed adapter name -> engine ref
    lora_ids: tuple[int, ...] = ()  # llama.cpp: every adapter id the engine has loaded (from the last probe)
    health: str = "unknown"
    breaker: str = "closed"
    load: dict[str, float] = field(default_factory=dict)
    last_probe_ts: float = 0.0


@dataclass(slots=True)
class Finish:
    reason: str = "stop"
    type: str = "finish"


EngineEvent = TokenEvent | UsageEvent | Finish


class EngineError(Exception):
    """An engine failed. ``retryable``: another backend may succeed; ``trips_breaker``: counts against this one."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        retryable: bool = True,
        trips_breaker: bool = True,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.trips_breaker = trips_breaker


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A fallback count when an engine reports no usage: ~4 characters a token plus a few per message."""
    chars = sum(len(m.get("content") or "") for m in messages)
    return math.ceil(chars / 4) + 4 * len(messages)


def llamacpp_lora_field(loaded: tuple[int, ...], adapter_ref: str | None) -> list[dict[str, float]]:
    """llama.cpp's per-request ``lora`` list: the chosen adapter at scale 1, every other loaded one at 0.

    Every loaded id is listed because an empty list means "the server's default scales", which apply every
    adapter loaded at start (``--lora-init-without-apply`` notwithstanding), not "the base model"."""
    chosen = int(adapter_ref) if adapter_ref else None
    ids = sorted({*loaded, *([chosen] if chosen is not None else [])})
    return [{"id": i, "scale": 1.0 if i == chosen else 0.0} for i in ids]


def _error_from_status(status: int, body: str, *, engine: str) -> EngineError:
    detail = _error_text(body)
    if status in (400, 413, 422):
        # The request itself is wrong (e.g. longer than the context); another backend would refuse it too.
        return EngineError(
            f"{engine} refused the request: {detail}", kind="http", status=status, retryable=False, trips_breaker=False
        )
    if status == 404:
        # The model or adapter is not loaded there: try elsewhere, but the server itself is fine.
        return EngineError(
            f"{engine} does not serve it: {detail}", kind="http", status=status, retryable=True, trips_breaker=False
        )
    if status in (429, 503):
        return EngineError(
            f"{engine} is overloaded or loading: {detail}",
            kind="http",
            status=status,
            retryable=True,
            trips_breaker=False,
        )
    return EngineError(f"{engine} failed with HTTP {status}: {detail}", kind="http", status=status)


def _error_text(body: str) -> str:
    """The message of an engine's error body (OpenAI ``{"error": {"message"}}``, TGI ``{"error": "..."}``)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body.strip()[:300] or "no details"
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("message", obj))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(obj)[:300]


def parse_openai_chunk(obj: dict[str, Any]) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """One ``chat.completion.chunk`` → (content delta, finish reason, (prompt, completion) usage)."""
    if obj.get("error") or obj.get("object") == "error":
        raise EngineError(f"the engine reported an error mid-stream: {_error_text(json.dumps(obj))}", kind="stream")
    text = finish = None
    choices = obj.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            text = delta.get("content") or None
        finish = choice.get("finish_reason")
    usage = obj.get("usage")
    counts = None
    if usage:
        counts = (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    return text, finish, counts


def parse_tgi_event(obj: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """One TGI ``/generate_stream`` event → (token text, finish reason, generated tokens)."""
    if obj.get("error"):
        raise EngineError(
            f"TGI reported an error: {obj['error']}",
            kind="stream",
            retryable=obj.get("error_type") not in ("validation",),
            trips_breaker=obj.get("error_type") not in ("validation", "overloaded"),
        )
    token = obj.get("token") or {}
    text = None if token.get("special") else (token.get("text") or None)
    details = obj.get("details")
    if details:
        return text, details.get("finish_reason") or "stop", details.get("generated_tokens")
    return text, None, None


class _PoolInferenceClient(AsyncInferenceClient):
    """``AsyncInferenceClient`` bound to the backend's long-lived connection pool instead of a fresh session."""

    def __init__(self, *, http: httpx2.AsyncClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool_http = http

    async def _get_async_client(self) -> httpx2.AsyncClient:  # type: ignore[override]
        return self._pool_http


async def _read_error_body(response: httpx2.Response) -> None:
    if response.status_code >= 400:
        await response.aread()


class EngineClient:
    """Streams chat completions from one backend over a pooled HTTP connection set (one per event loop)."""

    def __init__(self, target: BackendTarget, *, connect_timeout: float = 2.0, read_timeout: float = 60.0) -> None:
        self.target = target
        self.root = target.base_url.rstrip("/")
        if self.root.endswith("/v1"):
            self.root = self.root[: -len("/v1")]
        size = max(16, 2 * target.max_concurrent)
        self.timeout = httpx2.Timeout(read_timeout, connect=connect_timeout)
        self.http = httpx2.AsyncClient(
            # Idle connections are dropped before the engines' own keep-alive timeout (5 s for uvicorn/vLLM and
            # llama.cpp's httplib), so a request never goes out on a socket the server is closing.
            limits=httpx2.Limits(max_connections=size * 2, max_keepalive_connections=size, keepalive_expiry=4.0),
            timeout=self.timeout,
            event_hooks={"response": [_read_error_body]},
            trust_env=False,  # engine traffic stays on the internal network, never through an env proxy
        )
        self._helper = get_provider_helper(None, task="conversational", model=self.root)
        # Kept by the router: requests using this client now, and whether the registry dropped or replaced it
        # (a retired client is closed when its last request ends, never under a running one).
        self.users = 0
        self.retired = False

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.target.api_key:
            headers["authorization"] = f"Bearer {self.target.api_key}"
        return headers

    # --- the one interface ------------------------------------------------------------------------------------
    def stream_chat(self, request: ChatRequest, *, adapter_ref: str | None = None) -> AsyncGenerator[EngineEvent, None]:
        if self.target.kind == "tgi" and adapter_ref:
            return self._stream_tgi_generate(request, adapter_ref)
        return self._stream_openai(request, adapter_ref)

    def _chat_parameters(self, request: ChatRequest, adapter_ref: str | None) -> dict[str, Any]:
        kind = self.target.kind
        model = self.target.model_id
        extra: dict[str, Any] = {}
        if kind == "llamacpp":
            extra["lora"] = llamacpp_lora_field(self.target.lora_ids, adapter_ref)
        elif adapter_ref:  # vLLM, TGI's /v1 and generic OpenAI-compatible servers pick the adapter by model name
            model = adapter_ref
        elif kind == "tgi":
            model = "tgi"
        if request.response_format is not None:
            extra["response_format"] = request.response_format
        return {
            "model": model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "stop": request.stop or None,
            "stream": True,
            "stream_options": {"include_usage": True},
            **extra,
        }

    async def _stream_openai(self, request: ChatRequest, adapter_ref: str | None) -> AsyncGenerator[EngineEvent, None]:
        engine = self.target.name
        # Always an explicit key: with none, huggingface_hub reads the machine's own Hugging Face token (a file read
        # per request) and sends it to the engine. The placeholder header is removed below.
        client = _PoolInferenceClient(
            http=self.http, base_url=self.root, api_key=self.target.api_key or "-", timeout=self.timeout
        )
        params = self._helper.prepare_request(
            inputs=request.messages,
            parameters=self._chat_parameters(request, adapter_ref),
            headers=client.headers,
            model=self.root,
            api_key=client.token,
        )
        if not self.target.api_key:
            params.headers.pop("authorization", None)
        if request.response_format is not None and self.target.kind != "tgi" and isinstance(params.json, dict):
            # huggingface_hub rewrites a json_schema response_format into TGI's {"type": "json_object", "value"};
            # llama-server and vLLM read OpenAI's form (llama-server would take the rewritten one as "any object")
            params.json["response_format"] = request.response_format
        tokens = 0
        usage: tuple[int, int] | None = None
        finish: str | None = None
        loads = json.loads
        try:
            try:
                try:
                    lines = await client._inner_post(params, stream=True)
                except (httpx2.RemoteProtocolError, httpx2.ReadError):
                    # A pooled keep-alive connection the server had just closed: no response came back at all.
                    # Resend once on a fresh connection (a dead server fails again, and is then retried elsewhere).
                    lines = await client._inner_post(params, stream=True)
            except HfHubHTTPError as exc:
                resp = exc.response
                raise _error_from_status(resp.status_code, _safe_text(resp), engine=engine) from None
            async for line in lines:
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    continue  # read on to the end of the body, so that the connection goes back to the pool
                text, reason, counts = parse_openai_chunk(loads(payload))
                if text:
                    tokens += 1
                    yield TokenEvent(text)
                if reason:
                    finish = reason
                if counts:
                    usage = counts
        except EngineError:
            raise
        except (InferenceTimeoutError, httpx2.TimeoutException) as exc:
            raise EngineError(f"{engine} timed out", kind="timeout") from exc
        except httpx2.ConnectError as exc:
            raise EngineError(f"{engine} refused the connection", kind="connect") from exc
        except (httpx2.HTTPError, ValueError) as exc:
            raise EngineError(f"{engine} broke the stream ({type(exc).__name__})", kind="protocol") from exc
        finally:
            await client.close()
        if finish is None and tokens == 0:
            raise EngineError(f"{engine} closed the stream without an answer", kind="protocol")
        if usage is None:  # the engine gave no usage: count it here
            yield UsageEvent(estimate_prompt_tokens(request.messages), tokens, estimated=True)
        else:
            yield UsageEvent(usage[0], usage[1])
        yield Finish(finish or "stop")

    async def _stream_tgi_generate(self, request: ChatRequest, adapter_id: str) -> AsyncGenerator[EngineEvent, None]:
        """TGI's native streaming endpoint, where ``parameters.adapter_id`` picks a LoRA adapter."""
        engine = self.target.name
        try:
            resp = await self.http.post(
                f"{self.root}/chat_tokenize",
                json={"model": "tgi", "messages": request.messages},
                headers=self._headers(),
            )
            if resp.status_code >= 400:
                raise _error_from_status(resp.status_code, resp.text, engine=engine)
            rendered = resp.json()
            prompt = rendered["templated_text"]
            prompt_tokens = len(rendered.get("tokenize_response") or [])
        except httpx2.TimeoutException as exc:
            raise EngineError(f"{engine} timed out", kind="timeout") from exc
        except httpx2.ConnectError as exc:
            raise EngineError(f"{engine} refused the connection", kind="connect") from exc
        except (httpx2.HTTPError, ValueError, KeyError) as exc:
            raise EngineError(f"{engine} could not render the prompt ({type(exc).__name__})", kind="protocol") from exc
        parameters: dict[str, Any] = {
            "max_new_tokens": request.max_tokens,
            "adapter_id": adapter_id,
            "details": True,
        }
        if request.temperature and request.temperature > 0:
            parameters.update(do_sample=True, temperature=request.temperature)
        if request.seed is not None:
            parameters["seed"] = request.seed
        if request.stop:
            parameters["stop"] = request.stop
        tokens = 0
        generated: int | None = None
        finish: str | None = None
        loads = json.loads
        try:
            async with self.http.stream(
                "POST",
                f"{self.root}/generate_stream",
                json={"inputs": prompt, "parameters": parameters, "stream": True},
                headers=self._headers(),
            ) as response:
                if response.status_code >= 400:
                    raise _error_from_status(response.status_code, _safe_text(response), engine=engine)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    text, reason, count = parse_tgi_event(loads(line[5:]))
                    if text:
                        tokens += 1
                        yield TokenEvent(text)
                    if reason:
                        finish, generated = reason, count
                        break
        except EngineError:
            raise
        except httpx2.TimeoutException as exc:
            raise EngineError(f"{engine} timed out", kind="timeout") from exc
        except httpx2.ConnectError as exc:
            raise EngineError(f"{engine} refused the connection", kind="connect") from exc
        except (httpx2.HTTPError, ValueError) as exc:
            raise EngineError(f"{engine} broke the stream ({type(exc).__name__})", kind="protocol") from exc
        if finish is None:
            raise EngineError(f"{engine} closed the stream before it finished", kind="protocol")
        yield UsageEvent(prompt_tokens, generated if generated is not None else tokens)
        yield Finish("stop" if finish == "eos_token" else finish)


def _safe_text(response: httpx2.Response) -> str:
    try:
        return response.text
    except httpx2.ResponseNotRead:
        return ""
