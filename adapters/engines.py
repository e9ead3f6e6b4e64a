"""What each engine reports about its LoRA adapters, and run-time load/unload on vLLM.

- llama.cpp ``GET /lora-adapters`` → ``[{"id": 0, "path": "...", "scale": 0.0}, ...]`` (fixed at launch: ``--lora``).
- vLLM ``GET /v1/models`` → base model cards plus one card per LoRA module (``parent`` set, ``root`` the path);
  ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and ``POST /v1/unload_lora_adapter {"lora_name"}``
  (only when the server runs with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; otherwise the routes answer 404).
- TGI has no listing endpoint: its adapters are the ones in its launch configuration (``--lora-adapters``).

Errors become ``core.errors.UpstreamError`` with a message a person can act on; engine text is shortened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from core.errors import UpstreamError

if TYPE_CHECKING:
    from inference_pool.models import Backend

TIMEOUT = httpx.Timeout(5.0, connect=2.0)
LOAD_TIMEOUT = httpx.Timeout(120.0, connect=2.0)  # vLLM reads the adapter weights before it answers


@dataclass(frozen=True)
class LoadedAdapter:
    """One adapter an engine reports as loaded: ``ref`` is how the engine names it (llama.cpp id, vLLM name)."""

    ref: str
    path: str
    name: str = ""  # vLLM: the served name; llama.cpp: none (adapters are numbered)


def _headers(backend: Backend) -> dict[str, str]:
    return {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}


def _root(backend: Backend) -> str:
    url = backend.base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def engine_error_message(response: httpx.Response) -> str:
    """The engine's own explanation: vLLM's ``{"error": {"message"}}`` or older ``{"message"}``, FastAPI's
    ``{"detail"}``, or the body text."""
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, ValueError):
        return _short(response.text) or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return _short(str(err["message"]))
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                return _short(body[key])
    return _short(response.text)


def _client(timeout: httpx.Timeout) -> httpx.Client:
    # Engines sit on the internal network: never route to them through a proxy from the environment.
    return httpx.Client(timeout=timeout, trust_env=False)


def _get_json(backend: Backend, path: str) -> Any:
    url = f"{_root(backend)}{path}"
    try:
        with _client(TIMEOUT) as client:
            response = client.get(url, headers=_headers(backend))
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{backend.name} did not answer {path} ({type(exc).__name__}).") from exc
    if response.status_code != 200:
        raise UpstreamError(
            f"{backend.name} answered {path} with HTTP {response.status_code}: {engine_error_message(response)}"
        )
    try:
        return response.json()
    except (json.JSONDecodeError, ValueError) as exc:
        raise UpstreamError(f"{backend.name} answered {path} with something that is not JSON.") from exc


def llamacpp_list(backend: Backend) -> list[LoadedAdapter]:
    body = _get_json(backend, "/lora-adapters")
    if not isinstance(body, list):
        raise UpstreamError(f"{backend.name}: /lora-adapters did not return a list.")
    out = []
    for item in body:
        if isinstance(item, dict) and "id" in item:
            out.append(LoadedAdapter(ref=str(item["id"]), path=str(item.get("path", ""))))
    return out


def vllm_list(backend: Backend) -> list[LoadedAdapter]:
    body = _get_json(backend, "/v1/models")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise UpstreamError(f"{backend.name}: /v1/models did not return a model list.")
    out = []
    for card in data:
        # LoRA modules are the cards with a parent (the base model); base model cards have parent null.
        if isinstance(card, dict) and card.get("parent") and card.get("id"):
            name = str(card["id"])
            out.append(LoadedAdapter(ref=name, path=str(card.get("root") or ""), name=name))
    return out


def vllm_load(backend: Backend, *, name: str, path: str) -> str:
    """Ask vLLM to load an adapter; returns the engine's message. "Already loaded" counts as success."""
    return _vllm_post(backend, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, ok_phrase="already")


def vllm_unload(backend: Backend, *, name: str) -> str:
    """Ask vLLM to unload an adapter. "Cannot be found" counts as success (it is not loaded either way)."""
    return _vllm_post(backend, "/v1/unload_lora_adapter", {"lora_name": name}, ok_phrase="cannot be found")


def _vllm_post(backend: Backend, path: str, payload: dict[str, str], *, ok_phrase: str) -> str:
    url = f"{_root(backend)}{path}"
    try:
        with _client(LOAD_TIMEOUT) as client:
            response = client.post(url, json=payload, headers=_headers(backend))
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{backend.name} did not answer {path} ({type(exc).__name__}).") from exc
    if response.status_code == 200:
        return _short(response.text) or "ok"
    message = engine_error_message(response)
    if response.status_code in (400, 404) and ok_phrase in message.lower():
        return message
    if response.status_code == 404:
        raise UpstreamError(
            f"{backend.name} does not offer {path}: start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and "
            "--enable-lora, or add the adapter to its launch spec and restart it."
        )
    raise UpstreamError(f"{backend.name} refused ({response.status_code}): {message}")
