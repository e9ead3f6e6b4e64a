"""The adapter lifecycle against a real llama-server started with two LoRA GGUF adapters: what it lists is
discovered, placing what it has confirms at once, placing what it lacks needs a restart with the new launch spec,
and the router only ever sends adapter requests to confirmed placements."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from django.urls import reverse

from adapters.models import Adapter
from adapters.services import adapter_load, adapter_sync_backend, adapter_unload
from adapters.tests.lora_files import lora_gguf_write
from console.launch import launch_specs_for
from core.errors import NotFound
from inference_pool.health import backend_probe_all
from inference_pool.models import Backend, BackendAdapter, BaseModel, EngineKind, HealthState
from inference_pool.router import Router, _load_snapshot
from inference_pool.services import pool_stream
from inference_pool.types import ChatRequest, DoneEvent
from tests.engine import make_engine

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]
MODEL = settings.LLAMA_MODEL_NAME


def candidates(adapter: str) -> list[str]:
    return [
        t.name for t in Router().candidates(_load_snapshot(), ChatRequest(messages=[], model=MODEL, adapter=adapter))
    ]


async def ask(adapter: str) -> DoneEvent:
    request = ChatRequest(
        messages=[{"role": "user", "content": "Say hi."}], model=MODEL, adapter=adapter, max_tokens=4, temperature=0
    )
    done = None
    async for event in pool_stream(request=request):
        if isinstance(event, DoneEvent):
            done = event
    assert done is not None
    return done


def test_llamacpp_adapter_lifecycle(tmp_path, django_user_model, client):
    staff = django_user_model.objects.create_user(username="ops", password="x", is_staff=True)
    files = {name: tmp_path / f"{name}.gguf" for name in ("alpha-a", "beta-b", "gamma-c")}
    lora_gguf_write(base_model=settings.LLAMA_MODEL_PATH, outputs={path: i for i, path in enumerate(files.values())})
    base = BaseModel.objects.create(name=MODEL, params_b=0.135)
    adapters = {
        name: Adapter.objects.create(name=name, base_model=base, format="gguf", source=str(path), rank=4)
        for name, path in files.items()
    }
    engine = make_engine(slots=1, context=1024, loras=[str(files["alpha-a"]), str(files["beta-b"])], name="lora-a-b")
    engine.start(timeout=120)
    try:
        backend = Backend.objects.create(
            name="cpu-lora",
            kind=EngineKind.LLAMACPP,
            base_url=engine.spec.base_url,
            base_model=base,
            served_name=MODEL,
            max_concurrent=1,
            health=HealthState.UP,
        )
        backend.refresh_from_db()  # as the console has it: plain values, not enum members
        # 1. discovery: both adapters the engine lists are found and matched to the catalog; nothing is routed yet
        report = adapter_sync_backend(backend=backend, actor=staff)
        assert report.ok, report.message
        assert [(d.ref, d.path, d.adapter, d.registered) for d in report.discovered] == [
            ("0", str(files["alpha-a"]), adapters["alpha-a"], False),
            ("1", str(files["beta-b"]), adapters["beta-b"], False),
        ]
        assert not BackendAdapter.objects.exists()
        client.force_login(staff)
        page = client.post(reverse("console:adapter_sync"), HTTP_HX_REQUEST="true").content.decode()
        assert page.count("loaded, not placed") == 2

        # 2. placing an adapter the engine already has: confirmed at once, with the engine's id
        outcome = adapter_load(adapter=adapters["alpha-a"], backend=backend, actor=staff)
        assert (outcome.confirmed, outcome.restart_needed) == (True, False)
        assert BackendAdapter.objects.get(name="alpha-a").engine_ref == "0"
        assert candidates("alpha-a") == ["cpu-lora"]

        # 3. placing one it lacks: pending, the new launch spec has it, a restart is needed
        response = client.post(
            reverse("console:adapter_load", kwargs={"adapter_id": adapters["gamma-c"].pk}),
            {"backend_id": backend.pk},
            HTTP_HX_REQUEST="true",
        )
        body = response.content.decode()
        assert response.status_code == 200 and "Restart needed" in body
        assert str(files["gamma-c"]) in body and str(files["alpha-a"]) in body  # the whole new spec
        assert "--lora-init-without-apply" in body
        assert not BackendAdapter.objects.get(name="gamma-c").confirmed
        assert candidates("gamma-c") == []  # registered, not confirmed: never routed
        with pytest.raises(NotFound):
            candidates("beta-b")  # loaded on the engine but never placed: not served

        # 4. the pool's health probe reads the same /lora-adapters and agrees
        backend_probe_all(backend_ids=[backend.pk])
        states = dict(BackendAdapter.objects.values_list("name", "confirmed"))
        assert states == {"alpha-a": True, "gamma-c": False}

        # 5. a real request with the confirmed adapter goes to this backend and comes back
        done = asyncio.run(ask("alpha-a"))
        assert (done.telemetry.backend, done.telemetry.adapter, done.telemetry.outcome) == ("cpu-lora", "alpha-a", "ok")
        assert done.telemetry.tokens_out > 0

        # 6. taking alpha-a off: routing stops at once; the engine keeps it until restarted with the new spec
        outcome = adapter_unload(adapter=adapters["alpha-a"], backend=backend, actor=staff)
        assert outcome.restart_needed
        with pytest.raises(NotFound):
            candidates("alpha-a")
        spec = next(s.text for s in launch_specs_for(backend) if s.title == "Command line")
        assert str(files["gamma-c"]) in spec and str(files["alpha-a"]) not in spec
        report = adapter_sync_backend(backend=backend, actor=staff)
        assert [(d.adapter, d.registered) for d in report.discovered] == [
            (adapters["alpha-a"], False),
            (adapters["beta-b"], False),
        ]
    finally:
        engine.stop()

    # 7. the restart with the new spec: llama.cpp numbers adapters in launch order, the ids are learnt again
    engine = make_engine(slots=1, context=1024, loras=[str(files["gamma-c"])], name="lora-c")
    engine.start(timeout=120)
    try:
        Backend.objects.filter(pk=backend.pk).update(base_url=engine.spec.base_url)
        backend.refresh_from_db()
        report = adapter_sync_backend(backend=backend, actor=staff)
        assert report.confirmed == ["gamma-c"]
        row = BackendAdapter.objects.get(name="gamma-c")
        assert (row.confirmed, row.engine_ref) == (True, "0")
        assert candidates("gamma-c") == ["cpu-lora"]
    finally:
        engine.stop()
