"""Request/response shapes of vLLM and TGI (recorded wire formats served locally) and of llama.cpp's captures."""

from __future__ import annotations

import pytest

from inference_pool.clients import BackendTarget, EngineClient, EngineError, Finish
from inference_pool.health import backend_probe_all
from inference_pool.models import Backend, BackendAdapter, BaseModel, HealthState
from inference_pool.signals import load_signals
from inference_pool.tests.fixture_server import FIXTURES, Route, fixture_server
from inference_pool.types import ChatRequest, TokenEvent, UsageEvent

MESSAGES = [{"role": "user", "content": "Hello"}]


def _target(url: str, kind: str, **kw) -> BackendTarget:
    return BackendTarget(
        id=1,
        name=f"{kind}-a",
        kind=kind,
        base_url=url,
        model="llama-3.1-8b",
        model_id=kw.pop("model_id", "meta-llama/Llama-3.1-8B-Instruct"),
        **kw,
    )


async def _collect(client: EngineClient, request: ChatRequest, adapter_ref: str | None = None):
    events = []
    try:
        async for event in client.stream_chat(request, adapter_ref=adapter_ref):
            events.append(event)
    finally:
        await client.aclose()
    return events


def _split(events):
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    usage = [e for e in events if isinstance(e, UsageEvent)]
    finish = [e for e in events if isinstance(e, Finish)]
    return tokens, usage, finish


