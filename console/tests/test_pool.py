"""The pool pages: add, edit, drain and disable a backend (the router's registry follows), the capacity planner,
launch specs, and TGI's manual confirmation after a restart."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from console.selectors import pool_overview
from inference_pool.capacity import capacity_plan
from inference_pool.models import Backend, BackendAdapter, HealthState
from inference_pool.router import _load_snapshot
from tenants.models import AuditEvent

HX = {"HTTP_HX_REQUEST": "true"}


def routable() -> list[str]:
    return sorted(t.name for t in _load_snapshot().targets)


def test_add_edit_drain_disable_enable(cw, client):
    client.force_login(cw.world.staff)
    response = client.post(
        reverse("console:backend_create"),
        {
            "name": "gpu-1",
            "kind": "vllm",
            "base_url": "http://gpu-1.internal:8000",
            "base_model": cw.base_model.pk,
            "quantization": "awq",
            "context_length": 8192,
            "max_concurrent": 32,
            "weight": 2,
            "api_key": "engine-secret",
        },
        **HX,
    )
    backend = Backend.objects.get(name="gpu-1")
    assert response.status_code == 204 and response["HX-Redirect"].endswith(f"/pool/backends/{backend.pk}/")
    assert (backend.kind, backend.quantization, backend.max_concurrent, backend.api_key) == (
        "vllm",
        "awq",
        32,
        "engine-secret",
    )
    assert "gpu-1" in routable()

    edit = {
        "kind": "vllm",
        "base_url": "http://gpu-1.internal:8001",
        "base_model": cw.base_model.pk,
        "quantization": "awq",
        "context_length": 8192,
        "max_concurrent": 16,
        "weight": 1,
        "api_key": "",  # blank keeps the stored key
    }
    assert (
        client.post(reverse("console:backend_edit", kwargs={"backend_id": backend.pk}), edit, **HX).status_code == 200
    )
    backend.refresh_from_db()
    assert (backend.base_url, backend.max_concurrent, backend.api_key) == (
        "http://gpu-1.internal:8001",
        16,
        "engine-secret",
    )
    update = AuditEvent.objects.get(action="backend.update")
    assert update.details == {"backend": "gpu-1", "fields": ["base_url", "max_concurrent", "weight"]}
    assert "engine-secret" not in str(list(AuditEvent.objects.values_list("details", flat=True)))

    state_url = reverse("console:backend_state", kwargs={"backend_id": backend.pk})
    client.post(state_url, {"state": "drain"}, **HX)
    assert "gpu-1" not in routable()
    client.post(state_url, {"state": "undrain"}, **HX)
    assert "gpu-1" in routable()
    client.post(state_url, {"state": "disable"}, **HX)
    assert "gpu-1" not in routable()
    client.post(state_url, {"state": "enable"}, **HX)
    assert "gpu-1" in routable()
    actions = list(
        AuditEvent.objects.filter(action__startswith="backend.").order_by("id").values_list("action", flat=True)
    )
    assert actions == [
        "backend.create",
        "backend.update",
        "backend.drain",
        "backend.undrain",
        "backend.disable",
        "backend.enable",
    ]
    bad = client.post(state_url, {"state": "explode"}, **HX)
    assert bad.status_code == 400


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("base_url", "not a url", "Enter a valid URL"), ("weight", "0", "above 0"), ("name", "bad name!", "slug")],
)
def test_backend_form_errors_are_explained(cw, client, field, value, message):
    client.force_login(cw.world.staff)
    data = {
        "name": "gpu-2",
        "kind": "tgi",
        "base_url": "http://gpu-2:80",
        "base_model": cw.base_model.pk,
        "quantization": "none",
        "context_length": 4096,
        "max_concurrent": 8,
        "weight": 1,
        field: value,
    }
    response = client.post(reverse("console:backend_create"), data, **HX)
    assert response.status_code == 400 and message in response.content.decode()
    assert not Backend.objects.filter(name__in=["gpu-2", "bad name!"]).exists()


def test_pool_page_shows_load_signals_and_refreshes(cw, client):
    Backend.objects.filter(pk=cw.llamacpp.pk).update(
        health=HealthState.UP, load={"running": 3.0, "waiting": 2.0, "kv_usage": 0.42}, breaker="open"
    )
    client.force_login(cw.world.staff)
    fragment = client.get(reverse("console:pool"), {"fragment": "backends"}, **HX).content.decode()
    row = fragment.split('data-backend="cpu-1"')[1].split("</tr>")[0]
    assert "3 / 2" in row and "42%" in row and ">open<" in row
    assert "<html" not in fragment  # only the table, for the 5-second refresh
    (overview_row,) = [r for r in pool_overview() if r.backend.name == "cpu-1"]
    assert (overview_row.running, overview_row.waiting, overview_row.kv_percent) == (3.0, 2.0, 42)


def test_capacity_planner(cw, client):
    client.force_login(cw.world.staff)
    common = {"layers": 80, "kv_heads": 8, "head_dim": 128, "context": 8192, "gpu_memory_gb": 80}
    response = client.get(reverse("console:planner"), {**common, "params_b": 70, "precision": "fp16"}, **HX)
    page = response.content.decode()
    assert 'data-fits="no"' in page and "140" in page
    response = client.get(reverse("console:planner"), {**common, "params_b": 70, "precision": "int4", "gpus": 2}, **HX)
    page = response.content.decode()
    plan = capacity_plan(params_b=70, precision="int4", gpus=2, **common)
    shown = re.search(r'data-testid="concurrent-sequences"><strong>(\d+)</strong>', page)
    assert 'data-fits="yes"' in page and shown and int(shown.group(1)) == plan.concurrent_sequences > 0
    bad = client.get(reverse("console:planner"), {**common, "params_b": -1, "precision": "fp16"}, **HX)
    assert bad.status_code == 400


def test_launch_specs_and_tgi_confirmation(cw, client):
    client.force_login(cw.world.staff)
    page = client.get(reverse("console:backend_detail", kwargs={"backend_id": cw.tgi.pk})).content.decode()
    assert "--lora-adapters" in page and "tgi-pending=" in page
    assert "kind: Deployment" in page and "services:" in page

    Backend.objects.filter(pk=cw.tgi.pk).update(health=HealthState.DOWN)
    url = reverse("console:backend_confirm", kwargs={"backend_id": cw.tgi.pk})
    refused = client.post(url, **HX)
    assert refused.status_code == 409 and "not healthy" in refused.content.decode()
    assert not BackendAdapter.objects.get(name="tgi-pending").confirmed
    Backend.objects.filter(pk=cw.tgi.pk).update(health=HealthState.UP)
    assert client.post(url, **HX).status_code == 200
    assert BackendAdapter.objects.get(name="tgi-pending").confirmed
    assert AuditEvent.objects.get(action="adapter.confirm_launch").details["names"] == ["tgi-pending"]
    # llama.cpp backends report their adapters themselves: no manual confirmation
    other = client.post(reverse("console:backend_confirm", kwargs={"backend_id": cw.llamacpp.pk}), **HX)
    assert other.status_code == 400


def test_in_flight_counts_come_from_the_shared_redis_leases(cw, client, settings):
    """The router's leases in Redis (shared by every process) are what the pool page shows as in flight."""
    from asgiref.sync import async_to_sync

    from inference_pool.inflight import RedisInflight

    settings.REDIS_URL = "redis://127.0.0.1:6379/11"
    backend_id = cw.llamacpp.pk

    async def lease(n: int) -> list[str]:
        inflight = RedisInflight(settings.REDIS_URL)
        try:
            await inflight.redis.delete(inflight._key(backend_id))
            return [await inflight.try_acquire(backend_id, limit=10) for _ in range(n)]
        finally:
            await inflight.aclose()

    async def clear() -> None:
        inflight = RedisInflight(settings.REDIS_URL)
        try:
            await inflight.redis.delete(inflight._key(backend_id))
        finally:
            await inflight.aclose()

    try:
        assert all(async_to_sync(lease)(3))
        (row,) = [r for r in pool_overview() if r.backend.pk == backend_id]
        assert row.inflight == 3
        client.force_login(cw.world.staff)
        fragment = client.get(reverse("console:pool"), {"fragment": "backends"}, **HX).content.decode()
        assert "3 / 8" in fragment.split('data-backend="cpu-1"')[1].split("</tr>")[0]
    finally:
        async_to_sync(clear)()
    settings.REDIS_URL = ""
    assert next(r for r in pool_overview() if r.backend.pk == backend_id).inflight is None  # unknown without Redis
