"""The catalog, department assignments and defaults; what the chat's adapter picker gets."""

from __future__ import annotations

import pytest

from adapters.models import Adapter, AdapterAssignment
from adapters.selectors import (
    adapter_catalog,
    adapter_default_for_tenant,
    adapter_get_for_tenant,
    adapter_list_for_tenant,
)
from adapters.services import (
    adapter_assign,
    adapter_create,
    adapter_delete,
    adapter_set_default,
    adapter_unassign,
    adapter_update,
)
from core.errors import Conflict, InvalidInput, NotFound
from inference_pool.models import Backend, BackendAdapter, BaseModel
from tenants.models import AuditEvent


@pytest.fixture
def base(db):
    return BaseModel.objects.create(name="smollm2-135m-instruct")


def make(base, name, *, owner=None, fmt="peft", source=None, actor=None):
    return adapter_create(
        actor=actor,
        name=name,
        base_model=base,
        format=fmt,
        source=source or (f"/adapters/{name}.gguf" if fmt == "gguf" else f"/adapters/{name}"),
        rank=8,
        owner_tenant=owner,
    )


def test_shared_adapters_reach_a_department_only_when_assigned(world, base):
    shared = make(base, "legal", actor=world.staff)
    assert list(adapter_list_for_tenant(tenant=world.tenant)) == []
    adapter_assign(adapter=shared, tenant=world.tenant, actor=world.staff)
    assert [a.name for a in adapter_list_for_tenant(tenant=world.tenant)] == ["legal"]
    assert list(adapter_list_for_tenant(tenant=world.other_tenant)) == []
    with pytest.raises(NotFound):
        adapter_get_for_tenant(tenant=world.other_tenant, name="legal")
    assert adapter_get_for_tenant(tenant=world.tenant, name="legal") == shared
    adapter_unassign(adapter=shared, tenant=world.tenant, actor=world.staff)
    assert list(adapter_list_for_tenant(tenant=world.tenant)) == []
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["adapter.create", "adapter.assign", "adapter.unassign"]


def test_owned_adapters_are_private_to_their_department(world, base):
    owned = make(base, "alpha-tone", owner=world.tenant, actor=world.admin)
    assert [a.name for a in adapter_list_for_tenant(tenant=world.tenant)] == ["alpha-tone"]  # assigned at once
    with pytest.raises(Conflict):
        adapter_assign(adapter=owned, tenant=world.other_tenant, actor=world.staff)
    assert list(adapter_catalog(tenant=world.other_tenant)) == []
    assert list(adapter_catalog(tenant=world.tenant)) == [owned]
    assert owned in adapter_catalog(tenant=None)


def test_one_default_per_department(world, base):
    a, b = make(base, "a"), make(base, "b")
    for adapter in (a, b):
        adapter_assign(adapter=adapter, tenant=world.tenant, actor=world.staff)
    adapter_set_default(tenant=world.tenant, adapter_id=a.pk, actor=world.admin)
    adapter_set_default(tenant=world.tenant, adapter_id=b.pk, actor=world.admin)
    assert adapter_default_for_tenant(tenant=world.tenant) == b
    assert [(x.name, x.is_default) for x in adapter_list_for_tenant(tenant=world.tenant)] == [
        ("b", True),
        ("a", False),
    ]
    assert AdapterAssignment.objects.for_tenant(world.tenant).filter(is_default=True).count() == 1
    adapter_set_default(tenant=world.tenant, adapter_id=None, actor=world.admin)
    assert adapter_default_for_tenant(tenant=world.tenant) is None
    with pytest.raises(NotFound):  # only an assigned adapter can be the default
        adapter_set_default(tenant=world.other_tenant, adapter_id=a.pk, actor=world.outsider)
    assert AuditEvent.objects.filter(action="adapter.default").count() == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "Adapter name"),
        ({"name": "x", "format": "gguf", "source": "/adapters/x.bin"}, ".gguf"),
        ({"name": "x", "source": "  "}, "source"),
        ({"name": "x", "source": "/a\n/b"}, "one line"),
        ({"name": "x", "rank": 0}, "rank"),
        ({"name": "x", "format": "onnx"}, "PEFT or GGUF"),
    ],
    ids=["name", "gguf-extension", "empty-source", "multiline-source", "rank", "format"],
)
def test_invalid_adapters_are_refused_with_a_reason(base, kwargs, message):
    args = {"actor": None, "base_model": base, "format": "peft", "source": "/adapters/x", "rank": 8, **kwargs}
    with pytest.raises(InvalidInput, match=message):
        adapter_create(**args)
    assert not Adapter.objects.exists()


def test_duplicate_names_conflict(base):
    make(base, "legal")
    with pytest.raises(Conflict):
        make(base, "legal")


def test_placed_adapters_cannot_be_deleted_or_rebased(world, base):
    adapter = make(base, "legal")
    backend = Backend.objects.create(name="b1", kind="vllm", base_url="http://127.0.0.1:1", base_model=base)
    BackendAdapter.objects.create(backend=backend, name="legal")
    other = BaseModel.objects.create(name="other-model")
    with pytest.raises(Conflict):
        adapter_delete(adapter=adapter, actor=world.staff)
    with pytest.raises(Conflict):
        adapter_update(adapter=adapter, actor=world.staff, base_model=other)
    adapter_update(adapter=adapter, actor=world.staff, description="now documented", rank=16)
    adapter.refresh_from_db()
    assert (adapter.description, adapter.rank, adapter.base_model) == ("now documented", 16, base)
    event = AuditEvent.objects.get(action="adapter.update")
    assert event.details == {"fields": ["description", "rank"]}
