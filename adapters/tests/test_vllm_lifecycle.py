"""Run-time load and unload on vLLM, against recorded vLLM responses served by a local HTTP server (vLLM needs a GPU).
The adapter is routable only once ``/v1/models`` lists it, and stops being routable before the engine is asked to
unload it."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse

from adapters.models import Adapter
from adapters.services import adapter_load, adapter_sync_backend, adapter_unload
from core.errors import NotFound, UpstreamError
from inference_pool.health import backend_probe_all
from inference_pool.models import Backend, BackendAdapter, BaseModel, EngineKind, HealthState
from inference_pool.router import Router, _load_snapshot
from inference_pool.selectors import served_model_list
from inference_pool.tests.fixture_server import Route, fixture_server
from inference_pool.types import ChatRequest
from tenants.models import AuditEvent

FIXTURES = Path(__file__).parent / "fixtures" / "vllm"
BASE = "meta-llama/Llama-3.1-8B-Instruct"
LOAD = "/v1/load_lora_adapter"
UNLOAD = "/v1/unload_lora_adapter"


def fx(name: str, *, status: int = 200) -> Route:
    ctype = "text/plain; charset=utf-8" if name.endswith(".txt") else "application/json"
    return Route(status=status, body=(FIXTURES / name).read_bytes(), content_type=ctype)


def routes(models: str = "models_base_only.json") -> dict[tuple[str, str], Route]:
    return {
        ("GET", "/v1/models"): fx(models),
        ("GET", "/health"): Route(status=200, body=b""),
        ("GET", "/metrics"): Route(status=200, body=b"vllm:num_requests_running 0.0\n", content_type="text/plain"),
        ("POST", LOAD): fx("load_ok.txt"),
        ("POST", UNLOAD): fx("unload_ok.txt"),
    }


@pytest.fixture
def setup(db):
    base = BaseModel.objects.create(name=BASE)
    adapter = Adapter.objects.create(name="legal-peft", base_model=base, format="peft", source="/adapters/legal-peft")
    return base, adapter


def make_backend(url: str, base: BaseModel) -> Backend:
    return Backend.objects.create(
        name="gpu-1", kind=EngineKind.VLLM, base_url=url, base_model=base, served_name=BASE, health=HealthState.UP
    )


def routable_backends(adapter: str) -> list[str]:
    """What the router would choose from for a request with this adapter (its own snapshot and filter)."""
    router = Router()
    return [t.name for t in router.candidates(_load_snapshot(), ChatRequest(messages=[], model=BASE, adapter=adapter))]


def test_load_confirms_only_when_v1_models_lists_it(setup, staff_user):
    base, adapter = setup
    with fixture_server(routes("models_base_only.json")) as srv:
        backend = make_backend(srv.url, base)
        outcome = adapter_load(adapter=adapter, backend=backend, actor=staff_user)
        assert srv.bodies(LOAD) == [{"lora_name": "legal-peft", "lora_path": "/adapters/legal-peft"}]
        assert not outcome.confirmed and not outcome.restart_needed
        assert "does not list it yet" in outcome.message
        row = BackendAdapter.objects.get(backend=backend, name="legal-peft")
        assert (row.confirmed, row.engine_ref) == (False, "legal-peft")
        assert routable_backends("legal-peft") == []  # registered but unconfirmed: never routed

        srv.routes[("GET", "/v1/models")] = fx("models_with_legal.json")  # the engine now lists it
        report = adapter_sync_backend(backend=backend, actor=staff_user)
        assert report.ok and report.confirmed == ["legal-peft"]
        assert [d.adapter for d in report.discovered] == [adapter]
        assert routable_backends("legal-peft") == ["gpu-1"]


def test_load_unload_lifecycle_and_the_router(setup, staff_user):
    base, adapter = setup
    with fixture_server(routes("models_with_legal.json")) as srv:
        backend = make_backend(srv.url, base)
        outcome = adapter_load(adapter=adapter, backend=backend, actor=staff_user)
        assert outcome.confirmed and not outcome.restart_needed
        assert outcome.message == "Success: LoRA adapter 'legal-peft' added successfully."
        assert routable_backends("legal-peft") == ["gpu-1"]
        assert ("legal-peft", ["gpu-1"]) in [(s.adapter, s.backends) for s in served_model_list()]
        # the pool's own health probe reads the same /v1/models and agrees (no flapping between the two)
        backend_probe_all(backend_ids=[backend.pk])
        assert BackendAdapter.objects.get(backend=backend, name="legal-peft").confirmed

        srv.routes[("GET", "/v1/models")] = fx("models_base_only.json")
        outcome = adapter_unload(adapter=adapter, backend=backend, actor=staff_user)
        assert srv.bodies(UNLOAD) == [{"lora_name": "legal-peft"}]
        assert outcome.message == "Success: LoRA adapter 'legal-peft' removed successfully."
        assert not BackendAdapter.objects.filter(backend=backend).exists()
        with pytest.raises(NotFound):
            routable_backends("legal-peft")
    actions = list(AuditEvent.objects.filter(action__startswith="adapter.").values_list("action", flat=True))
    assert sorted(actions) == ["adapter.load", "adapter.unload"]


def test_already_loaded_counts_as_loaded(setup, staff_user):
    base, adapter = setup
    r = routes("models_with_legal.json")
    r[("POST", LOAD)] = fx("load_already_loaded.json", status=400)
    with fixture_server(r) as srv:
        backend = make_backend(srv.url, base)
        outcome = adapter_load(adapter=adapter, backend=backend, actor=staff_user)
    assert outcome.confirmed
    assert "has already been loaded" in outcome.message


def test_a_failed_unload_leaves_the_adapter_unrouted(setup, staff_user):
    """The row is un-confirmed before vLLM is asked: when the unload fails, nothing is routed there meanwhile."""
    base, adapter = setup
    r = routes("models_with_legal.json")
    r[("POST", UNLOAD)] = Route(status=500, body=b'{"error":{"message":"engine crashed","type":"InternalServerError"}}')
    with fixture_server(r) as srv:
        backend = make_backend(srv.url, base)
        assert adapter_load(adapter=adapter, backend=backend, actor=staff_user).confirmed
        with pytest.raises(UpstreamError, match="engine crashed"):
            adapter_unload(adapter=adapter, backend=backend, actor=staff_user)
        row = BackendAdapter.objects.get(backend=backend, name="legal-peft")
        assert row.confirmed is False
        assert routable_backends("legal-peft") == []
    assert AuditEvent.objects.filter(action="adapter.unload_failed").count() == 1


def test_unloading_what_vllm_no_longer_has_is_fine(setup, staff_user):
    base, adapter = setup
    r = routes("models_with_legal.json")
    r[("POST", UNLOAD)] = fx("unload_not_found.json", status=404)
    with fixture_server(r) as srv:
        backend = make_backend(srv.url, base)
        adapter_load(adapter=adapter, backend=backend, actor=staff_user)
        outcome = adapter_unload(adapter=adapter, backend=backend, actor=staff_user)
    assert "cannot be found" in outcome.message
    assert not BackendAdapter.objects.filter(backend=backend).exists()


@pytest.mark.parametrize(
    ("fixture", "status", "message"),
    [
        ("runtime_updates_disabled.json", 404, "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"),
        ("load_bad_path_legacy.json", 400, "No adapter found for /adapters/legal-peft"),
    ],
    ids=["runtime-updates-off", "bad-path-legacy-error-shape"],
)
def test_refused_loads_explain_and_leave_nothing_behind(setup, staff_user, fixture, status, message):
    base, adapter = setup
    r = routes()
    r[("POST", LOAD)] = fx(fixture, status=status)
    with fixture_server(r) as srv:
        backend = make_backend(srv.url, base)
        with pytest.raises(UpstreamError, match=message.replace(".", r"\.")):
            adapter_load(adapter=adapter, backend=backend, actor=staff_user)
    assert not BackendAdapter.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="adapter.").exists()


def test_console_load_through_the_page(setup, staff_user, client):
    base, adapter = setup
    with fixture_server(routes("models_with_legal.json")) as srv:
        backend = make_backend(srv.url, base)
        client.force_login(staff_user)
        response = client.post(
            reverse("console:adapter_load", kwargs={"adapter_id": adapter.pk}),
            {"backend_id": backend.pk},
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 200
        body = response.content.decode()
        assert "added successfully" in body and "confirmed" in body
        locations = client.get(reverse("console:adapter_locations", kwargs={"adapter_id": adapter.pk}))
        assert "/adapters/legal-peft" in locations.content.decode()
        assert "Restart needed" not in body  # vLLM loads at run time
