"""The pool's public face: the reads and writes other apps use instead of its models."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from core.errors import Conflict, InvalidInput, NotFound
from inference_pool import selectors, services
from inference_pool.choices import EngineKind
from inference_pool.models import Backend
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def _backend(name: str, *, model: str = "m", context: int = 4096, enabled: bool = True) -> Backend:
    backend = services.backend_register(
        name=name, kind=EngineKind.VLLM, base_url=f"http://{name}:8000", model=model, context_length=context
    )
    if not enabled:
        Backend.objects.filter(pk=backend.pk).update(enabled=False)
    return backend


def test_placement_is_idempotent_and_observed_then_removed() -> None:
    backend = _backend("gpu-1")
    row, created = services.backend_adapter_place(backend=backend, name="legal", source_path="/a", engine_ref="legal")
    again, created_again = services.backend_adapter_place(
        backend=backend, name="legal", source_path="/b", engine_ref="other"
    )
    assert (created, created_again, again.pk, again.source_path) == (True, False, row.pk, "/a")
    assert selectors.backend_adapter_counts(names=["legal", "none"]) == {"legal": (0, 1)}

    services.backend_adapter_observe(placement=row, confirmed=True, engine_ref="7", source_path="/real")
    stored = selectors.backend_adapter_get(backend=backend, name="legal")
    assert stored is not None
    assert (stored.confirmed, stored.engine_ref, stored.source_path) == (True, "7", "/real")
    assert stored.confirmed_at is not None
    assert selectors.backend_adapter_counts(names=["legal"]) == {"legal": (1, 0)}

    services.backend_adapter_remove(placement=stored)
    assert selectors.backend_adapter_get(backend=backend, name="legal") is None


def test_confirm_pending_confirms_only_the_unconfirmed_rows_of_that_backend() -> None:
    one, two = _backend("gpu-1"), _backend("gpu-2")
    for name in ("a", "b"):
        services.backend_adapter_place(backend=one, name=name, source_path="", engine_ref=name)
    services.backend_adapter_place(backend=two, name="a", source_path="", engine_ref="a")
    assert sorted(services.backend_adapter_confirm_pending(backend=one)) == ["a", "b"]
    assert services.backend_adapter_confirm_pending(backend=one) == []
    assert [r.confirmed for r in selectors.backend_adapter_list(backend=two)] == [False]


def test_context_length_is_the_smallest_enabled_window() -> None:
    _backend("big", context=8192)
    _backend("small", context=2048)
    _backend("off", context=512, enabled=False)
    assert selectors.model_context_length(model="m") == 2048
    assert selectors.model_context_length(model="unknown") is None
    assert selectors.base_model_exists(name="m") and not selectors.base_model_exists(name="unknown")
    assert set(selectors.base_model_created_at()) == {"m"}


def test_backend_lookups_and_filters() -> None:
    vllm = _backend("gpu-1")
    other = _backend("gpu-2", model="other")
    assert selectors.backend_get(backend_id=vllm.pk) == vllm
    with pytest.raises(NotFound):
        selectors.backend_get(backend_id=other.pk + 1000)
    assert list(selectors.backend_list(base_model_id=vllm.base_model_id)) == [vllm]
    assert list(selectors.backend_list(kinds=[EngineKind.TGI])) == []


def test_staff_edits_are_audited_and_refuse_bad_input() -> None:
    staff = User.objects.create_user("staff", is_staff=True)
    backend = _backend("gpu-1")
    services.backend_set_state(backend=backend, state="drain", actor=staff)
    backend.refresh_from_db()
    assert backend.draining
    services.backend_set_state(backend=backend, state="drain", actor=staff)  # no change, no second event
    assert AuditEvent.objects.filter(action="backend.drain").count() == 1
    with pytest.raises(InvalidInput):
        services.backend_set_state(backend=backend, state="explode", actor=staff)
    with pytest.raises(InvalidInput):
        services.backend_update(backend=backend, actor=staff, enabled=False)
    with pytest.raises(Conflict):
        services.backend_create(
            actor=staff, name="gpu-1", kind="vllm", base_url="http://x", base_model=backend.base_model
        )
    services.backend_adapter_place(backend=backend, name="a", source_path="", engine_ref="a")
    other = selectors.base_model_list().exclude(pk=backend.base_model_id).first() or _backend("x", model="n").base_model
    with pytest.raises(Conflict):
        services.backend_update(backend=backend, actor=staff, base_model=other)