# --- vLLM ----------------------------------------------------------------------------------------------------------
async def test_vllm_adapter_request_names_the_adapter_as_model_and_asks_for_usage(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_machine_secret_token")
    with fixture_server({("POST", "/v1/chat/completions"): Route.file("vllm/chat_stream_adapter.sse")}) as srv:
        request = ChatRequest(
            messages=MESSAGES, model="llama-3.1-8b", adapter="sql", max_tokens=32, temperature=0, seed=7
        )
        events = await _collect(EngineClient(_target(srv.url, "vllm")), request, adapter_ref="sql-lora")
    tokens, usage, finish = _split(events)
    assert tokens == ["SELECT", " name", " FROM", " employees", ";"]
    assert [(u.prompt_tokens, u.completion_tokens, u.estimated) for u in usage] == [(41, 5, False)]
    assert [f.reason for f in finish] == ["stop"]
    (sent,) = srv.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.json["model"] == "sql-lora"
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["max_tokens"] == 32 and sent.json["seed"] == 7 and sent.json["temperature"] == 0
    assert "lora" not in sent.json
    # huggingface_hub would send the machine's Hugging Face token to any server; the pool strips it.
    assert "authorization" not in sent.headers


async def test_vllm_base_request_uses_the_served_model_name_and_the_backend_key():
    with fixture_server({("POST", "/v1/chat/completions"): Route.file("vllm/chat_stream_adapter.sse")}) as srv:
        request = ChatRequest(messages=MESSAGES, model="llama-3.1-8b")
        await _collect(EngineClient(_target(srv.url + "/v1", "vllm", api_key="engine-key")), request)
    (sent,) = srv.requests
    assert sent.json["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert sent.headers["authorization"] == "Bearer engine-key"


async def test_vllm_error_event_mid_stream_raises_after_the_tokens_so_far():
    with fixture_server({("POST", "/v1/chat/completions"): Route.file("vllm/chat_stream_error.sse")}) as srv:
        client = EngineClient(_target(srv.url, "vllm"))
        seen = []
        with pytest.raises(EngineError) as info:
            async for event in client.stream_chat(ChatRequest(messages=MESSAGES, model="m")):
                seen.append(event)
        await client.aclose()
    assert [e.text for e in seen] == ["The", " quarterly"]
    assert info.value.kind == "stream"
    assert "EngineDeadError" in info.value.message


@pytest.mark.parametrize(
    ("fixture", "status", "retryable", "trips", "words"),
    [
        ("vllm/error_context_length.json", 400, False, False, "maximum context length is 8192"),
        ("vllm/error_unknown_model.json", 404, True, False, "finance-lora` does not exist"),
    ],
    ids=["context-too-long", "unknown-adapter"],
)
async def test_vllm_http_errors_are_classified(fixture, status, retryable, trips, words):
    routes = {("POST", "/v1/chat/completions"): Route.file(fixture, status=status)}
    with fixture_server(routes) as srv, pytest.raises(EngineError) as info:
        await _collect(EngineClient(_target(srv.url, "vllm")), ChatRequest(messages=MESSAGES, model="m"), "x")
    assert info.value.status == status
    assert info.value.retryable is retryable
    assert info.value.trips_breaker is trips
    assert words in info.value.message


def test_vllm_load_signals_current_and_legacy_names():
    assert load_signals(kind="vllm", text=(FIXTURES / "vllm/metrics.txt").read_text()) == {
        "running": 12.0,
        "waiting": 3.0,
        "kv_usage": 0.8125,
    }
    assert load_signals(kind="vllm", text=(FIXTURES / "vllm/metrics_legacy.txt").read_text()) == {
        "running": 4.0,
        "waiting": 0.0,
        "kv_usage": 0.27,
    }


# --- TGI -----------------------------------------------------------------------------------------------------------
def _tgi_routes() -> dict:
    return {
        ("POST", "/chat_tokenize"): Route.file("tgi/chat_tokenize.json"),
        ("POST", "/generate_stream"): Route.file("tgi/generate_stream_adapter.sse"),
        ("POST", "/v1/chat/completions"): Route.file("tgi/chat_stream.sse"),
    }


async def test_tgi_adapter_goes_through_generate_stream_with_adapter_id_and_the_servers_template():
    with fixture_server(_tgi_routes()) as srv:
        request = ChatRequest(
            messages=MESSAGES,
            model="llama-3.1-8b",
            adapter="support",
            max_tokens=64,
            temperature=0,
            seed=3,
            stop=["\n\n"],
        )
        events = await _collect(EngineClient(_target(srv.url, "tgi")), request, adapter_ref="support-v2")
    tokens, usage, finish = _split(events)
    assert "".join(tokens) == "Hello! How can I help?"  # the special <|eot_id|> token is not relayed
    assert [(u.prompt_tokens, u.completion_tokens, u.estimated) for u in usage] == [(11, 8, False)]
    assert [f.reason for f in finish] == ["stop"]
    tokenize, generate = srv.requests
    assert tokenize.path == "/chat_tokenize" and tokenize.json["messages"] == MESSAGES
    assert generate.path == "/generate_stream"
    assert generate.json["inputs"].startswith("<|begin_of_text|><|start_header_id|>user")
    params = generate.json["parameters"]
    assert params["adapter_id"] == "support-v2"
    assert params["max_new_tokens"] == 64 and params["seed"] == 3 and params["stop"] == ["\n\n"]
    assert params["details"] is True
    assert "temperature" not in params and "do_sample" not in params  # TGI rejects temperature 0: greedy instead


async def test_tgi_sampling_parameters_when_temperature_is_positive():
    with fixture_server(_tgi_routes()) as srv:
        request = ChatRequest(messages=MESSAGES, model="m", adapter="a", temperature=0.6)
        await _collect(EngineClient(_target(srv.url, "tgi")), request, adapter_ref="a")
    params = srv.bodies("/generate_stream")[0]["parameters"]
    assert params["do_sample"] is True and params["temperature"] == 0.6


async def test_tgi_base_model_uses_the_openai_route_with_model_tgi():
    with fixture_server(_tgi_routes()) as srv:
        events = await _collect(EngineClient(_target(srv.url, "tgi")), ChatRequest(messages=MESSAGES, model="m"))
    tokens, usage, _ = _split(events)
    assert tokens == ["Hi", " there", "."]
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (11, 4)
    assert srv.bodies("/v1/chat/completions")[0]["model"] == "tgi"


async def test_tgi_generation_error_event_after_a_token():
    routes = _tgi_routes() | {("POST", "/generate_stream"): Route.file("tgi/generate_stream_error.sse")}
    with fixture_server(routes) as srv:
        client = EngineClient(_target(srv.url, "tgi"))
        seen = []
        with pytest.raises(EngineError) as info:
            async for event in client.stream_chat(ChatRequest(messages=MESSAGES, model="m"), adapter_ref="a"):
                seen.append(event)
        await client.aclose()
    assert [e.text for e in seen] == ["The"]
    assert "CUDA out of memory" in info.value.message and info.value.retryable


@pytest.mark.parametrize(
    ("fixture", "status", "retryable", "trips"),
    [("tgi/error_validation.json", 422, False, False), ("tgi/error_overloaded.json", 429, True, False)],
    ids=["validation", "overloaded"],
)
async def test_tgi_http_errors_are_classified(fixture, status, retryable, trips):
    routes = _tgi_routes() | {("POST", "/generate_stream"): Route.file(fixture, status=status)}
    with fixture_server(routes) as srv, pytest.raises(EngineError) as info:
        await _collect(EngineClient(_target(srv.url, "tgi")), ChatRequest(messages=MESSAGES, model="m"), "a")
    assert (info.value.status, info.value.retryable, info.value.trips_breaker) == (status, retryable, trips)


def test_tgi_load_signals():
    assert load_signals(kind="tgi", text=(FIXTURES / "tgi/metrics.txt").read_text()) == {
        "running": 16.0,
        "waiting": 7.0,
    }


# --- llama.cpp captures and the no-usage fallback ------------------------------------------------------------------
def test_llamacpp_captured_metrics():
    signals = load_signals(kind="llamacpp", text=(FIXTURES / "llamacpp/metrics.txt").read_text())
    assert signals == {"running": 0.0, "waiting": 0.0}


async def test_llamacpp_captured_stream_and_lora_field():
    with fixture_server({("POST", "/v1/chat/completions"): Route.file("llamacpp/chat_stream.sse")}) as srv:
        target = _target(srv.url, "llamacpp", model_id="smollm2-135m-instruct")
        events = await _collect(EngineClient(target), ChatRequest(messages=MESSAGES, model="m"), adapter_ref="1")
    tokens, usage, finish = _split(events)
    assert len(tokens) == usage[0].completion_tokens == 4
    assert finish[0].reason == "length"
    assert srv.bodies("/v1/chat/completions")[0]["lora"] == [{"id": 1, "scale": 1.0}]


async def test_usage_is_counted_by_the_pool_when_the_engine_sends_none():
    body = (FIXTURES / "vllm/chat_stream_adapter.sse").read_bytes()
    body = b"\n\n".join(e for e in body.split(b"\n\n") if b'"usage"' not in e)
    with fixture_server(
        {("POST", "/v1/chat/completions"): Route(body=body, content_type="text/event-stream", sse=True)}
    ) as srv:
        request = ChatRequest(messages=[{"role": "user", "content": "x" * 400}], model="m")
        events = await _collect(EngineClient(_target(srv.url, "openai")), request)
    _, usage, _ = _split(events)
    assert (usage[0].completion_tokens, usage[0].estimated) == (5, True)
    assert usage[0].prompt_tokens == 104  # 400 characters / 4 + 4 for the message


# --- active probe against recorded vLLM endpoints ------------------------------------------------------------------
def test_probe_records_vllm_health_load_and_confirms_listed_adapters(db):
    routes = {
        ("GET", "/health"): Route(body=b""),
        ("GET", "/metrics"): Route.file("vllm/metrics.txt"),
        ("GET", "/v1/models"): Route.file("vllm/models.json"),
    }
    with fixture_server(routes) as srv:
        base = BaseModel.objects.create(name="llama-3.1-8b")
        backend = Backend.objects.create(name="vllm-a", kind="vllm", base_url=srv.url, base_model=base, breaker="open")
        listed = BackendAdapter.objects.create(backend=backend, name="sql", engine_ref="sql-lora")
        gone = BackendAdapter.objects.create(backend=backend, name="finance", engine_ref="finance-lora", confirmed=True)
        (result,) = backend_probe_all()
    backend.refresh_from_db()
    listed.refresh_from_db()
    gone.refresh_from_db()
    assert result.health == HealthState.UP
    assert backend.health == "up" and backend.last_probe_at is not None
    assert backend.load == {"running": 12.0, "waiting": 3.0, "kv_usage": 0.8125}
    assert backend.breaker == "closed"  # a probe that finds the engine up closes the breaker
    assert listed.confirmed is True and listed.confirmed_at is not None
    assert gone.confirmed is False


def test_probe_marks_an_unreachable_backend_down(db):
    from tests.engine import free_port

    base = BaseModel.objects.create(name="m")
    backend = Backend.objects.create(
        name="gone", kind="vllm", base_url=f"http://127.0.0.1:{free_port()}", base_model=base
    )
    (result,) = backend_probe_all(timeout=1)
    backend.refresh_from_db()
    assert result.health == backend.health == "down"
    assert "unreachable" in backend.health_detail
