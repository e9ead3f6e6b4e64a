"""Objects every console test needs besides the ``world``: a base model, backends of each engine kind (at a closed
port: no engine is called successfully here), adapters (shared and department-owned), a price and an API key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from adapters.models import Adapter, AdapterAssignment
from inference_pool.models import Backend, BackendAdapter, BaseModel, EngineKind, HealthState
from tenants.models import ApiKey, ModelPrice
from tenants.services import api_key_create
from tests.engine import free_port


@dataclass
class ConsoleWorld:
    world: Any
    base_model: BaseModel
    llamacpp: Backend
    tgi: Backend
    shared: Adapter  # shared, assigned to alpha, placed (pending) on the llama.cpp backend
    owned: Adapter  # owned by alpha
    key: ApiKey
    price: ModelPrice
    loner: Any  # a user in no department


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused at once


@pytest.fixture
def cw(world: Any, django_user_model: Any) -> ConsoleWorld:
    base = BaseModel.objects.create(name="smollm2-135m-instruct", params_b=0.135, layers=30, kv_heads=3, head_dim=64)
    llamacpp = Backend.objects.create(name="cpu-1", kind=EngineKind.LLAMACPP, base_url=closed_url(), base_model=base)
    tgi = Backend.objects.create(
        name="tgi-1", kind=EngineKind.TGI, base_url=closed_url(), base_model=base, health=HealthState.UP
    )
    shared = Adapter.objects.create(
        name="legal", base_model=base, format="gguf", source="/models/legal.gguf", rank=8, description="legal"
    )
    AdapterAssignment.objects.create(tenant=world.tenant, adapter=shared)
    BackendAdapter.objects.create(backend=llamacpp, name="legal", source_path="/models/legal.gguf")
    owned = Adapter.objects.create(
        name="alpha-tone",
        base_model=base,
        format="peft",
        source="/models/alpha-tone",
        rank=4,
        owner_tenant=world.tenant,
    )
    AdapterAssignment.objects.create(tenant=world.tenant, adapter=owned)
    BackendAdapter.objects.create(backend=tgi, name="tgi-pending", engine_ref="tgi-pending")
    key, _ = api_key_create(tenant=world.tenant, name="integration", created_by=world.admin)
    price = ModelPrice.objects.create(model="smollm2-135m-instruct", input_per_1k="0.001", output_per_1k="0.002")
    loner = django_user_model.objects.create_user(username="loner", email="loner@example.com", password="x")
    return ConsoleWorld(world, base, llamacpp, tgi, shared, owned, key, price, loner)
